"""The `message_start` the front inserts when llama-server's own Anthropic stream leaves it out
must be one the official SDK can build a message from.

Its usage: the prompt's new and cached tokens, the cached part from the `/slots` entry of the slot
answering (`running_prompt_cache`); tests/e2e/test_left_out_start.py runs it against llama-server.

The stream is real: captured from llama-server (build 0c1e570, `/v1/messages`, the scripted model
of tests/support/scripted_model.py) in tests/backend/fixtures; its own `message_start` is dropped
here, as llama-server sometimes drops it, and the front's stand-in is put first instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from anthropic.lib.streaming._messages import accumulate_event

from backend.proxy.stream_fix import message_start_event
from backend.proxy.upstream import running_prompt_cache
from tests.support.anthropic_sse import parse_sse

CAPTURED = Path(__file__).parent / "fixtures" / "llama_server_messages_tool_stream.sse"


def _events(sse: str) -> list[dict]:
    return [data for _, data in parse_sse(sse.splitlines())]


def test_the_captured_stream_accumulates_as_it_came():
    snapshot = None
    for event in _events(CAPTURED.read_text()):
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert snapshot is not None and snapshot.stop_reason == "tool_use"
    assert [block.type for block in snapshot.content] == ["thinking", "tool_use", "tool_use"]


def test_the_inserted_message_start_carries_usage_the_sdk_needs():
    """Anthropic's `message_start.message.usage` is required; the SDK's accumulator writes the
    final `message_delta` usage into it and fails with AttributeError when it is missing."""
    events = _events(CAPTURED.read_text())
    assert events[0]["type"] == "message_start"
    stand_in = _events(message_start_event("abc", "scripted-qwen3.gguf").decode())
    snapshot = None
    for event in [*stand_in, *events[1:]]:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs={})
    assert snapshot is not None and snapshot.stop_reason == "tool_use"
    assert snapshot.usage.output_tokens == events[-2]["usage"]["output_tokens"]


def _slot(slot_id: int, busy: bool, cached: int, processed: int, decoded: int) -> dict:
    """One `/slots` entry as llama-server (build 0c1e570) writes it, trimmed to what is read."""
    return {"id": slot_id, "n_ctx": 8192, "speculative": False, "is_processing": busy, "id_task": 7 + slot_id,
            "n_prompt_tokens": cached + processed + decoded, "n_prompt_tokens_processed": processed,
            "n_prompt_tokens_cache": cached,
            "next_token": [{"has_next_token": busy, "has_new_line": False, "n_remain": 100, "n_decoded": decoded}]}


def test_the_cached_part_comes_from_the_busy_slot_that_read_that_prompt():
    # a slot still reading its prompt, an idle one (its counts cleared), and the one answering
    slots = [_slot(0, True, 0, 900, 0), _slot(1, False, 0, 0, 0), _slot(2, True, 1630, 1, 5)]
    assert running_prompt_cache(slots, 1631) == 1630
    assert running_prompt_cache(slots, 900) is None  # nothing decoded yet: not a stream that has begun
    assert running_prompt_cache(slots, 2000) is None  # no slot read that many: not known


def test_slots_that_disagree_tell_nothing():
    same = [_slot(0, True, 1000, 631, 3), _slot(1, True, 1000, 631, 9)]
    assert running_prompt_cache(same, 1631) == 1000
    other = [_slot(0, True, 1000, 631, 3), _slot(1, True, 1630, 1, 9)]
    assert running_prompt_cache(other, 1631) is None
    assert running_prompt_cache([{"id": 0, "is_processing": True}, "junk", None], 10) is None


def test_the_stand_in_carries_the_cached_part_when_known():
    start = _events(message_start_event("abc", "m", 1, 1630).decode())[0]
    assert start["message"]["usage"] == {"input_tokens": 1, "output_tokens": 0, "cache_read_input_tokens": 1630}
    unknown = _events(message_start_event("abc", "m", 1631).decode())[0]
    assert unknown["message"]["usage"] == {"input_tokens": 1631, "output_tokens": 0}


def test_captured_slots():
    """`/slots` as llama-server answered it (tests/backend/fixtures/monitor): while a slot generates,
    after the request (its counts cleared), while a slot still reads its prompt."""
    def captured(name: str) -> list:
        return json.loads((Path(__file__).parent / "fixtures" / "monitor" / f"{name}.json").read_text())

    assert running_prompt_cache(captured("slots_busy_generating"), 39) == 0  # all 39 read anew
    assert running_prompt_cache(captured("slots_after_request"), 24051) is None
    assert running_prompt_cache(captured("slots_busy_prompt_np2"), 2048) is None
