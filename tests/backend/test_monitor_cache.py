"""Prompt-cache shares folded from request records, and why a later turn missed."""

from __future__ import annotations

import itertools

from backend.events import RequestRecord
from backend.monitor.cache import CacheFolder, SlotFacts

_ids = itertools.count()


def rec(session: str | None, at: float, prompt_n: int, cache_n: int, *, backend: str = "local",
        output: int = 100, ttft: float = 200.0, tps: float = 1000.0) -> RequestRecord:
    return RequestRecord(id=f"r{next(_ids)}", started_at=at, method="POST", path="/v1/messages",
                         session_id=session, routed_backend=backend, status=200, output_tokens=output,
                         ttft_ms=ttft, backend_prompt_n=prompt_n, backend_cache_n=cache_n,
                         backend_prompt_tps=tps)


def test_two_turns_of_one_session():
    folder = CacheFolder()
    folder.add(rec("s1", 1.0, 15000, 0, ttft=3000))
    folder.add(rec("s1", 2.0, 400, 15100, ttft=150))
    report = folder.report({"local": SlotFacts(1, 65536)})
    (row,) = report.by_session
    assert row.session_id == "s1" and row.requests == 2
    assert row.prompt_tokens == 30500 and row.cached_tokens == 15100
    assert row.last_share is not None and row.last_share > 0.97
    assert row.later_share is not None and row.later_share > 0.97
    assert row.low_turns == 0 and row.reason is None
    assert row.ttft_ms == 1575 and row.last_ttft_ms == 150
    (backend,) = report.by_backend
    assert backend.key == "local" and backend.session_id is None and backend.requests == 2


def test_records_without_timings_are_ignored():
    folder = CacheFolder()
    folder.add(RequestRecord(id="x", started_at=1, method="POST", path="/v1/messages", routed_backend="local"))
    assert folder.report().by_backend == () and folder.version == 0


def test_another_session_in_between_with_one_slot_says_np_too_small():
    folder = CacheFolder()
    folder.add(rec("aaaa1111", 1.0, 15000, 0))
    folder.add(rec("bbbb2222", 2.0, 15000, 0))
    folder.add(rec("aaaa1111", 3.0, 15200, 0))  # its prompt was evicted
    row = next(r for r in folder.report({"local": SlotFacts(1, 65536)}).by_session if r.key == "aaaa1111")
    assert row.low_turns == 1
    assert row.reason and "bbbb2222" in row.reason and "-np 1" in row.reason
    assert row.fix and "-np 2" in row.fix and "-c 131072" in row.fix and "--cache-ram" in row.fix
    off = next(r for r in folder.report({"local": SlotFacts(1, 65536, cache_ram_mib=0)}).by_session
               if r.key == "aaaa1111")
    assert off.fix and "off (--cache-ram 0)" in off.fix


def test_another_session_with_enough_slots_is_a_weaker_guess():
    folder = CacheFolder()
    folder.add(rec("a", 1.0, 15000, 0))
    folder.add(rec("b", 2.0, 15000, 0))
    folder.add(rec("a", 3.0, 15200, 0))
    row = next(r for r in folder.report({"local": SlotFacts(4, 32768)}).by_session if r.key == "a")
    assert row.reason and "may have given this turn a slot" in row.reason


def test_previous_turn_filling_the_context_says_it_shifted():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 30000, 0, output=2000))
    folder.add(rec("s", 2.0, 31000, 500))
    row = folder.report({"local": SlotFacts(1, 32768)}).by_session[0]
    assert row.low_turns == 1 and row.reason and "shifted" in row.reason
    assert row.fix and "-c" in row.fix


def test_side_request_of_the_same_session_on_one_slot():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 15000, 0))
    folder.add(rec("s", 1.5, 300, 0))  # title request: a side request, not a turn
    folder.add(rec("s", 2.0, 15300, 0))
    row = folder.report({"local": SlotFacts(1, 65536)}).by_session[0]
    assert row.low_turns == 1 and row.reason and "side request" in row.reason
    assert row.fix and "-np 2" in row.fix


def test_unexplained_miss_says_it_cannot_tell():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 15000, 0))
    folder.add(rec("s", 2.0, 15300, 0))
    row = folder.report({"local": SlotFacts(1, 131072)}).by_session[0]
    assert row.reason and "not clear from here" in row.reason


def test_sessions_newest_first_and_bounded():
    folder = CacheFolder(max_sessions=3)
    for i in range(5):
        folder.add(rec(f"s{i}", float(i), 1000, 0))
    keys = [r.key for r in folder.report().by_session]
    assert keys == ["s4", "s3", "s2"]


def test_per_backend_rows():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 1000, 0, backend="a"))
    folder.add(rec("s", 2.0, 100, 1000, backend="b"))
    rows = {r.key: r for r in folder.report().by_backend}
    assert rows["a"].share == 0 and rows["b"].share is not None and rows["b"].share > 0.9


def test_a_session_moving_to_another_backend_starts_fresh_there():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 15000, 0, backend="a"))
    folder.add(rec("s", 2.0, 15300, 0, backend="b"))
    rows = {r.key: r for r in folder.report().by_backend}
    assert rows["b"].low_turns == 0


def test_client_usage_is_the_fallback_without_llama_server_timings():
    folder = CacheFolder()
    folder.add(RequestRecord(id="u1", started_at=1.0, method="POST", path="/v1/messages", session_id="s",
                             routed_backend="local", input_tokens=4793, cache_read_tokens=0))
    folder.add(RequestRecord(id="u2", started_at=2.0, method="POST", path="/v1/messages", session_id="s",
                             routed_backend="local", input_tokens=90, cache_read_tokens=4793))
    row = folder.report().by_session[0]
    assert row.requests == 2 and row.last_share is not None and row.last_share > 0.98
    folder.add(RequestRecord(id="u3", started_at=3.0, method="POST", path="/v1/messages", session_id="s",
                             routed_backend="local", input_tokens=90))  # no cache figure at all
    assert folder.report().by_session[0].requests == 2


SWA_OFF = SlotFacts(1, 8192, swa_window=512, swa_full=False)


def test_a_new_sessions_first_turn_missing_on_a_sliding_window_model_names_swa():
    # Measured with Gemma 3 270M: the second Claude Code session re-read all ~4,000 tokens (cache_n 0-1)
    folder = CacheFolder()
    folder.add(rec("aaaa1111-0000", 1.0, 4028, 0, output=11))
    folder.add(rec("bbbb2222-0000", 2.0, 4025, 1, output=10))
    rows = {r.key: r for r in folder.report({"local": SWA_OFF}).by_session}
    new = rows["bbbb2222-0000"]
    assert new.missed_first_turns == 1 and new.low_turns == 0
    assert new.first_share is not None and new.first_share < 0.01
    assert new.reason and "first turn served 0%" in new.reason and "aaaa1111" in new.reason
    assert "sliding-window attention (512-token window)" in new.reason and "without --swa-full" in new.reason
    assert new.fix and "--swa-full" in new.fix
    first = rows["aaaa1111-0000"]  # nothing came before it: nothing to reuse, nothing to explain
    assert first.first_share is None and first.missed_first_turns == 0 and first.reason is None
    (backend,) = folder.report({"local": SWA_OFF}).by_backend
    assert backend.missed_first_turns == 1 and backend.reason == new.reason


def test_with_swa_full_the_new_session_reuses_the_shared_start_and_nothing_is_said():
    # Measured: with --swa-full the second session took 1,787 of 4,026 tokens from cache
    folder = CacheFolder()
    folder.add(rec("a", 1.0, 4022, 0))
    folder.add(rec("b", 2.0, 2239, 1787))
    facts = {"local": SlotFacts(1, 8192, swa_window=512, swa_full=True)}
    row = next(r for r in folder.report(facts).by_session if r.key == "b")
    assert row.first_share is not None and 0.4 < row.first_share < 0.5
    assert row.missed_first_turns == 0 and row.reason is None


def test_a_first_turn_miss_without_a_sliding_window_is_not_blamed_on_it():
    folder = CacheFolder()
    folder.add(rec("a", 1.0, 4022, 0))
    folder.add(rec("b", 2.0, 4025, 0))  # e.g. another folder: the prompts differ from the start
    for facts in (SlotFacts(1, 8192), SlotFacts(1, 8192, swa_window=512, swa_full=True)):
        row = next(r for r in folder.report({"local": facts}).by_session if r.key == "b")
        assert row.missed_first_turns == 1 and row.reason is None


def test_a_previous_prompt_inside_the_window_lost_nothing():
    folder = CacheFolder()
    folder.add(rec("a", 1.0, 300, 0, output=10))
    folder.add(rec("b", 2.0, 4000, 0))
    row = next(r for r in folder.report({"local": SWA_OFF}).by_session if r.key == "b")
    assert row.missed_first_turns == 1 and row.reason is None


def test_unknown_swa_full_says_so_and_a_later_unexplained_miss_names_swa():
    folder = CacheFolder()
    folder.add(rec("s", 1.0, 15000, 0))
    folder.add(rec("s", 2.0, 15300, 0))  # e.g. a subagent or /compact: the prompt changed before its end
    row = folder.report({"local": SlotFacts(1, 131072, swa_window=1024, swa_full=None)}).by_session[0]
    assert row.low_turns == 1 and row.reason and "not clear" not in row.reason
    assert "unless llama-server runs with --swa-full (its flags cannot be read here)" in row.reason
    assert row.fix and "--swa-full" in row.fix
