"""Tests for the SSE meters in backend/proxy/sse.py."""

from __future__ import annotations

import json
import random
import re

import pytest

from backend.proxy.sse import (
    AnthropicStreamMeter,
    OpenAIStreamTimings,
    parse_anthropic_body,
    parse_openai_body,
    timings_fields,
)


def _event(name: str, data: dict) -> bytes:
    # LiteLLM 1.102.4 writes `event: <type>\ndata: <json.dumps>\n\n`
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _litellm_stream(texts=("Hel", "lo ", "world", "!"), delta_type="text_delta") -> bytes:
    """An Anthropic stream as LiteLLM 1.102.4 emits it: zero usage first, real counts last."""
    key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
    parts = [
        _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "qwen3-coder",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
    ]
    for text in texts:
        parts.append(
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": delta_type, key[delta_type]: text},
                },
            )
        )
    parts += [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": 1, "output_tokens": 12, "cache_read_input_tokens": 30},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(parts)


def _feed_split(meter, data: bytes, cuts: list[int]) -> None:
    """Feed data cut at the given offsets; chunk i gets now=float(i)."""
    prev = 0
    for i, cut in enumerate([*cuts, len(data)]):
        meter.feed(data[prev:cut], float(i))
        prev = cut


def _assert_litellm(meter: AnthropicStreamMeter, events: int = 9) -> None:
    assert meter.model == "qwen3-coder"
    assert meter.input_tokens == 1
    assert meter.output_tokens == 12
    assert meter.cache_read_tokens == 30
    assert meter.cache_creation_tokens is None
    assert meter.stop_reason == "end_turn"
    assert meter.error is None
    assert meter.events == events
    assert meter.saw_message_stop


def _first_delta_offset(data: bytes) -> tuple[int, int]:
    """(start, end) byte offsets of the first content_block_delta event."""
    start = data.index(b"event: content_block_delta")
    return start, data.index(b"\n\n", start) + 2


def test_litellm_stream_whole():
    meter = AnthropicStreamMeter()
    meter.feed(_litellm_stream(), 5.0)
    _assert_litellm(meter)
    assert meter.first_content_at == 5.0
    assert meter.last_event_at == 5.0
    assert meter.record_fields() == {
        "input_tokens": 1,
        "output_tokens": 12,
        "cache_read_tokens": 30,
        "cache_creation_tokens": None,
        "stop_reason": "end_turn",
        "error": None,
    }


def test_first_content_is_timed_at_first_delta_not_message_start():
    data = _litellm_stream()
    _, delta_end = _first_delta_offset(data)
    meter = AnthropicStreamMeter()
    meter.feed(data[: delta_end - 1], 1.0)  # everything but the delta's last byte
    assert meter.model == "qwen3-coder"
    assert meter.first_content_at is None
    meter.feed(data[delta_end - 1 : delta_end], 2.0)
    assert meter.first_content_at == 2.0
    meter.feed(data[delta_end:], 3.0)
    assert meter.first_content_at == 2.0
    assert meter.last_event_at == 3.0
    _assert_litellm(meter)


def test_byte_by_byte():
    data = _litellm_stream()
    meter = AnthropicStreamMeter()
    _feed_split(meter, data, list(range(1, len(data))))
    _assert_litellm(meter)
    _, delta_end = _first_delta_offset(data)
    # chunk i holds byte i-1 here; the first delta completes with its last byte
    assert meter.first_content_at == float(delta_end - 1)


@pytest.mark.parametrize("crlf", [False, True])
def test_random_splits(crlf):
    data = _litellm_stream(texts=[f"word{i} " for i in range(40)])
    if crlf:
        data = data.replace(b"\n", b"\r\n")
    rng = random.Random(1234)
    for _ in range(300):
        n = rng.randint(1, 40)
        cuts = sorted(rng.sample(range(1, len(data)), n))
        meter = AnthropicStreamMeter()
        _feed_split(meter, data, cuts)
        assert meter.model == "qwen3-coder"
        assert (meter.input_tokens, meter.output_tokens, meter.cache_read_tokens) == (1, 12, 30)
        assert meter.stop_reason == "end_turn"
        assert meter.events == 45
        assert meter.saw_message_stop
        assert meter.first_content_at is not None


def test_crlf_separators_whole_and_split_inside_separator():
    data = _litellm_stream().replace(b"\n", b"\r\n")
    meter = AnthropicStreamMeter()
    meter.feed(data, 0.0)
    _assert_litellm(meter)
    # cut between every b"\r" and b"\n": the separator itself arrives in pieces
    cuts = [i + 1 for i in range(len(data)) if data[i : i + 1] == b"\r"]
    meter = AnthropicStreamMeter()
    _feed_split(meter, data, cuts)
    _assert_litellm(meter)


def test_invalid_utf8_inside_text_deltas():
    bad = "\u00e9\u4e2d".encode()  # multi-byte sequences to cut in half
    stream = _litellm_stream(texts=["x"])
    marker = b'"text": "x"'
    # random bytes the tiny model produces, plus a UTF-8 sequence cut short
    junk = b'"text": "\xff\xfe' + bad[:1] + b" ok " + bad + b'\x80"'
    data = stream.replace(marker, junk)
    for cuts in ([], list(range(1, len(data))), [data.index(bad) + 1, data.index(bad) + 3]):
        meter = AnthropicStreamMeter()
        _feed_split(meter, data, cuts)
        _assert_litellm(meter, events=6)
        assert meter.first_content_at is not None


def test_error_event():
    data = _litellm_stream(texts=["partial"])
    cut = data.index(b"event: content_block_stop")
    data = data[:cut] + _event(
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    meter = AnthropicStreamMeter()
    _feed_split(meter, data, [7, 100, 301])
    assert meter.error == "Overloaded"
    assert not meter.saw_message_stop
    assert meter.stop_reason is None
    assert meter.input_tokens == 0  # only message_start's zeros were seen


def test_thinking_delta_first():
    data = _litellm_stream(texts=["let me think"], delta_type="thinking_delta")
    meter = AnthropicStreamMeter()
    meter.feed(data[: data.index(b"event: content_block_delta")], 1.0)
    meter.feed(data[data.index(b"event: content_block_delta") :], 2.0)
    assert meter.first_content_at == 2.0


def test_input_json_delta_counts_as_content_but_signature_does_not():
    sig = _event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "abc"},
        },
    )
    data = _litellm_stream(texts=['{"path":'], delta_type="input_json_delta")
    start, _ = _first_delta_offset(data)
    meter = AnthropicStreamMeter()
    meter.feed(data[:start] + sig, 1.0)
    assert meter.first_content_at is None
    meter.feed(data[start:], 2.0)
    assert meter.first_content_at == 2.0


def test_malformed_json_is_skipped():
    data = _litellm_stream()
    broken = b'event: message_delta\ndata: {"type": "message_delta", "usage": {"output_tokens": 99\n\n'
    weird = b"event: message_delta\ndata: [1, 2]\n\nevent: message_delta\ndata: \n\n"
    deep = b"event: message_delta\ndata: " + b"[" * 100_000 + b"\n\n"
    cut = data.index(b"event: message_delta")
    data = data[:cut] + broken + weird + deep + data[cut:]
    meter = AnthropicStreamMeter()
    meter.feed(data, 0.0)
    assert meter.output_tokens == 12
    assert meter.stop_reason == "end_turn"
    assert meter.events == 13


def test_real_anthropic_style_input_in_message_start():
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_2",
            "model": "claude-opus-4-8",
            "content": [],
            "usage": {
                "input_tokens": 25,
                "output_tokens": 1,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 2000,
            },
        },
    }
    data = (
        _event("message_start", start)
        + _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _event("ping", {"type": "ping"})
        + _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
        )
        + _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 15},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    meter = AnthropicStreamMeter()
    _feed_split(meter, data, list(range(3, len(data), 17)))
    assert meter.model == "claude-opus-4-8"
    assert meter.input_tokens == 25
    assert meter.output_tokens == 15
    assert meter.cache_creation_tokens == 100
    assert meter.cache_read_tokens == 2000
    assert meter.stop_reason == "tool_use"
    assert meter.events == 7
    assert meter.saw_message_stop


def test_data_only_events_and_comments():
    # no `event:` lines (allowed by SSE) and a keep-alive comment
    data = b": keep-alive\n\n" + re.sub(rb"event: [a-z_]+\n", b"", _litellm_stream())
    meter = AnthropicStreamMeter()
    _feed_split(meter, data, [50, 51, 400])
    _assert_litellm(meter)


def test_extra_blank_lines_between_events():
    data = _litellm_stream().replace(b"\n\n", b"\n\n\n")
    meter = AnthropicStreamMeter()
    meter.feed(data, 0.0)
    _assert_litellm(meter)


def test_empty_and_garbage_feed_never_raise():
    meter = AnthropicStreamMeter()
    meter.feed(b"", 0.0)
    meter.feed(b"\x00\xff garbage \n\n\n\n data: {\n\nevent:\n\n", 1.0)
    assert meter.error is None
    assert meter.model is None


def test_parse_anthropic_body():
    body = {
        "id": "msg_1",
        "type": "message",
        "model": "qwen3-coder",
        "content": [{"type": "text", "text": "hi \ufffd"}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 3,
            "cache_creation_input_tokens": 0,
        },
    }
    out = parse_anthropic_body(json.dumps(body).encode())
    assert out == {
        "model": "qwen3-coder",
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 3,
        "cache_creation_tokens": 0,
        "stop_reason": "max_tokens",
        "error": None,
    }
    err = parse_anthropic_body(
        b'{"type":"error","error":{"type":"invalid_request_error","message":"Prompt is too long"}}'
    )
    assert err["error"] == "Prompt is too long"
    litellm_err = parse_anthropic_body(b'{"error":{"message":"Connection error","type":"api_error","code":"500"}}')
    assert litellm_err["error"] == "Connection error"
    for junk in (b"", b"not json", b"[1]", b"\xff\xfe", b'{"usage": "x", "model": 3}'):
        out = parse_anthropic_body(junk)
        assert out["error"] is None and out["input_tokens"] is None


# ---- OpenAI (llama-server) ----------------------------------------------------

_TIMINGS = {
    "cache_n": 19185,
    "prompt_n": 24,
    "prompt_ms": 75.1,
    "prompt_per_second": 319.5,
    "predicted_n": 40,
    "predicted_ms": 100.0,
    "predicted_per_second": 400.0,
}


def _openai_stream(n=30) -> bytes:
    """A llama-server chat-completions stream: timings and usage in the last chunk."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "tiny"}
    lines = []
    for i in range(n):
        chunk = {
            **base,
            "choices": [{"index": 0, "delta": {"content": f"tok{i} \u00e9"}, "finish_reason": None}],
        }
        lines.append(chunk)
    last = {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {"completion_tokens": 40, "prompt_tokens": 19209, "total_tokens": 19249},
        "timings": _TIMINGS,
    }
    lines.append(last)
    # llama-server writes compact JSON
    out = b"".join(b"data: " + json.dumps(x, separators=(",", ":")).encode() + b"\n\n" for x in lines)
    return out + b"data: [DONE]\n\n"


def test_openai_stream_whole_and_random_splits():
    data = _openai_stream()
    meter = OpenAIStreamTimings()
    meter.feed(data)
    assert meter.timings == _TIMINGS
    assert meter.usage["prompt_tokens"] == 19209
    assert meter.finish_reason == "length"
    assert meter.error is None
    rng = random.Random(99)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 60)))
        meter = OpenAIStreamTimings()
        prev = 0
        for cut in [*cuts, len(data)]:
            meter.feed(data[prev:cut])
            prev = cut
        assert meter.timings == _TIMINGS
        assert meter.finish_reason == "length"


def test_openai_stream_crlf_error_and_junk():
    data = _openai_stream(3).replace(b"\n", b"\r\n")
    meter = OpenAIStreamTimings()
    for i in range(0, len(data), 5):
        meter.feed(data[i : i + 5])
    assert meter.timings == _TIMINGS
    meter = OpenAIStreamTimings()
    meter.feed(b'data: {"error":{"code":500,"message":"error initializing grammar sampler","type":"server_error"}}\n\n')
    meter.feed(b'data: {"timings": {broken\n\ndata: \xff"usage"\n\n')
    assert meter.error == "error initializing grammar sampler"
    assert meter.timings is None


def test_openai_keeps_last_timings():
    meter = OpenAIStreamTimings()
    meter.feed(b'data: {"choices":[],"timings":{"prompt_n":1}}\n\n')
    meter.feed(b'data: {"choices":[],"timings":{"prompt_n":2}}\n\ndata: [DONE]\n\n')
    assert meter.timings == {"prompt_n": 2}


def test_parse_openai_body():
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
        "timings": _TIMINGS,
    }
    out = parse_openai_body(json.dumps(body).encode())
    assert out == {
        "timings": _TIMINGS,
        "usage": body["usage"],
        "finish_reason": "stop",
        "error": None,
    }
    err = parse_openai_body(
        b'{"error":{"code":400,"message":"request (15317 tokens) exceeds the available context size"}}'
    )
    assert err["error"].startswith("request (15317 tokens)")
    assert parse_openai_body(b"\xff nope") == {
        "timings": None,
        "usage": None,
        "finish_reason": None,
        "error": None,
    }


def test_timings_fields():
    assert timings_fields(_TIMINGS) == {
        "backend_prompt_tps": 319.5,
        "backend_gen_tps": 400.0,
        "backend_prompt_n": 24,
        "backend_cache_n": 19185,
    }
    assert timings_fields(None) == {}
    assert timings_fields({"prompt_per_second": float("inf"), "prompt_n": 3.0, "cache_n": "x"}) == {
        "backend_prompt_n": 3
    }


# -- the one framer ------------------------------------------------------------
from backend.proxy.sse import SSEFramer  # noqa: E402


def test_framer_returns_whole_events_only_and_keeps_the_rest():
    framer = SSEFramer()
    assert framer.feed(b"event: a\ndata: 1\n\nevent: b\nda") == b"event: a\ndata: 1\n\n"
    assert framer.pending == len(b"event: b\nda")
    assert framer.feed(b"ta: 2\n") == b""
    assert framer.feed(b"\n") == b"event: b\ndata: 2\n\n"
    assert framer.pending == 0 and framer.flush() == b""


def test_framer_crlf_events_are_normalised_for_readers_but_passed_on_unchanged():
    framer = SSEFramer()
    raw = b"event: a\r\ndata: 1\r\n\r\nevent: b\r\ndata: 2\r\n\r\n"
    out = framer.feed(raw[:15]) + framer.feed(raw[15:])
    assert out == raw and framer.crlf
    assert framer.events(out) == [b"event: a\ndata: 1", b"event: b\ndata: 2"]


def test_framer_is_bounded_and_passes_an_endless_event_on():
    framer = SSEFramer(limit=1000)
    out = b"".join(framer.feed(b"x" * 300) for _ in range(5))
    assert framer.overflows == 1 and framer.pending < 1000 and len(out) > 1000


def test_framer_flush_gives_an_unterminated_last_event():
    framer = SSEFramer()
    assert framer.feed(b"data: [DONE]\n") == b""
    assert framer.flush() == b"data: [DONE]\n"


# -- assemblers ------------------------------------------------------------------
from backend.proxy.assemble import ChatCompletionAssembler, MessageAssembler  # noqa: E402


def _openai(*chunks: dict, done: bool = True) -> bytes:
    raw = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
    return raw + (b"data: [DONE]\n\n" if done else b"")


def _assemble(raw: bytes, step: int = 5) -> ChatCompletionAssembler:
    asm = ChatCompletionAssembler()
    for i in range(0, len(raw), step):
        asm.feed(raw[i:i + step])
    asm.finish()
    return asm


def _tool(index, id_=None, name=None, args=None) -> dict:
    fn = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    call = {"index": index, "function": fn}
    if id_:
        call["id"] = id_
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}


def test_assembler_interleaved_tool_calls_by_index():
    raw = _openai(_tool(0, "c0", "Read", ""), _tool(1, "c1", "Grep", ""), _tool(0, args='{"a":'),
                  _tool(1, args='{"p": "x"}'), _tool(0, args=" 1}"),
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    calls = _assemble(raw).result()["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("c0", "Read", {"a": 1}), ("c1", "Grep", {"p": "x"})]


def test_assembler_content_plus_tool_call_and_reasoning():
    raw = _openai({"choices": [{"index": 0, "delta": {"reasoning_content": "plan"}}]},
                  {"choices": [{"index": 0, "delta": {"content": "I will read it."}}]},
                  _tool(0, "c0", "Read", '{"f": "a"}'),
                  {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    asm = _assemble(raw)
    assert asm.error is None
    message = asm.result()["choices"][0]["message"]
    assert message["content"] == "I will read it." and message["reasoning_content"] == "plan"
    assert message["tool_calls"][0]["function"]["name"] == "Read"


def test_assembler_null_indexes_do_not_raise():
    raw = _openai({"choices": [{"index": None, "delta": {"content": "a"}}]},
                  {"choices": [{"index": None, "delta": {"tool_calls": [
                      {"index": None, "id": "c0", "function": {"name": "Read", "arguments": "{}"}}]}}]},
                  {"choices": [{"index": None, "delta": {"tool_calls": [
                      {"index": None, "id": "c1", "function": {"name": "Grep", "arguments": "{}"}}]}}]},
                  {"choices": [{"index": None, "delta": {}, "finish_reason": "tool_calls"}]})
    message = _assemble(raw).result()["choices"][0]["message"]
    assert message["content"] == "a" and [c["id"] for c in message["tool_calls"]] == ["c0", "c1"]


def test_assembler_broken_stream_is_an_error_not_a_partial_answer():
    raw = _openai({"choices": [{"index": 0, "delta": {"content": "half an ans"}}]}, done=False)
    asm = _assemble(raw)
    assert asm.error is not None and "ended before the answer was complete" in asm.error["message"]


def test_assembler_backend_error_event_is_kept():
    asm = _assemble(b'data: {"error": {"code": 500, "message": "error initializing grammar sampler"}}\n\n')
    assert asm.error["message"] == "error initializing grammar sampler"


def _anthropic(*events: dict) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_message_assembler_rebuilds_text_thinking_and_tool_use():
    raw = _anthropic(
        {"type": "message_start", "message": {"id": "msg_x", "model": "m", "usage": {"input_tokens": 5,
                                                                                   "cache_read_input_tokens": 40}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "look."}},
        {"type": "content_block_start", "index": 2,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"f"'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ': 1}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    )
    asm = MessageAssembler("r1", "local")
    for i in range(0, len(raw), 11):
        asm.feed(raw[i:i + 11])
    asm.finish()
    assert asm.error is None
    out = asm.result()
    assert out["id"] == "msg_x" and out["stop_reason"] == "tool_use"
    assert out["usage"] == {"input_tokens": 5, "cache_read_input_tokens": 40, "output_tokens": 9}
    assert out["content"] == [
        {"type": "thinking", "thinking": "hm", "signature": "s"},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"f": 1}},
    ]


def test_message_assembler_cut_stream_and_error_event():
    asm = MessageAssembler("r", None)
    asm.feed(_anthropic({"type": "message_start", "message": {}},
                        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}))
    asm.finish()
    assert asm.error is not None and "ended before" in asm.error
    asm = MessageAssembler("r", None)
    asm.feed(b'event: error\ndata: {"type": "error", "error": {"message": "overloaded"}}\n\n')
    asm.finish()
    assert asm.error == "overloaded"
