"""Tool calls a model wrote as text, turned into the `tool_use` blocks it meant.

Small instruct models (Qwen2.5-Coder 0.5B, measured: FACTS) answer a tool request
with the right call written as JSON text, often in a ```json fence and without the
`<tool_call>` tags llama-server's parser looks for. The call then reaches Claude
Code as text with `stop_reason: end_turn`, and Claude Code never runs the tool.

The repair never guesses. A message's text becomes tool calls only when all hold:
- the text is nothing but calls: JSON objects `{"name": ..., "arguments" |
  "parameters" | "input": {...}}` (one, several, or a list), each optionally in a
  ``` fence or `<tool_call>` tags, with only whitespace around them;
- every name is a tool this very request offered;
- every call's arguments validate against that tool's `input_schema` (JSON Schema,
  checked by the `jsonschema` library).
Anything else (prose around the JSON, an unknown name, arguments that fail the
schema, a request without tools) reaches the client exactly as the model wrote it.
Thinking blocks before the call are kept.
"""

from __future__ import annotations

import functools
import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

from backend.proxy import fastjson
from backend.proxy.sse import sse_data

# keys a model uses for a call's arguments (OpenAI, some fine-tunes, Anthropic)
_ARGUMENT_KEYS = ("arguments", "parameters", "input")
_FENCE = "```"
_OPEN_TAG, _CLOSE_TAG = "<tool_call>", "</tool_call>"
_ALPHABET = string.ascii_letters + string.digits
# Text held back while it could still become a call; past this it is sent as text.
HOLD_LIMIT = 256 * 1024
# How much of a repaired text the record keeps for the detail view.
TRACE_CHARS = 4000
_DECODER = json.JSONDecoder()


def tool_use_id() -> str:
    """An id in Anthropic's form (`toolu_` and 24 letters and digits)."""
    return "toolu_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


@dataclass(frozen=True, slots=True)
class RepairedCall:
    """One call found in a model's text, checked against the tool it names."""

    name: str
    input: dict[str, Any]

    def block(self) -> dict[str, Any]:
        return {"type": "tool_use", "id": tool_use_id(), "name": self.name, "input": self.input}


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A compiled validator for one schema (its canonical JSON); None when the schema is not valid."""
    import jsonschema  # lazy: only a reply that looks like a call pays for the import
    from jsonschema.exceptions import SchemaError

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError:
        return None
    return cls(schema)


class ToolCatalog:
    """The tools one request offered: name -> input_schema."""

    __slots__ = ("_schemas",)

    def __init__(self, tools: Any) -> None:
        self._schemas: dict[str, Any] = {}
        if isinstance(tools, list):
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str) \
                        and isinstance(tool.get("input_schema"), dict):
                    self._schemas[tool["name"]] = tool["input_schema"]

    def __bool__(self) -> bool:
        return bool(self._schemas)

    def accepts(self, name: str, arguments: dict[str, Any]) -> bool:
        """True when `name` was offered and `arguments` validate against its schema."""
        schema = self._schemas.get(name)
        if schema is None:
            return False
        validator = _validator(json.dumps(schema, sort_keys=True))
        return validator is not None and bool(validator.is_valid(arguments))


def could_be_calls(text: str) -> bool | None:
    """Whether text that begins so could still turn out to be only tool calls: True, False,
    or None while it is only whitespace (undecided)."""
    head = text.lstrip()
    if not head:
        return None
    if head[0] in "{[":
        return True
    if head.startswith(_FENCE) or _FENCE.startswith(head):
        return True
    return head.startswith(_OPEN_TAG) or _OPEN_TAG.startswith(head)


def _json_values(text: str) -> list[Any] | None:
    """The JSON values `text` consists of (whitespace between them allowed), or None."""
    values: list[Any] = []
    i, end = 0, len(text)
    while True:
        while i < end and text[i].isspace():
            i += 1
        if i == end:
            return values
        if text[i] not in "{[":
            return None
        try:
            value, i = _DECODER.raw_decode(text, i)
        except ValueError:
            return None
        values.append(value)


def _segments(text: str) -> list[Any] | None:
    """The JSON values of a text made only of fences, `<tool_call>` tags and bare JSON."""
    values: list[Any] = []
    rest = text.strip()
    while rest:
        if rest.startswith(_FENCE):
            newline = rest.find("\n")
            close = rest.find(_FENCE, len(_FENCE))
            if newline < 0 or close < 0 or close < newline:
                return None
            language = rest[len(_FENCE):newline].strip().lower()
            if language not in ("", "json", "tool_call", "tool_code"):
                return None
            inner, rest = rest[newline + 1:close], rest[close + len(_FENCE):].lstrip()
        elif rest.startswith(_OPEN_TAG):
            close = rest.find(_CLOSE_TAG)
            if close < 0:  # a last call whose closing tag the model never wrote
                inner, rest = rest[len(_OPEN_TAG):], ""
            else:
                inner, rest = rest[len(_OPEN_TAG):close], rest[close + len(_CLOSE_TAG):].lstrip()
            if inner.strip().startswith(_FENCE):  # a fence inside the tags
                found = _segments(inner)
                if found is None:
                    return None
                values += found
                continue
        else:
            # bare JSON up to the next fence or tag (or the end)
            cut = min((p for p in (rest.find(_FENCE), rest.find(_OPEN_TAG)) if p > 0), default=len(rest))
            inner, rest = rest[:cut], rest[cut:]
        found = _json_values(inner)
        if not found:
            return None
        values += found
    return values


def find_calls(text: str, catalog: ToolCatalog) -> list[RepairedCall] | None:
    """The tool calls `text` consists of, each checked against `catalog`; None unless every rule holds."""
    if not catalog or not could_be_calls(text):
        return None
    values = _segments(text)
    if not values:
        return None
    calls: list[RepairedCall] = []
    for value in values:
        for obj in value if isinstance(value, list) else [value]:
            call = _call(obj, catalog)
            if call is None:
                return None
            calls.append(call)
    return calls or None


def _call(obj: Any, catalog: ToolCatalog) -> RepairedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    keys = [k for k in _ARGUMENT_KEYS if k in obj]
    if len(keys) != 1 or set(obj) != {"name", keys[0]}:
        return None  # a stray key, or two argument keys: not a plain call
    arguments = obj[keys[0]]
    if not isinstance(arguments, dict) or not catalog.accepts(obj["name"], arguments):
        return None
    return RepairedCall(obj["name"], arguments)


@dataclass(frozen=True, slots=True)
class Repair:
    """What one repair did: the text the model wrote, and the blocks it became."""

    text: str
    blocks: list[dict[str, Any]]

    def trace(self) -> str:
        """The record's note: the repaired text (cut), for the detail view."""
        return self.text if len(self.text) <= TRACE_CHARS else self.text[:TRACE_CHARS] + "…"


_REPAIRABLE_STOPS = (None, "end_turn", "stop_sequence")
_KEPT_BEFORE = ("thinking", "redacted_thinking")


def repair_message(message: dict[str, Any], catalog: ToolCatalog) -> Repair | None:
    """Repair a whole (non-streamed) Anthropic message in place; the repair, or None when it stays as it was."""
    content = message.get("content")
    if not catalog or not isinstance(content, list) or message.get("stop_reason") not in _REPAIRABLE_STOPS:
        return None
    kept: list[Any] = []
    texts: list[str] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind in _KEPT_BEFORE and not texts:
            kept.append(block)
        else:
            return None  # a real tool_use, or anything else: the model's answer stands
    text = "".join(texts)
    calls = find_calls(text, catalog)
    if calls is None:
        return None
    blocks = [call.block() for call in calls]
    message["content"] = kept + blocks
    message["stop_reason"] = "tool_use"
    return Repair(text, blocks)


def repair_body(body: bytes, catalog: ToolCatalog) -> tuple[bytes, Repair | None]:
    """A non-streamed answer's bytes, repaired when its text is only tool calls."""
    if not catalog:
        return body, None
    try:
        message, fast = fastjson.loads(body)
    except ValueError:
        return body, None
    if not isinstance(message, dict) or message.get("type") != "message":
        return body, None
    repair = repair_message(message, catalog)
    if repair is None:
        return body, None
    return fastjson.dumps(message, fast), repair


def _sse_event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + fastjson.dumps(data)


def _event_of(block: bytes) -> tuple[str | None, Any]:
    """An SSE block's event name (from `event:` or the data's `type`) and its decoded data."""
    name = None
    if block.startswith(b"event:"):
        nl = block.find(b"\n")
        name = block[6:nl if nl >= 0 else len(block)].strip().decode("utf-8", "replace")
    data = sse_data(block)  # the one reading of an event's data lines (backend/proxy/sse.py)
    obj = None
    if data is not None:
        try:
            obj, _ = fastjson.loads(data)
        except ValueError:
            obj = None
    if name is None and isinstance(obj, dict) and isinstance(obj.get("type"), str):
        name = obj["type"]
    return name, obj


_WATCH, _HOLD, _PASS = 0, 1, 2


class StreamRepair:
    """The streaming side of the repair: sits between the upstream's events and the client.

    Events pass unchanged until a text block starts. Its events are then held while the
    text is only whitespace, or begins like a call (`{`, `[`, a fence, `<tool_call>`);
    text that begins any other way releases them at once, so prose streams with no added
    delay. Held events are decided at `message_delta` (the message's end, with its stop
    reason): calls that pass every rule are sent as `tool_use` blocks with `stop_reason:
    tool_use`; anything else is released exactly as it came. Bounded: past `HOLD_LIMIT`
    bytes the held events are released and the text stays text.

    `feed` takes whole events (what an `SSEFramer` returned) and returns what to send now;
    `finish` returns whatever is still held when the stream ends without a decision.
    """

    __slots__ = ("_catalog", "_mode", "_held", "_held_bytes", "_text", "_index", "_crlf", "repair")

    def __init__(self, catalog: ToolCatalog) -> None:
        self._catalog = catalog
        self._mode = _WATCH if catalog else _PASS
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._text: list[str] = []
        self._index = 0
        self._crlf = False
        self.repair: Repair | None = None

    def feed(self, data: bytes) -> bytes:
        if self._mode == _PASS or not data:
            return data
        if self._mode == _WATCH and b"content_block_start" not in data:
            return data  # no block starts here: nothing to look at (the common case before text)
        self._crlf = b"\r\n" in data
        if self._crlf:
            data = data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        for block in (b for b in data.split(b"\n\n") if b.strip(b"\n")):
            block = block.strip(b"\n")
            if self._mode == _PASS:
                out.append(block)
            elif self._mode == _WATCH:
                self._watch(block, out)
            else:
                self._hold(block, out)
        return self._encode(out)

    def finish(self) -> bytes:
        """What is still held at the stream's end (it ended without a decision): sent as it came."""
        out: list[bytes] = []
        self._release(out)
        return self._encode(out)

    def _encode(self, blocks: list[bytes]) -> bytes:
        if not blocks:
            return b""
        data = b"\n\n".join(blocks) + b"\n\n"
        return data.replace(b"\n", b"\r\n") if self._crlf else data

    def _release(self, out: list[bytes]) -> None:
        out.extend(self._held)
        self._held, self._held_bytes, self._text = [], 0, []
        self._mode = _PASS

    def _keep(self, block: bytes, out: list[bytes]) -> None:
        self._held.append(block)
        self._held_bytes += len(block)
        if self._held_bytes > HOLD_LIMIT:
            self._release(out)

    def _watch(self, block: bytes, out: list[bytes]) -> None:
        name, obj = _event_of(block) if b"content_block_start" in block else (None, None)
        content = obj.get("content_block") if isinstance(obj, dict) else None
        if name != "content_block_start" or not isinstance(content, dict) or content.get("type") != "text":
            out.append(block)
            return
        self._mode = _HOLD
        index = obj.get("index") if isinstance(obj, dict) else None
        self._index = index if isinstance(index, int) else 0
        self._keep(block, out)
        self._add_text(content.get("text"), out)

    def _add_text(self, text: Any, out: list[bytes]) -> None:
        if isinstance(text, str) and text:
            self._text.append(text)
        if self._mode == _HOLD and could_be_calls("".join(self._text)) is False:
            self._release(out)  # prose: send what was held and stream the rest as it comes

    def _hold(self, block: bytes, out: list[bytes]) -> None:
        if block.startswith(b":"):  # an SSE comment (keep-alive)
            self._keep(block, out)
            return
        name, obj = _event_of(block)
        if name in ("ping", "content_block_stop"):
            self._keep(block, out)
        elif name == "content_block_delta" and isinstance(obj, dict) and isinstance(obj.get("delta"), dict) \
                and obj["delta"].get("type") == "text_delta":
            self._keep(block, out)
            self._add_text(obj["delta"].get("text"), out)
        elif name == "content_block_start" and isinstance(obj, dict) \
                and isinstance(obj.get("content_block"), dict) and obj["content_block"].get("type") == "text":
            self._keep(block, out)
            self._add_text(obj["content_block"].get("text"), out)
        elif name == "message_delta" and isinstance(obj, dict):
            self._decide(block, obj, out)
        else:  # a real tool_use or thinking block after the text, the stream's end, an error: it stands
            self._release(out)
            out.append(block)

    def _decide(self, block: bytes, obj: dict[str, Any], out: list[bytes]) -> None:
        raw = obj.get("delta")
        delta: dict[str, Any] = raw if isinstance(raw, dict) else {}
        text = "".join(self._text)
        calls = find_calls(text, self._catalog) if delta.get("stop_reason") in _REPAIRABLE_STOPS else None
        if calls is None:
            self._release(out)
            out.append(block)
            return
        blocks = [call.block() for call in calls]
        for i, tool_use in enumerate(blocks, start=self._index):
            start = {**tool_use, "input": {}}
            out.append(_sse_event("content_block_start",
                                  {"type": "content_block_start", "index": i, "content_block": start}))
            out.append(_sse_event("content_block_delta", {
                "type": "content_block_delta", "index": i,
                "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool_use["input"])}}))
            out.append(_sse_event("content_block_stop", {"type": "content_block_stop", "index": i}))
        obj["delta"] = {**delta, "stop_reason": "tool_use"}
        out.append(_sse_event("message_delta", obj))
        self.repair = Repair(text, blocks)
        self._held, self._held_bytes, self._text = [], 0, []
        self._mode = _PASS
