"""Read an Anthropic Messages event stream by hand, checking its grammar on the way.

The official SDK forgives a lot (it never checks that a block was started
before its deltas, nor that blocks are stopped); this reader is strict, so a
test that uses both sees what a less forgiving client (Claude Code) would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class StreamGrammarError(AssertionError):
    """The stream broke the Messages event order (what, and at which event)."""


@dataclass
class AnthropicStream:
    """The events of one stream (name, data) and the message they add up to."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    message: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]


def parse_sse(lines: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """Split SSE text lines into (event name, decoded data) pairs."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "", []
    for line in [*lines, ""]:
        if not line:
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    return events


def assemble(events: list[tuple[str, dict[str, Any]]]) -> AnthropicStream:
    """Check the event order and build the message; StreamGrammarError on the first fault.

    Rules (Anthropic's): `message_start` first; each block's deltas come after its
    `content_block_start` and before its `content_block_stop`; block indexes are
    0, 1, 2, ... in start order; `message_delta` after every block is stopped;
    `message_stop` last. `error` events fail the stream. The event name must
    match the data's `type`. Blocks left open while another starts are allowed
    (llama-server does that) and reported in `interleaved`.
    """
    out = AnthropicStream(events=events)
    if not events or events[0][0] != "message_start":
        raise StreamGrammarError(f"first event is not message_start: {[n for n, _ in events[:3]]}")
    message = dict(events[0][1]["message"])
    message["content"] = []
    message["usage"] = dict(message.get("usage") or {})
    open_blocks: set[int] = set()
    partial_json: dict[int, str] = {}
    seen_delta = seen_stop = False
    for i, (name, data) in enumerate(events):
        where = f"event {i} ({name})"
        if data.get("type") != name:
            raise StreamGrammarError(f"{where}: data type is {data.get('type')!r}")
        if seen_stop:
            raise StreamGrammarError(f"{where}: after message_stop")
        if name == "error":
            raise StreamGrammarError(f"{where}: {data.get('error')}")
        if name == "content_block_start":
            index = data["index"]
            if seen_delta or index != len(message["content"]):
                raise StreamGrammarError(f"{where}: block {index} starts out of order")
            block = dict(data["content_block"])
            message["content"].append(block)
            open_blocks.add(index)
        elif name == "content_block_delta":
            index, delta = data["index"], data["delta"]
            if index not in open_blocks:
                raise StreamGrammarError(f"{where}: delta for block {index}, which is not open")
            block = message["content"][index]
            kind = delta["type"]
            if kind == "text_delta" and block["type"] == "text":
                block["text"] = block.get("text", "") + delta["text"]
            elif kind == "thinking_delta" and block["type"] == "thinking":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif kind == "signature_delta" and block["type"] == "thinking":
                block["signature"] = delta["signature"]
            elif kind == "input_json_delta" and block["type"] == "tool_use":
                partial_json[index] = partial_json.get(index, "") + delta["partial_json"]
            else:
                raise StreamGrammarError(f"{where}: {kind} does not fit a {block['type']} block")
        elif name == "content_block_stop":
            index = data["index"]
            if index not in open_blocks:
                raise StreamGrammarError(f"{where}: stop for block {index}, which is not open")
            open_blocks.discard(index)
        elif name == "message_delta":
            if open_blocks:
                raise StreamGrammarError(f"{where}: blocks {sorted(open_blocks)} still open")
            seen_delta = True
            message.update(data["delta"])
            message["usage"].update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif name == "message_stop":
            if not seen_delta:
                raise StreamGrammarError(f"{where}: message_stop without message_delta")
            seen_stop = True
        elif name not in ("message_start", "ping"):
            raise StreamGrammarError(f"{where}: unknown event")
    if not seen_stop:
        raise StreamGrammarError(f"stream ended without message_stop: {out.names[-3:]}")
    for index, text in partial_json.items():
        message["content"][index]["input"] = json.loads(text)
    out.message = message
    return out


def interleaved(events: list[tuple[str, dict[str, Any]]]) -> bool:
    """True when a block started while an earlier one was still open."""
    open_blocks: set[int] = set()
    for name, data in events:
        if name == "content_block_start":
            if open_blocks:
                return True
            open_blocks.add(data["index"])
        elif name == "content_block_stop":
            open_blocks.discard(data["index"])
    return False
