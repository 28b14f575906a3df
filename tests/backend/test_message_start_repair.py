"""The `message_start` the front inserts when llama-server's own Anthropic stream leaves it out
must be one the official SDK can build a message from.

The stream is real: captured from llama-server (build 0c1e570, `/v1/messages`, the scripted model
of tests/support/scripted_model.py) in tests/backend/fixtures; its own `message_start` is dropped
here, as llama-server sometimes drops it, and the front's stand-in is put first instead.
"""

from __future__ import annotations

from pathlib import Path

from anthropic.lib.streaming._messages import accumulate_event

from backend.proxy.stream_fix import message_start_event
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
