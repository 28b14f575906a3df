"""Cheap meters for the server-sent-event streams that pass through ccbridge.

Both meters sit in the proxy's hot path and see every chunk of every stream,
so they work on raw bytes and only JSON-decode the few events that carry what
we record (usage, stop reason, errors, llama-server's timings). Nothing here
raises on bad input: a malformed event is skipped, invalid UTF-8 is replaced.

- `AnthropicStreamMeter`: Anthropic Messages SSE (what Claude Code receives).
- `OpenAIStreamTimings`: OpenAI chat-completions SSE (what llama-server sends
  to LiteLLM through the backend leg), for the `timings` LiteLLM drops.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = [
    "AnthropicStreamMeter",
    "SSEFramer",
    "extract_json",
    "sse_data",
    "OpenAIStreamTimings",
    "parse_anthropic_body",
    "parse_openai_body",
    "timings_fields",
]

# A partial event larger than this is given up (see SSEFramer): a stream that never sends a
# separator must not grow the buffer without bound.
_MAX_PENDING = 8 * 1024 * 1024

_CONTENT_DELTAS = frozenset({"text_delta", "thinking_delta", "input_json_delta"})
# Events whose data we never need: counted, not decoded.
_NO_DATA = frozenset({b"ping", b"content_block_start", b"content_block_stop"})
_DELTA_EVENT = b"event: content_block_delta"
_DELTA_EVENT_LEN = len(_DELTA_EVENT)

# Anthropic usage key -> meter attribute.
_USAGE_KEYS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("cache_creation_input_tokens", "cache_creation_tokens"),
)

# OpenAI stream lines worth decoding: one regex pass is about twice as fast
# as five `in` scans on a typical 200-byte chunk.
_OPENAI_MARKER = re.compile(rb'"(?:timings|usage|error|finish_reason": ?")')


def extract_json(data: bytes) -> Any:
    """JSON-decode bytes; None when not JSON. Invalid UTF-8 becomes U+FFFD."""
    try:
        return orjson.loads(data)  # every answer and stream event passes here: 5-10x the standard library
    except orjson.JSONDecodeError:
        pass  # invalid UTF-8, NaN, an integer beyond 64 bits, deep nesting: the standard library decides
    try:
        return json.loads(data.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None


def _count(value: Any) -> int | None:
    """A token count, or None for anything that is not a non-negative int."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _error_message(error: Any) -> str | None:
    """The human message of an API error object (Anthropic or OpenAI shape)."""
    if isinstance(error, str):
        return error or None
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str) and message:
            return message
        kind = error.get("type")
        if isinstance(kind, str) and kind:
            return kind
        return json.dumps(error, ensure_ascii=False)[:500]
    return None


def sse_data(block: bytes) -> bytes | None:
    """The data of one SSE event block (lines joined by newlines), or None."""
    parts = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            # SSE: exactly one leading space after the colon is not part of the value
            parts.append(value[1:] if value[:1] == b" " else value)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


class SSEFramer:
    """Cuts a byte stream into whole server-sent events: the one framer every stream reader uses.

    `feed(chunk)` returns the bytes of the events this chunk completed, unchanged and each
    ending with its blank line, and keeps the rest for the next chunk. A relay can pass the
    returned bytes on as they are (a client cannot act on half an event anyway) and a meter
    can parse them knowing no event is cut. Bounded: an event still without its blank line
    after `limit` bytes is given up and returned as is (counted in `overflows`), so a stream
    that never sends a separator neither grows memory nor stalls a relay. `flush()` returns
    what is left at the end of the stream (a last event without its blank line).

    Line endings are LF or CRLF, decided at the first line end (streams do not mix them).
    """

    __slots__ = ("_buf", "_sep", "limit", "overflows")

    def __init__(self, limit: int = _MAX_PENDING) -> None:
        self._buf = b""
        self._sep: bytes | None = None
        self.limit = limit
        self.overflows = 0

    @property
    def crlf(self) -> bool:
        return self._sep == b"\r\n\r\n"

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for the rest of their event."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        sep = self._sep
        if sep is None:
            nl = buf.find(b"\n")
            if nl >= 0:
                sep = self._sep = b"\r\n\r\n" if nl > 0 and buf[nl - 1] == 13 else b"\n\n"
        cut = buf.rfind(sep) if sep is not None else -1
        if cut < 0:
            if len(buf) > self.limit:
                self._buf = b""
                self.overflows += 1
                return buf
            self._buf = buf
            return b""
        cut += len(sep)  # type: ignore[arg-type]
        if cut == len(buf):
            self._buf = b""
            return buf
        self._buf = buf[cut:]
        return buf[:cut]

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def events(self, data: bytes) -> list[bytes]:
        """The event blocks in bytes `feed` returned: LF line ends, no blank lines, none empty."""
        if self._sep == b"\r\n\r\n":
            data = data.replace(b"\r\n", b"\n")
        return [block.strip(b"\n") for block in data.split(b"\n\n") if block.strip(b"\n")]


class AnthropicStreamMeter:
    """Reads usage, stop reason, errors and timing from an Anthropic SSE stream.

    Feed it the response bytes as they arrive, split anywhere (`feed`), or whole
    events from the caller's own `SSEFramer` (`feed_events`). `now` is the
    caller's clock (any monotonic float); `first_content_at` and
    `last_event_at` are values of it.

    Usage: each count is the last non-null value seen in
    `message_start.message.usage` then `message_delta.usage`, so the
    `message_delta` value wins when present. That reads both LiteLLM (zeros in
    `message_start`, real counts in the final `message_delta`) and the real
    Anthropic API (input in `message_start`, output in `message_delta`).
    """

    __slots__ = (
        "model",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
        "stop_reason",
        "first_content_at",
        "last_event_at",
        "error",
        "events",
        "saw_message_stop",
        "framer",
    )

    def __init__(self) -> None:
        self.model: str | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        self.stop_reason: str | None = None
        self.first_content_at: float | None = None
        self.last_event_at: float | None = None
        self.error: str | None = None
        self.events = 0
        self.saw_message_stop = False
        self.framer = SSEFramer()

    def feed(self, chunk: bytes, now: float) -> None:
        """Account for the next piece of the response body; never raises."""
        if chunk:
            self.feed_events(self.framer.feed(chunk), now)

    def finish(self, now: float) -> None:
        """The stream ended: read a last event that came without its blank line."""
        self.feed_events(self.framer.flush(), now)

    def feed_events(self, data: bytes, now: float) -> None:
        """Account for whole events (bytes an `SSEFramer` returned); never raises."""
        if not data:
            return
        for block in self.framer.events(data):
            if (
                self.first_content_at is not None
                and block.startswith(_DELTA_EVENT)
                and block[_DELTA_EVENT_LEN : _DELTA_EVENT_LEN + 1] == b"\n"
            ):
                # The hot case, inlined: text after the first token, nothing to read.
                self.events += 1
                self.last_event_at = now
            else:
                self._event(block, now)

    def _event(self, block: bytes, now: float) -> None:
        """Handle one complete event block."""
        if block.startswith(b"event:"):
            self.events += 1
            self.last_event_at = now
            nl = block.find(b"\n")
            name = block[6 : nl if nl >= 0 else len(block)].strip()
            if name == b"content_block_delta":
                if self.first_content_at is not None:
                    return  # the hot case: text after the first token, nothing to read
            elif name in _NO_DATA:
                return
            elif name == b"message_stop":
                self.saw_message_stop = True
                return
        else:
            if block.startswith(b":"):
                return  # an SSE comment (keep-alive), not an event
            self.events += 1
            self.last_event_at = now
        data = sse_data(block)
        if data is None:
            return
        obj = extract_json(data)
        if isinstance(obj, dict):
            self._apply(obj, now)

    def _apply(self, obj: dict[str, Any], now: float) -> None:
        """Take what we record from one decoded event."""
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = obj.get("delta")
            if self.first_content_at is None and isinstance(delta, dict) and delta.get("type") in _CONTENT_DELTAS:
                self.first_content_at = now
        elif kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                model = message.get("model")
                if isinstance(model, str) and model:
                    self.model = model
                self._usage(message.get("usage"))
        elif kind == "message_delta":
            self._usage(obj.get("usage"))
            delta = obj.get("delta")
            if isinstance(delta, dict):
                reason = delta.get("stop_reason")
                if isinstance(reason, str):
                    self.stop_reason = reason
        elif kind == "message_stop":
            self.saw_message_stop = True
        elif kind == "error":
            self.error = _error_message(obj.get("error")) or "error event without a message"

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, attr in _USAGE_KEYS:
            value = _count(usage.get(key))
            if value is not None:
                setattr(self, attr, value)

    def record_fields(self) -> dict[str, Any]:
        """The `RequestRecord` fields this meter knows (for `dataclasses.replace`)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "stop_reason": self.stop_reason,
            "error": self.error,
        }


def parse_anthropic_body(body: bytes) -> dict[str, Any]:
    """Read a non-streaming Anthropic Messages response; never raises.

    Returns the keys `model`, `input_tokens`, `output_tokens`,
    `cache_read_tokens`, `cache_creation_tokens`, `stop_reason`, `error`
    (None where absent). `error` is the message of a `{"type": "error"}` body
    (or of an OpenAI-style `{"error": {...}}` body, as LiteLLM sometimes sends).
    """
    out: dict[str, Any] = {
        "model": None,
        "input_tokens": None,
        "output_tokens": None,
        "cache_read_tokens": None,
        "cache_creation_tokens": None,
        "stop_reason": None,
        "error": None,
    }
    obj = extract_json(body) if body else None
    if not isinstance(obj, dict):
        return out
    if obj.get("type") == "error" or "error" in obj:
        out["error"] = _error_message(obj.get("error")) or "error response without a message"
    model = obj.get("model")
    if isinstance(model, str) and model:
        out["model"] = model
    reason = obj.get("stop_reason")
    if isinstance(reason, str):
        out["stop_reason"] = reason
    usage = obj.get("usage")
    if isinstance(usage, dict):
        for key, attr in _USAGE_KEYS:
            out[attr] = _count(usage.get(key))
    return out


class OpenAIStreamTimings:
    """Reads llama-server's `timings`, `usage` and finish reason from an
    OpenAI chat-completions SSE stream.

    Cheap per chunk: only events that mention `"timings"`, `"usage"`,
    `"error"` or a non-null `"finish_reason"` are decoded. llama-server sends
    `timings` in the last chunk before `data: [DONE]`; the last one seen is
    kept. Attributes: `timings`, `usage` (dicts or None), `finish_reason`,
    `error` (str or None), `done` (the `[DONE]` line arrived).
    """

    __slots__ = ("timings", "usage", "finish_reason", "error", "done", "framer")

    def __init__(self) -> None:
        self.timings: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.done = False
        self.framer = SSEFramer()

    def feed(self, chunk: bytes) -> None:
        """Account for the next piece of the response body; never raises."""
        if chunk:
            self.feed_events(self.framer.feed(chunk))

    def finish(self) -> None:
        self.feed_events(self.framer.flush())

    def feed_events(self, data: bytes) -> None:
        if not data:
            return
        if _OPENAI_MARKER.search(data) is None:
            if b"[DONE]" in data:
                self.done = True
            return  # the hot case: plain content deltas
        for block in self.framer.events(data):
            payload = sse_data(block)
            if payload is None:
                continue
            if payload.strip() == b"[DONE]":
                self.done = True
            elif _OPENAI_MARKER.search(payload) is not None:
                obj = extract_json(payload)
                if isinstance(obj, dict):
                    self._apply(obj)

    def _apply(self, obj: dict[str, Any]) -> None:
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self.timings = timings
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        reason = _finish_reason(obj)
        if reason is not None:
            self.finish_reason = reason
        if "error" in obj:
            self.error = _error_message(obj.get("error")) or self.error


def _finish_reason(obj: dict[str, Any]) -> str | None:
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict):
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    return reason
    return None


def parse_openai_body(body: bytes) -> dict[str, Any]:
    """Read a non-streaming OpenAI chat-completions response; never raises.

    Returns the keys `timings`, `usage` (dicts or None), `finish_reason` and
    `error` (str or None).
    """
    out: dict[str, Any] = {"timings": None, "usage": None, "finish_reason": None, "error": None}
    obj = extract_json(body) if body else None
    if not isinstance(obj, dict):
        return out
    if isinstance(obj.get("timings"), dict):
        out["timings"] = obj["timings"]
    if isinstance(obj.get("usage"), dict):
        out["usage"] = obj["usage"]
    out["finish_reason"] = _finish_reason(obj)
    if "error" in obj:
        out["error"] = _error_message(obj.get("error")) or "error response without a message"
    return out


def timings_fields(timings: dict[str, Any] | None) -> dict[str, Any]:
    """Map llama-server's `timings` to `RequestRecord` fields.

    Returns only the fields whose values are usable numbers, so the result can
    go straight into `dataclasses.replace(record, **fields)`.
    """
    out: dict[str, Any] = {}
    if not isinstance(timings, dict):
        return out
    for key, field in (
        ("prompt_per_second", "backend_prompt_tps"),
        ("predicted_per_second", "backend_gen_tps"),
    ):
        value = timings.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            # llama-server reports inf/nan speeds for zero-length phases
            if value == value and value != float("inf"):
                out[field] = float(value)
    for key, field in (("prompt_n", "backend_prompt_n"), ("cache_n", "backend_cache_n")):
        value = timings.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        value = _count(value)
        if value is not None:
            out[field] = value
    return out
