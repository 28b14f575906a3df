"""Prompt progress: how far llama-server has read a long prompt, and how long the rest will take.

On a CPU a local model can spend minutes on Claude Code's first prompt with
nothing to show. llama-server (this build: b1-0c1e570) reports its progress in
a streamed chat completion asked with `"return_progress": true`: chunks with a
`prompt_progress` object (`total`, `cache`, `processed`, `time_ms`), one per
batch it reads, before the first token. The backend leg asks for them, turns
them into `RequestProgress` events and keeps them from LiteLLM (they are not
part of the answer). Its `/slots` cannot stand in: there `n_prompt_tokens`
grows batch by batch, so the total is not known until the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from backend.events import RequestProgress
from backend.proxy.sse import SSEFramer, extract_json, sse_data

MARKER = b'"prompt_progress"'


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def progress_event(request_id: str, progress: dict[str, Any], now: float | None = None) -> RequestProgress | None:
    """A `prefill` event from llama-server's `prompt_progress`; None when it is not one."""
    total, cached, done = (_number(progress.get(k)) for k in ("total", "cache", "processed"))
    ms = _number(progress.get("time_ms"))
    if total is None or cached is None or done is None:
        return None
    eta = None
    read = done - cached  # tokens read this time (the cached ones cost nothing)
    if ms and ms > 0 and read > 0 and total >= done:
        eta = (total - done) / (read / (ms / 1000.0))
    return RequestProgress(request_id, "prefill", time.time() if now is None else now,
                           int(total), int(done), int(cached), eta)


def _answer_free(chunk: dict[str, Any]) -> bool:
    """True when a chunk carries nothing of the answer (llama-server's progress chunks have an
    empty delta), so dropping it changes nothing LiteLLM builds."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(delta.get(k) for k in ("content", "tool_calls", "reasoning_content")):
            return False
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return False
    return True


def take_progress(data: bytes, framer: SSEFramer, report: Callable[[dict[str, Any]], None]) -> bytes:
    """Report the `prompt_progress` chunks in `data` (whole events) and return the rest of it.

    Cheap when there are none (one substring scan): every chunk after the prompt."""
    if MARKER not in data:
        return data
    kept = []
    for block in framer.events(data):
        payload = sse_data(block)
        chunk = extract_json(payload) if payload is not None else None
        if isinstance(chunk, dict) and isinstance(chunk.get("prompt_progress"), dict):
            report(chunk["prompt_progress"])
            if _answer_free(chunk):
                continue
        kept.append(block)
    return b"".join(block + b"\n\n" for block in kept)
