"""The tool-call repair: what a model wrote as JSON text becomes `tool_use` only when every rule holds.

Each rule has a near miss that must stay text exactly as the model wrote it.
The first case is what the real Qwen2.5-Coder 0.5B wrote (FACTS, measured).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from backend.proxy.sse import SSEFramer
from backend.proxy.toolrepair import (
    HOLD_LIMIT,
    StreamRepair,
    ToolCatalog,
    could_be_calls,
    find_calls,
    repair_body,
    repair_message,
)
from tests.support.anthropic_sse import assemble, parse_sse
from tests.support.scripted_model import TOOLS

CATALOG = ToolCatalog(TOOLS)
QWEN_TEXT = '```json\n{\n  "name": "Read",\n  "arguments": {\n    "file_path": "/tmp/work/secret.txt"\n  }\n}\n```'
READ = {"file_path": "/tmp/work/secret.txt"}


def names(calls: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.name, c.input) for c in calls] if calls else []


# -- what is repaired ---------------------------------------------------------------

@pytest.mark.parametrize("text", [
    QWEN_TEXT,
    json.dumps({"name": "Read", "arguments": READ}),
    "  \n" + json.dumps({"name": "Read", "parameters": READ}) + "\n ",
    json.dumps({"name": "Read", "input": READ}),
    "<tool_call>\n" + json.dumps({"name": "Read", "arguments": READ}) + "\n</tool_call>",
    "<tool_call>\n" + json.dumps({"name": "Read", "arguments": READ}),  # closing tag never written
    "```\n" + json.dumps({"name": "Read", "arguments": READ}) + "\n```",
    "<tool_call>\n```json\n" + json.dumps({"name": "Read", "arguments": READ}) + "\n```\n</tool_call>",
])
def test_one_call_in_each_accepted_wrapping_is_repaired(text: str) -> None:
    assert names(find_calls(text, CATALOG)) == [("Read", READ)]


def test_several_calls_as_a_list_as_objects_and_as_tags() -> None:
    bash = {"command": "date"}
    two = [("Read", READ), ("Bash", bash)]
    a, b = {"name": "Read", "arguments": READ}, {"name": "Bash", "arguments": bash}
    assert names(find_calls(json.dumps([a, b]), CATALOG)) == two
    assert names(find_calls(json.dumps(a) + "\n" + json.dumps(b), CATALOG)) == two
    assert names(find_calls(f"<tool_call>{json.dumps(a)}</tool_call>\n<tool_call>{json.dumps(b)}</tool_call>",
                            CATALOG)) == two
    assert names(find_calls(f"```json\n{json.dumps(a)}\n```\n```json\n{json.dumps(b)}\n```", CATALOG)) == two


# -- near misses: each rule, broken once -------------------------------------------

@pytest.mark.parametrize("text,why", [
    ("I will read it:\n" + QWEN_TEXT, "prose before the call"),
    (QWEN_TEXT + "\nThis reads the file.", "prose after the call"),
    (QWEN_TEXT.replace('"Read"', '"git"'), "a tool the request did not offer"),
    (QWEN_TEXT.replace('"Read"', '"read"'), "a name that differs in case"),
    (json.dumps({"name": "Read", "arguments": {"path": "/tmp/x"}}), "a required argument missing, another added"),
    (json.dumps({"name": "Read", "arguments": {**READ, "colour": "red"}}), "an argument the schema forbids"),
    (json.dumps({"name": "Read", "arguments": {"file_path": 7}}), "an argument of the wrong type"),
    (json.dumps({"name": "Read", "arguments": json.dumps(READ)}), "arguments as a JSON string"),
    (json.dumps({"name": "Read", "arguments": READ, "id": "x"}), "a stray key beside the call"),
    (json.dumps({"name": "Read", "arguments": READ, "input": READ}), "two argument keys"),
    (json.dumps({"function": "Read", "arguments": READ}), "no name"),
    (json.dumps([{"name": "Read", "arguments": READ}, {"name": "git", "arguments": {}}]), "one bad call of two"),
    ('```python\n{"name": "Read", "arguments": {"file_path": "/x"}}\n```', "a fence of another language"),
    ('{"name": "Read", "arguments": {"file_path": "/x"}', "JSON cut short"),
    ("{}", "an empty object"),
    ("[]", "an empty list"),
    ("   ", "whitespace only"),
])
def test_near_misses_stay_text(text: str, why: str) -> None:
    assert find_calls(text, CATALOG) is None, why


def test_no_tools_offered_means_no_repair() -> None:
    assert find_calls(QWEN_TEXT, ToolCatalog(None)) is None
    assert find_calls(QWEN_TEXT, ToolCatalog([])) is None
    # a server tool (no input_schema) is not a client tool to call
    assert find_calls(QWEN_TEXT.replace("Read", "web_search"), ToolCatalog([{"type": "web_search_20250305",
                                                                          "name": "web_search"}])) is None


def test_a_schema_that_is_itself_invalid_repairs_nothing() -> None:
    catalog = ToolCatalog([{"name": "Read", "input_schema": {"type": "no-such-type"}}])
    assert find_calls(QWEN_TEXT, catalog) is None


def test_could_be_calls_decides_as_early_as_the_text_allows() -> None:
    assert could_be_calls("  \n") is None
    for head in ("{", "[", "`", "``", "```json", " <", "<tool", "<tool_call>{"):
        assert could_be_calls(head) is True, head
    for head in ("I", "Sure", "<div>", "`code`", "``x", "# Title"):
        assert could_be_calls(head) is False, head


# -- whole messages ----------------------------------------------------------------

def message(*content: dict[str, Any], stop: str | None = "end_turn") -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": list(content),
            "stop_reason": stop, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 9}}


def test_a_message_is_repaired_and_its_thinking_kept() -> None:
    thinking = {"type": "thinking", "thinking": "I should read it.", "signature": ""}
    msg = message(thinking, {"type": "text", "text": QWEN_TEXT})
    repair = repair_message(msg, CATALOG)
    assert repair is not None and repair.text == QWEN_TEXT
    assert msg["stop_reason"] == "tool_use"
    assert msg["content"][0] == thinking
    block = msg["content"][1]
    assert block["type"] == "tool_use" and block["name"] == "Read" and block["input"] == READ
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{24}", block["id"])
    assert msg["usage"] == {"input_tokens": 5, "output_tokens": 9}


@pytest.mark.parametrize("msg,why", [
    (message({"type": "text", "text": QWEN_TEXT}, stop="max_tokens"), "cut at max_tokens"),
    (message({"type": "text", "text": QWEN_TEXT},
             {"type": "tool_use", "id": "toolu_x", "name": "Read", "input": READ}), "a real call follows"),
    (message({"type": "text", "text": QWEN_TEXT}, {"type": "thinking", "thinking": "t"}), "thinking after text"),
    (message({"type": "text", "text": "Sure: " + QWEN_TEXT}), "prose"),
])
def test_messages_that_stay_as_they_are(msg: dict[str, Any], why: str) -> None:
    before = json.dumps(msg)
    assert repair_message(msg, CATALOG) is None, why
    assert json.dumps(msg) == before


def test_a_body_is_re_encoded_only_when_repaired() -> None:
    prose = json.dumps(message({"type": "text", "text": "Hello"})).encode()
    assert repair_body(prose, CATALOG) == (prose, None)
    body, repair = repair_body(json.dumps(message({"type": "text", "text": QWEN_TEXT})).encode(), CATALOG)
    assert repair is not None and json.loads(body)["content"][0]["name"] == "Read"


# -- streams -----------------------------------------------------------------------

def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def stream_of(text_pieces: list[str], stop: str = "end_turn", thinking: str | None = None) -> list[bytes]:
    events = [sse("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 0}}})]
    index = 0
    if thinking is not None:
        events += [sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "thinking", "thinking": ""}}),
                   sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "thinking_delta", "thinking": thinking}}),
                   sse("content_block_stop", {"type": "content_block_stop", "index": 0})]
        index = 1
    events.append(sse("content_block_start", {"type": "content_block_start", "index": index,
                                              "content_block": {"type": "text", "text": ""}}))
    events.append(sse("ping", {"type": "ping"}))
    for piece in text_pieces:
        events.append(sse("content_block_delta", {"type": "content_block_delta", "index": index,
                                                  "delta": {"type": "text_delta", "text": piece}}))
    events += [sse("content_block_stop", {"type": "content_block_stop", "index": index}),
               sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": 21}}),
               sse("message_stop", {"type": "message_stop"})]
    return events


def run(repair: StreamRepair, events: list[bytes], crlf: bool = False) -> tuple[bytes, list[int]]:
    """Feed events one write at a time (through a framer, as the relay does); the bytes out and,
    per event fed, how many bytes came out right then."""
    framer, out, sizes = SSEFramer(), b"", []
    for event in events:
        data = framer.feed(event.replace(b"\n", b"\r\n") if crlf else event)
        sent = repair.feed(data)
        sizes.append(len(sent))
        out += sent
    return out + repair.finish(), sizes


def pieces(text: str, n: int = 5) -> list[str]:
    return [text[i:i + n] for i in range(0, len(text), n)]


@pytest.mark.parametrize("crlf", [False, True])
def test_a_streamed_call_becomes_tool_use(crlf: bool) -> None:
    repair = StreamRepair(CATALOG)
    out, _ = run(repair, stream_of(pieces(QWEN_TEXT), thinking="Read the file."), crlf=crlf)
    if crlf:
        assert b"\r\n\r\n" in out and b"\n\n" not in out.replace(b"\r\n", b"")
        out = out.replace(b"\r\n", b"\n")
    message_ = assemble(parse_sse(out.decode().split("\n"))).message
    assert message_["stop_reason"] == "tool_use"
    assert [b["type"] for b in message_["content"]] == ["thinking", "tool_use"]
    assert message_["content"][1]["name"] == "Read" and message_["content"][1]["input"] == READ
    assert message_["usage"]["output_tokens"] == 21
    assert repair.repair is not None and repair.repair.text == QWEN_TEXT


def test_prose_streams_at_once_and_unchanged() -> None:
    events = stream_of(pieces("Hello there, this is prose and no call."))
    repair = StreamRepair(CATALOG)
    out, sizes = run(repair, events)
    assert out == b"".join(events)
    # held for at most the block's start and the ping until the first letter: then each event goes through
    assert all(size > 0 for size in sizes[4:])
    assert repair.repair is None


@pytest.mark.parametrize("text", [
    QWEN_TEXT.replace('"Read"', '"git"'),
    QWEN_TEXT + "\nThat reads it.",
    '{"name": "Read", "arguments": {"file_path": 3}}',
])
def test_a_streamed_near_miss_is_released_byte_for_byte(text: str) -> None:
    events = stream_of(pieces(text))
    repair = StreamRepair(CATALOG)
    out, _ = run(repair, events)
    assert out == b"".join(events)
    assert repair.repair is None


def test_a_stream_cut_at_max_tokens_stays_text() -> None:
    events = stream_of(pieces(QWEN_TEXT), stop="max_tokens")
    out, _ = run(StreamRepair(CATALOG), events)
    assert out == b"".join(events)


def test_a_stream_that_ends_while_held_releases_everything() -> None:
    events = stream_of(pieces(QWEN_TEXT))[:-2]  # no message_delta, no message_stop
    out, _ = run(StreamRepair(CATALOG), events)
    assert out == b"".join(events)


def test_the_hold_is_bounded() -> None:
    huge = '{"name": "Read", "arguments": {"file_path": "' + "x" * (HOLD_LIMIT + 10) + '"}}'
    events = stream_of(pieces(huge, 4096))
    repair = StreamRepair(CATALOG)
    out, sizes = run(repair, events)
    assert out == b"".join(events)
    assert sum(sizes[:-2]) > HOLD_LIMIT  # released before the end, not at message_delta


def test_without_tools_nothing_is_looked_at() -> None:
    events = stream_of(pieces(QWEN_TEXT))
    out, sizes = run(StreamRepair(ToolCatalog(None)), events)
    assert out == b"".join(events) and all(sizes)
