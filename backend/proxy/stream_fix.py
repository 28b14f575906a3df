"""Fixes to an Anthropic stream on its way to Claude Code, event by event.

What upstreams get wrong and the front proxy mends before Claude Code reads it:
LiteLLM ends a broken stream with an OpenAI-shaped bare error line
(`rewrite_bare_errors`), llama-server sometimes leaves out `message_start`
(`message_start_event` stands in for it), and nothing may follow the event
that ends a stream (`through_end`). The SSE framing and meters they build on
are in `backend.proxy.sse`.
"""

from __future__ import annotations

from typing import Any

from backend.proxy import fastjson
from backend.proxy.errors import anthropic_error_event, extract_message
from backend.proxy.sse import extract_json, sse_data

# LiteLLM ends a stream whose backend broke off with an OpenAI-shaped bare
# `data: {"error": ...}` line; Claude Code needs an Anthropic `event: error`.
BARE_ERROR = b'data: {"error"'


def message_start_event(request_id: str, model: str | None, input_tokens: int | None = None,
                        cache_read_tokens: int | None = None) -> bytes:
    """The `message_start` llama-server's own Anthropic stream leaves out when its first token is part
    of a UTF-8 character (build b1-0c1e570: it holds such a token back, and only the partial result of
    the first token carries `message_start`); Claude Code's SDK needs it first. Its usage carries the
    prompt's new and cached tokens where llama-server told them (else zero, as LiteLLM sends)."""
    usage = {"input_tokens": input_tokens or 0, "output_tokens": 0}
    if cache_read_tokens is not None:
        usage["cache_read_input_tokens"] = cache_read_tokens
    message: dict[str, Any] = {"id": f"msg_ccbridge_{request_id}", "type": "message", "role": "assistant",
                               "content": [], "model": model or "local", "stop_reason": None, "stop_sequence": None,
                               "usage": usage}  # required by the schema (the SDK writes the final usage into it)
    data = fastjson.dumps({"type": "message_start", "message": message}).decode()
    return f"event: message_start\ndata: {data}\n\n".encode()


def rewrite_bare_errors(data: bytes) -> bytes:
    """Turn LiteLLM's bare OpenAI-style error lines into Anthropic `error` events.

    `data` holds whole lines (an `SSEFramer` cut it), so a bare error is seen
    wherever it starts: at the start of a write, or after other events."""
    out = []
    for line in data.split(b"\n"):
        if line.startswith(BARE_ERROR):
            message = extract_message(line[6:]) or "the upstream stream failed"
            out.append(anthropic_error_event(f"ccbridge: the model stream broke off: {message}").rstrip(b"\n"))
        else:
            out.append(line)
    return b"\n".join(out)


def through_end(blocks: list[bytes]) -> tuple[bytes, bool]:
    """The events up to and including the first that ends an Anthropic stream (`message_stop`, or an
    `error`), and whether there was one: nothing after it reaches the client."""
    for i, block in enumerate(blocks):
        name = block[6:block.find(b"\n")].strip() if block.startswith(b"event:") else b""
        data = sse_data(block)
        obj = extract_json(data) if data is not None and not name else None
        kind = name.decode("utf-8", "replace") if name else (obj.get("type") if isinstance(obj, dict) else None)
        if kind in ("message_stop", "error"):
            return b"".join(b + b"\n\n" for b in blocks[: i + 1]), True
    return b"".join(block + b"\n\n" for block in blocks), False
