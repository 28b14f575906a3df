"""Parsers of llama-server's answers, on outputs captured from the real tiny llama-server."""

from __future__ import annotations

import json
from pathlib import Path

from backend.monitor.backend_status import SlotStatus
from backend.monitor.llama import (
    Answer,
    health_state,
    live_rates,
    metrics_from_samples,
    parse_model_info,
    parse_prometheus,
    parse_slots,
)

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"


def load(name: str):
    text = (FIXTURES / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


def test_props_and_models_give_every_static_field():
    info = parse_model_info(load("props_np2_metrics.json"), load("models.json"))
    assert info.model == "/tmp/mon/tiny.gguf"
    assert info.model_path == "/tmp/mon/tiny.gguf"
    assert info.build == "b1-0c1e570"
    assert info.n_ctx_slot == 32768  # -c 65536 -np 2
    assert info.n_ctx_train == 131072
    assert info.n_params == 117696
    assert info.size_bytes == 470784
    assert info.n_vocab == 277
    assert info.ftype == "all F32"
    assert info.total_slots == 2
    assert info.endpoint_slots is True and info.endpoint_metrics is True


def test_props_say_which_endpoints_are_off():
    info = parse_model_info(load("props_noslots_nometrics.json"), None)
    assert info.endpoint_slots is False and info.endpoint_metrics is False
    assert info.total_slots == 1 and info.n_ctx_slot == 8192
    assert info.n_params is None  # only /v1/models has it


def test_models_alone_or_garbage_degrade_to_none():
    info = parse_model_info(None, load("models.json"))
    assert info.n_ctx_slot == 32768 and info.build is None and info.total_slots is None
    empty = parse_model_info("not a dict", {"data": "nope"})
    assert empty.model is None and empty.n_ctx_slot is None


def test_idle_slots_keep_their_last_task_but_are_idle():
    slots = parse_slots(load("slots_after_request.json"))
    assert [s.id for s in slots] == [0, 1]
    assert not any(s.busy for s in slots)
    assert all(s.phase == "idle" and s.progress is None and s.decoded is None for s in slots)
    assert all(s.n_ctx == 32768 for s in slots)


def test_slot_processing_a_prompt_has_no_known_progress():
    slots = parse_slots(load("slots_busy_prompt_np2.json"))
    busy = [s for s in slots if s.busy]
    assert len(busy) == 1
    s = busy[0]
    assert s.phase == "prompt" and s.progress is None
    assert s.prompt_tokens == 2048 and s.prompt_processed == 0 and s.task_id == 242
    assert s.remaining == 300


def test_generating_slot_reports_decoded_tokens():
    slots = parse_slots(load("slots_busy_generating.json"))
    s = next(x for x in slots if x.busy)
    assert s.phase == "generating" and s.progress == 1.0
    assert s.decoded == 2990 and s.remaining == 10 and s.prompt_processed == 39


def test_slots_garbage_is_empty():
    assert parse_slots({"error": "x"}) == ()
    assert parse_slots([{"no": "id"}, "x", {"id": 3}]) == (SlotStatus(3, None, False),)


def test_live_rates_between_two_slot_readings():
    a = (SlotStatus(0, 4096, True, "generating", task_id=7, prompt_processed=100, decoded=10),)
    b = (SlotStatus(0, 4096, True, "generating", task_id=7, prompt_processed=100, decoded=60),)
    assert live_rates(a, b, 0.5) == (0.0, 100.0)
    other_task = (SlotStatus(0, 4096, True, "generating", task_id=8, decoded=5),)
    assert live_rates(a, other_task, 0.5) == (None, None)
    assert live_rates(a, (SlotStatus(0, 4096, False),), 0.5) == (0.0, 0.0)


def test_prometheus_text_is_parsed_with_every_metric_of_this_build():
    samples = parse_prometheus(load("metrics_after_request.txt"))
    m = metrics_from_samples(samples)
    assert m.prompt_tokens_total == 45052 and m.prompt_tokens_cached_total == 0
    assert m.tokens_predicted_total == 168
    assert m.requests_processing == 0 and m.requests_deferred == 0
    assert m.prompt_tps_avg == 1986.26 and m.gen_tps_avg == 48.7702
    assert m.n_decode_total == 189 and m.n_tokens_max == 24051
    assert m.cache_share_total == 0.0
    assert m.kv_cache_usage_ratio is None  # not in this build
    assert m.prompt_tps is None and m.gen_tps is None  # no previous reading
    assert "spec_decode_num_drafts_total" in m.raw


def test_rates_come_from_counter_deltas():
    before = parse_prometheus(load("metrics_busy.txt"))
    after = parse_prometheus(load("metrics_after_request.txt"))
    m = metrics_from_samples(after, before)
    expected = (45052 - 39) / (21.5709 - 0.00102)
    assert m.prompt_tps is not None and abs(m.prompt_tps - expected) < 1e-6
    assert m.gen_tps is not None and m.gen_tps > 0


def test_unknown_labelled_and_older_metric_names_do_not_break_anything():
    text = (
        "# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.\n"
        "# TYPE llamacpp:kv_cache_usage_ratio gauge\n"
        "llamacpp:kv_cache_usage_ratio 0.25\n"
        'llamacpp:something_new{slot="0"} 3 1700000000000\n'
        "llamacpp:requests_processing NaN\n"
        "garbage line here\n"
        "llamacpp:prompt_tokens_total not-a-number\n"
    )
    samples = parse_prometheus(text)
    assert samples['llamacpp:something_new{slot="0"}'] == 3
    m = metrics_from_samples(samples)
    assert m.kv_cache_usage_ratio == 0.25
    assert m.requests_processing is None  # NaN is missing, not a number
    assert m.prompt_tokens_total is None and m.cache_share_total is None
    assert metrics_from_samples({}).gen_tps_avg is None


def test_health_states():
    assert health_state(Answer("ok", 200, {"status": "ok"})) == ("ok", None)
    loading = Answer("error", 503, None, "Loading model")
    assert health_state(loading) == ("loading", "Loading model")
    assert health_state(Answer("unreachable", None, None, "refused"))[0] == "unreachable"
    assert health_state(Answer("error", 500, None, "boom")) == ("error", "boom")
