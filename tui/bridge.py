"""The one adapter between the bridge's control interface and Textual.

`PanelBridge` holds the control interface (`backend.control.BridgeControl`:
over HTTP to a `ccbridge serve` in real use, fixed data in tests), subscribes
to its events and keeps them in a bounded buffer that the app drains a few
times a second, so hundreds of requests per second cost the screen a handful
of redraws. `PanelState` is the panel's view of the world: the status (with
the backend's folded metrics), a bounded window of recent records, the
requests in flight and the services' logs. Nothing here draws, and nothing
here computes a metric: tokens/s, TTFT and rates come folded from the backend.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.control import BridgeControl, StreamOpened
from backend.events import (
    LogLine,
    RequestFinished,
    RequestProgress,
    RequestRecord,
    RequestStarted,
    ServiceStateChanged,
)
from tui.format import Phase

ROW_WINDOW = 500  # newest rows the panel keeps; older ones stay in SQLite


class PanelBridge:
    """Owns the control interface and the event buffer between it and the UI."""

    def __init__(self, control: BridgeControl, *, buffer: int = 20_000) -> None:
        self.control = control
        self._buffer: deque[Any] = deque(maxlen=buffer)  # bounded: a stalled UI drops the oldest
        self._lock = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self.dropped = 0

    def start(self) -> None:
        """Subscribe (on the app's running loop: an HTTP client starts its event stream there)."""
        if self._unsubscribe is None:
            self._unsubscribe = self.control.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: Any) -> None:
        # May run on another thread: append and swap under one lock, so drain() never loses an event.
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(event)

    def drain(self) -> list[Any]:
        """Take every buffered event (UI thread, on a timer)."""
        with self._lock:
            if not self._buffer:
                return []
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
    progress: dict[str, RequestProgress] = field(default_factory=dict)  # latest, per request in flight
    logs: dict[str, deque[str]] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)  # lines ever seen (the deques are bounded)
    # what the panel knows is under way per service ("restarting", "stopping", ...), shown over its state
    activity: dict[str, str] = field(default_factory=dict)
    reconnected: bool = False  # the event stream came back: the records missed meanwhile need fetching
    _ids: set[str] = field(default_factory=set)  # ids in `records`: a record seen twice is kept once

    def seed(self, records: list[RequestRecord]) -> None:
        """History (newest first), so the panel opens with what happened before; merged by id."""
        merged = {r.id: r for r in self.records}
        for r in records:
            merged.setdefault(r.id, r)
        ordered = sorted(merged.values(), key=lambda r: r.started_at, reverse=True)[:ROW_WINDOW]
        self.records = deque(ordered, maxlen=ROW_WINDOW)
        self._ids = {r.id for r in ordered}

    def _add(self, r: RequestRecord) -> bool:
        if r.id in self._ids:
            return False
        if len(self.records) == self.records.maxlen:
            self._ids.discard(self.records[-1].id)
        self.records.appendleft(r)
        self._ids.add(r.id)
        return True

    def apply(self, events: list[Any]) -> list[RequestRecord]:
        """Fold a batch in; return the records that finished in it."""
        finished: list[RequestRecord] = []
        for ev in events:
            if isinstance(ev, RequestStarted):
                self.in_flight[ev.id] = ev
            elif isinstance(ev, RequestProgress):
                if ev.id in self.in_flight:
                    self.progress[ev.id] = ev
            elif isinstance(ev, RequestFinished):
                self.in_flight.pop(ev.record.id, None)
                self.progress.pop(ev.record.id, None)
                if self._add(ev.record):
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
            elif isinstance(ev, StreamOpened):
                self.in_flight = {e.id: e for e in ev.in_flight}
                self.progress = {p.id: p for p in ev.progress if p.id in self.in_flight}
                self.reconnected = self.reconnected or ev.reconnected
        if len(self.in_flight) > 10_000:  # a lost RequestFinished must not grow this forever
            self.in_flight.clear()
            self.progress.clear()
        return finished

    def seed_log(self, service: str, lines: list[str]) -> None:
        """A service's earlier lines, before the ones that arrived as events."""
        seen = list(self.logs.get(service, ()))
        self.logs[service] = deque([*lines, *seen], maxlen=2000)
        self.log_counts[service] = self.log_counts.get(service, 0) + len(lines)

    def _log(self, service: str, line: str) -> None:
        self.logs.setdefault(service, deque(maxlen=2000)).append(line)
        self.log_counts[service] = self.log_counts.get(service, 0) + 1

    @property
    def metrics(self) -> dict[str, Any]:
        """The backend's folded metrics (`backend.metrics.MetricsSnapshot.to_dict()`), {} before the first status."""
        return self.status.get("metrics") or {}

    def live(
        self, limit: int, match: Callable[[RequestRecord], bool] | None = None
    ) -> list[tuple[RequestRecord, Phase]]:
        """The newest requests (in flight and finished), newest first, as (record, phase).

        Phase is "done" for a finished request; for one under way (a record with no
        status and its duration so far) it is its latest `RequestProgress` (llama-server
        reading the prompt, or generating), or "waiting" before any."""
        now = self.clock()
        rows: list[tuple[RequestRecord, Phase]] = []
        for ev in self.in_flight.values():
            r = RequestRecord(id=ev.id, started_at=ev.started_at, method=ev.method, path=ev.path,
                              session_id=ev.session_id, requested_model=ev.requested_model,
                              routed_backend=ev.routed_backend, duration_ms=max(0.0, now - ev.started_at) * 1000)
            if match is None or match(r):
                rows.append((r, self.progress.get(ev.id, "waiting")))
        done = 0
        for r in self.records:
            if done >= limit:
                break
            if r.id not in self.in_flight and (match is None or match(r)):
                rows.append((r, "done"))
                done += 1
        rows.sort(key=lambda row: (row[0].started_at, row[0].id), reverse=True)
        return rows[:limit]

    def shown_state(self, svc: dict[str, Any]) -> str:
        """The state a card shows: an action under way wins over the service's last state; a ready
        llama-server that ccbridge is warming (backend.proxy.warm) shows `warming 45%`."""
        name = str(svc.get("name"))
        if name in self.activity:
            return self.activity[name]
        warming = (self.status.get("warming") or {}).get(name.removeprefix("llama:")) \
            if name.startswith("llama:") and svc.get("state") == "ready" else None
        if isinstance(warming, dict):
            return f"warming {round(100 * (warming.get('share') or 0.0))}%"
        return str(svc.get("state", "?"))

    def service(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.status.get("services", []) if s.get("name") == name), None)
