"""Anthropic-format error bodies, and the messages that tell a user what to do.

Claude Code shows `error.message` to the user, so every message says what
happened and how to fix it.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Anthropic's error types by HTTP status (docs: "Errors").
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error(status: int, message: str, error_type: str | None = None) -> bytes:
    """The JSON body of an Anthropic error response."""
    body = {"type": "error", "error": {"type": error_type or error_type_for(status), "message": message}}
    return json.dumps(body).encode()


def anthropic_error_event(message: str, error_type: str = "api_error") -> bytes:
    """An SSE `error` event, for a stream that fails after it started."""
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return f"event: error\ndata: {data}\n\n".encode()


def extract_message(body: bytes) -> str | None:
    """The human message inside an Anthropic, OpenAI or llama-server error body."""
    try:
        obj: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace").strip()
        return text[:2000] or None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail")
            if isinstance(msg, str):
                return msg
            if msg is not None:
                return json.dumps(msg)[:2000]
        elif isinstance(err, str):
            return err
        detail = obj.get("detail")
        if isinstance(detail, str):
            return detail
    return None


_CTX_RE = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)")


def context_overflow(body: bytes | None) -> tuple[int, int] | None:
    """(prompt tokens, context per slot) if `body` is llama-server's context-size error."""
    if not body:
        return None
    try:
        obj = json.loads(body)
        err = obj.get("error", {}) if isinstance(obj, dict) else {}
        if isinstance(err, dict) and "n_prompt_tokens" in err and "n_ctx" in err:
            return int(err["n_prompt_tokens"]), int(err["n_ctx"])
    except (ValueError, TypeError, UnicodeDecodeError, AttributeError):
        pass
    m = _CTX_RE.search(body.decode("utf-8", "replace"))
    return (int(m.group(1)), int(m.group(2))) if m else None


def context_overflow_message(backend: str, prompt_tokens: int, n_ctx: int) -> str:
    """Starts the way Anthropic words it, so Claude Code recognises the error."""
    need = max(32768, 1 << (prompt_tokens * 2 - 1).bit_length())
    return (
        f"prompt is too long: {prompt_tokens} tokens > {n_ctx} maximum. "
        f"Backend '{backend}' (llama-server) has {n_ctx} tokens of context per slot, "
        f"and this request needs {prompt_tokens}. Fix: restart llama-server with a larger "
        f"context, e.g. `-c {need}` (-c is divided among the -np slots, so with -np N use "
        f"-c {need}*N, or -np 1). Claude Code's first turn alone is 15k-20k tokens; "
        f"100k or more lets long sessions compact instead of failing."
    )


def timeout_message(upstream_timeout: float) -> str:
    """What a request is told when the upstream did not answer within `proxy.upstream_timeout`."""
    return (
        f"ccbridge: no answer from upstream within {upstream_timeout:.0f} s "
        "(proxy.upstream_timeout); the model was stopped. A long prompt on a slow model can "
        "take that long: raise the timeout or check the backend."
    )
