"""What each Claude Code session's model call is doing now: the fold behind `ccbridge statusline`.

Claude Code runs its status-line command every second with the session's id
(the same UUID it sends as `X-Claude-Code-Session-Id`). The serve answers that
command from this board: the session's request in flight (waiting, reading its
prompt with llama-server's progress, or generating), else its last finished
one. Kept apart from `RequestMetrics` so the answer is one dict lookup under
a lock, never a walk over every request, and so its memory is bounded: one
entry per request in flight and one per recent session.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from backend.events import Event, RequestFinished, RequestProgress, RequestRecord, RequestStarted

MAX_SESSIONS = 512
"""Sessions whose last request is remembered (the oldest goes first)."""
MAX_IN_FLIGHT = 10_000
"""A lost RequestFinished must not grow the in-flight table forever."""


@dataclass(slots=True)
class _Live:
    started: RequestStarted
    progress: RequestProgress | None = None
    generating_at: float | None = None


class SessionBoard:
    """A bus listener: per session, the request in flight and the last one finished. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._current: dict[str, str] = {}  # session -> newest request in flight
        self._last: OrderedDict[str, RequestRecord] = OrderedDict()

    def on_event(self, event: Event) -> None:
        """Quick, never raises."""
        if isinstance(event, RequestStarted):
            if not _model_call(event.path):
                return
            with self._lock:
                self._live[event.id] = _Live(event)
                if event.session_id:
                    self._current[event.session_id] = event.id
                if len(self._live) > MAX_IN_FLIGHT:
                    self._drop(next(iter(self._live)))
        elif isinstance(event, RequestProgress):
            with self._lock:
                live = self._live.get(event.id)
                if live is not None:
                    if event.phase == "generating":
                        live.generating_at = event.at
                    else:
                        live.progress = event
        elif isinstance(event, RequestFinished):
            record = event.record
            with self._lock:
                self._drop(record.id)
                if record.session_id and _model_call(record.path):
                    self._last[record.session_id] = record
                    self._last.move_to_end(record.session_id)
                    while len(self._last) > MAX_SESSIONS:
                        self._last.popitem(last=False)

    def _drop(self, request_id: str) -> None:
        live = self._live.pop(request_id, None)
        session = live.started.session_id if live is not None else None
        if session and self._current.get(session) == request_id:
            # another request of the session may still run (a subagent's): show the newest of them
            others = [lv for lv in self._live.values() if lv.started.session_id == session]
            if others:
                self._current[session] = max(others, key=lambda lv: lv.started.started_at).started.id
            else:
                del self._current[session]

    def view(self, session_id: str | None, now: float | None = None) -> dict[str, Any]:
        """The session's request in flight (`request`) and last finished one (`last`), JSON-ready;
        `known` is False when ccbridge has seen no request of that session."""
        now = time.time() if now is None else now
        with self._lock:
            live = self._live.get(self._current.get(session_id or "", ""))
            last = self._last.get(session_id or "")
            busy = len(self._live)
            if live is not None:
                live = _Live(live.started, live.progress, live.generating_at)
        request = None
        if live is not None:
            p = live.progress
            phase = "generating" if live.generating_at is not None else "prefill" if p is not None else "waiting"
            request = {
                "id": live.started.id, "phase": phase, "backend": live.started.routed_backend,
                "elapsed_s": round(max(0.0, now - live.started.started_at), 1),
                "prompt_total": p.prompt_total if p else None, "prompt_done": p.prompt_done if p else None,
                "prompt_cached": p.prompt_cached if p else None, "eta_s": p.eta_s if p else None,
                "generating_s": round(max(0.0, now - live.generating_at), 1) if live.generating_at else None,
            }
        done = None
        if last is not None:
            prompt = _prompt_tokens(last)
            done = {
                "id": last.id, "backend": last.routed_backend, "status": last.status, "error": last.error,
                "input_tokens": last.input_tokens, "output_tokens": last.output_tokens,
                "cache_read_tokens": last.cache_read_tokens, "cache_share": last.cache_share,
                "output_tps": last.output_tps, "ttft_ms": last.ttft_ms,
                "ended_at": last.started_at + (last.duration_ms or 0) / 1000, "prompt_tokens": prompt,
                "context_tokens": prompt + (last.output_tokens or 0) if prompt is not None else None,
            }
        return {"known": request is not None or done is not None, "request": request, "last": done,
                "in_flight": busy}


def _model_call(path: str) -> bool:
    """A call that reads a prompt and answers (not a token count, a probe or telemetry)."""
    return path.startswith("/v1/messages") and not path.startswith("/v1/messages/count_tokens")


def _prompt_tokens(r: RequestRecord) -> int | None:
    """The whole prompt of a finished request: llama-server's own count (read + cached) where the
    leg saw its timings, else the usage's split (`input_tokens` + `cache_read_input_tokens`)."""
    if r.backend_prompt_n is not None and r.backend_cache_n is not None:
        return r.backend_prompt_n + r.backend_cache_n
    if r.input_tokens is None:
        return None
    return r.input_tokens + (r.cache_read_tokens or 0)
