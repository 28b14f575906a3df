"""The one adapter between the backend and Textual.

`PanelBridge` subscribes to the backend's events (delivered on the backend
thread), keeps them in a bounded buffer and hands them to the UI in batches a
few times a second (`EventsFlushed`), so a proxy at hundreds of requests per
second costs the screen a handful of updates. `PanelState` is the panel's view
of the world: a bounded window of recent records and per-second token counts.
Nothing here draws; nothing here imports a backend module beyond the façade's types.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from textual.message import Message

from backend.events import (
    Event,
    LogLine,
    RequestFinished,
    RequestRecord,
    RequestStarted,
    ServiceStateChanged,
)

ROW_WINDOW = 500  # newest rows the request table keeps; older ones stay in SQLite
CHART_SECONDS = 300  # the dashboard's throughput chart covers the last five minutes
BUCKET_SECONDS = 5


class Backend(Protocol):
    """What the panel needs from the backend: `backend.runner.BridgeThread` or a fixed stand-in."""

    def subscribe(self, listener: Callable[[Event], None]) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def recent(self, limit: int = 100, **filters: Any) -> list[RequestRecord]: ...
    def record(self, request_id: str) -> RequestRecord | None: ...
    def log_tail(self, service: str, n: int = 200) -> list[str]: ...
    def restart_service(self, name: str) -> None: ...
    def stop_service(self, name: str) -> None: ...
    def start_service(self, name: str) -> None: ...
    def save_aliases(self, aliases: list[tuple[str, str]]) -> Any: ...
    def enable_swa_full(self, backend: str) -> Any: ...


class EventsFlushed(Message):
    """A batch of backend events, delivered on the UI thread."""

    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events


class PanelBridge:
    """Owns the backend façade and the event buffer between its thread and the UI."""

    def __init__(self, backend: Backend, *, buffer: int = 20_000) -> None:
        self.backend = backend
        self._buffer: deque[Event] = deque(maxlen=buffer)  # bounded: a stalled UI drops the oldest
        self._lock = threading.Lock()
        self.dropped = 0
        backend.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        # Backend thread: only hand over. deque.append is atomic; the lock guards the swap in drain().
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(event)

    def drain(self) -> list[Event]:
        """Take every buffered event (UI thread, on a timer)."""
        with self._lock:
            events = list(self._buffer)
            self._buffer.clear()
        return events


@dataclass
class PanelState:
    """What the screens draw from: updated on the UI thread only."""

    clock: Callable[[], float] = time.time
    status: dict[str, Any] = field(default_factory=dict)
    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=ROW_WINDOW))
    in_flight: dict[str, RequestStarted] = field(default_factory=dict)
    logs: dict[str, deque[str]] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)  # lines ever seen (the deques are bounded)
    # per-second sums keyed by int(unix second): (output tokens, prompt tokens, requests)
    seconds: dict[int, list[float]] = field(default_factory=dict)
    total_requests: int = 0
    # what the panel knows is under way per service ("restarting", "stopping", ...), shown over its state
    activity: dict[str, str] = field(default_factory=dict)

    def seed(self, records: list[RequestRecord]) -> None:
        """History from SQLite (newest first), so the panel opens with what happened before."""
        for r in reversed(records):
            self._add_record(r)

    def apply(self, events: list[Event]) -> list[RequestRecord]:
        """Fold a batch in; return the records that finished in it."""
        finished: list[RequestRecord] = []
        for ev in events:
            if isinstance(ev, RequestStarted):
                self.in_flight[ev.id] = ev
            elif isinstance(ev, RequestFinished):
                self.in_flight.pop(ev.record.id, None)
                self._add_record(ev.record)
                finished.append(ev.record)
            elif isinstance(ev, LogLine):
                self._log(ev.service, ev.line)
            elif isinstance(ev, ServiceStateChanged):
                self._log(ev.service, f"-- {ev.state}" + (f": {ev.detail}" if ev.detail else ""))
                for svc in self.status.get("services", []):
                    if svc.get("name") == ev.service:
                        svc["state"] = ev.state
                        svc["detail"] = ev.detail
                if ev.state == "restarting":  # a zero-loss restart: the old LiteLLM serves meanwhile
                    self.activity[ev.service] = "restarting"
                elif ev.state in ("ready", "stopped", "failed", "crashed"):
                    self.activity.pop(ev.service, None)
        if len(self.in_flight) > 10_000:  # a lost RequestFinished must not grow this forever
            self.in_flight.clear()
        self._trim()
        return finished

    def _log(self, service: str, line: str) -> None:
        self.logs.setdefault(service, deque(maxlen=2000)).append(line)
        self.log_counts[service] = self.log_counts.get(service, 0) + 1

    def _add_record(self, r: RequestRecord) -> None:
        self.records.appendleft(r)
        self.total_requests += 1
        end = r.started_at + (r.duration_ms or 0) / 1000
        slot = self.seconds.setdefault(int(end), [0.0, 0.0, 0.0])
        slot[0] += r.output_tokens or 0
        slot[1] += r.input_tokens or 0
        slot[2] += 1

    def _trim(self) -> None:
        horizon = int(self.clock()) - CHART_SECONDS - BUCKET_SECONDS
        for sec in [s for s in self.seconds if s < horizon]:
            del self.seconds[sec]

    def series(self, index: int) -> list[float]:
        """Tokens per second (index 0 output, 1 prompt) in BUCKET_SECONDS buckets, oldest first."""
        now = int(self.clock())
        out = []
        for start in range(now - CHART_SECONDS, now, BUCKET_SECONDS):
            total = sum(self.seconds.get(s, (0, 0, 0))[index] for s in range(start, start + BUCKET_SECONDS))
            out.append(total / BUCKET_SECONDS)
        return out

    def requests_per_minute(self) -> int:
        now = int(self.clock())
        return int(sum(self.seconds.get(s, (0, 0, 0))[2] for s in range(now - 60, now + 1)))

    def ttft_percentiles(self) -> tuple[float | None, float | None]:
        values = sorted(r.ttft_ms for r in self.records if r.ttft_ms is not None)
        if not values:
            return None, None

        def pick(q: float) -> float:
            return values[min(len(values) - 1, int(q * len(values)))]

        return pick(0.5), pick(0.95)

    def shown_state(self, svc: dict[str, Any]) -> str:
        """The state a card shows: an action under way wins over the service's last state."""
        return self.activity.get(str(svc.get("name")), str(svc.get("state", "?")))

    def service(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.status.get("services", []) if s.get("name") == name), None)
