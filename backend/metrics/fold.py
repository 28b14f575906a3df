"""Request metrics, folded once from the event stream.

`RequestMetrics` listens to the bridge's events and keeps what every reader
shows: tokens per second in and out over a window, requests per minute, time
to first token p50/p95, requests in flight, and cumulative counters per model,
route and status with TTFT and duration histograms. The status API returns
`snapshot().to_dict()` as `status()["metrics"]`, the panel draws it, `serve`
prints it, and the Prometheus exporter (`backend.metrics.prometheus`) reads
the counters: one fold, the same numbers everywhere.

Thread-safe: events arrive on the proxy's loop, readers may be anywhere; every
call takes one short lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from backend.events import Event, RequestFinished, RequestProgress, RequestRecord, RequestStarted

WINDOW_S = 300
"""The window of the charts and of TTFT percentiles (five minutes)."""
BUCKET_S = 5
"""Seconds per chart point."""
RATE_S = 60
"""Tokens per second and requests per minute are measured over the last minute."""
TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
DURATION_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_MODELS = 50
"""Distinct model labels kept; clients choose model names, so the rest count as "other"."""
UNROUTED = "-"


@dataclass(frozen=True, slots=True)
class LabelCounts:
    """Cumulative counts for one (model, route, status) since the bridge started."""

    model: str
    route: str
    status: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    hung_up: int = 0
    tool_repairs: int = 0  # tool calls written as text that were sent as tool_use blocks


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative histogram for one (model, route): counts per upper bound (seconds), +Inf last."""

    model: str
    route: str
    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # cumulative, len(bounds) + 1
    total: float  # sum of observations, seconds


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """What the panel, the status API, `serve` and Prometheus show, at one moment."""

    taken_at: float
    window_s: int
    bucket_s: int
    output_tps_series: tuple[float, ...]
    """Output tokens per second in each bucket of the window, oldest first."""
    prompt_tps_series: tuple[float, ...]
    """Prompt (input) tokens per second in each bucket, oldest first."""
    output_tps: float
    """Output tokens per second over the last minute."""
    prompt_tps: float
    """Prompt tokens per second over the last minute."""
    requests_per_min: int
    """Requests that finished in the last minute."""
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    """Time to first token over the requests that finished within the window (None: none had one)."""
    in_flight: int
    """Requests started and not yet finished."""
    requests_total: int
    """Requests finished since the bridge started."""
    errors_total: int
    """Of those, the ones with status >= 400 or an error."""
    started_at: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Totals:
    __slots__ = ("requests", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
                 "hung_up", "tool_repairs")

    def __init__(self) -> None:
        self.requests = self.input_tokens = self.output_tokens = 0
        self.cache_read_tokens = self.cache_creation_tokens = self.hung_up = self.tool_repairs = 0


class _Hist:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def cumulative(self) -> tuple[int, ...]:
        out, running = [], 0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of unsorted `values` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class RequestMetrics:
    """The fold. Subscribe `on_event` to the bridge's bus; read `snapshot()` and the counters.

    `route_of(backend)` names the route a backend's requests take ("native",
    "litellm", "external"); requests that were never routed count under "-".
    """

    def __init__(self, *, route_of: Callable[[str | None], str] = lambda backend: UNROUTED,
                 clock: Callable[[], float] = time.time, window_s: int = WINDOW_S, bucket_s: int = BUCKET_S) -> None:
        self._route_of = route_of
        self._clock = clock
        self.window_s, self.bucket_s = window_s, bucket_s
        self.started_at = clock()
        self._lock = threading.Lock()
        # per unix second the request ended: [output tokens, prompt tokens, requests]
        self._seconds: dict[int, list[int]] = {}
        self._oldest: int | None = None  # the smallest key of _seconds (kept, so a trim need not scan it)
        self._ttft: deque[tuple[float, float]] = deque(maxlen=20_000)  # (end time, ttft ms)
        self._in_flight: dict[str, RequestStarted] = {}
        self._progress: dict[str, RequestProgress] = {}
        self._totals: dict[tuple[str, str, str], _Totals] = {}
        self._ttft_hist: dict[tuple[str, str], _Hist] = {}
        self._duration_hist: dict[tuple[str, str], _Hist] = {}
        self._models: set[str] = set()
        self.requests_total = 0
        self.errors_total = 0

    # -- input ---------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        """The bus listener: quick, never raises on odd records."""
        if isinstance(event, RequestStarted):
            with self._lock:
                self._in_flight[event.id] = event
                if len(self._in_flight) > 10_000:  # a lost RequestFinished must not grow this forever
                    self._progress.pop(next(iter(self._in_flight)), None)
                    self._in_flight.pop(next(iter(self._in_flight)))
        elif isinstance(event, RequestProgress):
            with self._lock:
                if event.id in self._in_flight:
                    self._progress[event.id] = event
        elif isinstance(event, RequestFinished):
            self._finished(event.record)

    def seed(self, records: Iterable[RequestRecord]) -> None:
        """Fill the windows (charts, rates, TTFT) from history, so a restarted bridge shows the last
        minutes; counters start at zero, as Prometheus counters do for a new process."""
        with self._lock:
            for r in records:
                self._window(r)
            self._trim()

    def _finished(self, r: RequestRecord) -> None:
        with self._lock:
            self._in_flight.pop(r.id, None)
            self._progress.pop(r.id, None)
            self._window(r)
            self._trim()
            self.requests_total += 1
            if (r.status is not None and r.status >= 400) or r.error:
                self.errors_total += 1
            model, route = self._model_label(r.requested_model), self._route_of(r.routed_backend)
            if r.routed_backend is None:
                route = UNROUTED
            status = str(r.status) if r.status is not None else "none"
            totals = self._totals.get((model, route, status))
            if totals is None:
                totals = self._totals[(model, route, status)] = _Totals()
            totals.requests += 1
            totals.input_tokens += r.input_tokens or 0
            totals.output_tokens += r.output_tokens or 0
            totals.cache_read_tokens += r.cache_read_tokens or 0
            totals.cache_creation_tokens += r.cache_creation_tokens or 0
            totals.hung_up += 1 if r.client_hung_up else 0
            totals.tool_repairs += r.tool_repairs
            if r.ttft_ms is not None:
                self._hist(self._ttft_hist, model, route, TTFT_BUCKETS_S).observe(r.ttft_ms / 1000)
            if r.duration_ms is not None:
                self._hist(self._duration_hist, model, route, DURATION_BUCKETS_S).observe(r.duration_ms / 1000)

    def _window(self, r: RequestRecord) -> None:
        end = r.started_at + (r.duration_ms or 0) / 1000
        sec = int(end)
        slot = self._seconds.get(sec)
        if slot is None:
            slot = self._seconds[sec] = [0, 0, 0]
            if self._oldest is None or sec < self._oldest:
                self._oldest = sec
        slot[0] += r.output_tokens or 0
        slot[1] += r.input_tokens or 0
        slot[2] += 1
        if r.ttft_ms is not None:
            self._ttft.append((end, r.ttft_ms))

    def _trim(self) -> None:
        horizon = self._clock() - self.window_s - self.bucket_s
        if self._oldest is not None and self._oldest < horizon:
            for sec in [s for s in self._seconds if s < horizon]:
                del self._seconds[sec]
            self._oldest = min(self._seconds, default=None)
        while self._ttft and self._ttft[0][0] < horizon:
            self._ttft.popleft()

    def _model_label(self, model: str | None) -> str:
        if not model:
            return UNROUTED
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    @staticmethod
    def _hist(table: dict[tuple[str, str], _Hist], model: str, route: str, bounds: tuple[float, ...]) -> _Hist:
        hist = table.get((model, route))
        if hist is None:
            hist = table[(model, route)] = _Hist(bounds)
        return hist

    # -- output --------------------------------------------------------------------
    def snapshot(self) -> MetricsSnapshot:
        """The windows and totals now."""
        with self._lock:
            now = self._clock()
            self._trim()
            sec = int(now)
            out_series, prompt_series = [], []
            for start in range(sec - self.window_s, sec, self.bucket_s):
                out = prompt = 0
                for s in range(start + 1, start + self.bucket_s + 1):
                    slot = self._seconds.get(s)
                    if slot is not None:
                        out += slot[0]
                        prompt += slot[1]
                out_series.append(out / self.bucket_s)
                prompt_series.append(prompt / self.bucket_s)
            out = prompt = requests = 0
            for s in range(sec - RATE_S + 1, sec + 1):
                slot = self._seconds.get(s)
                if slot is not None:
                    out += slot[0]
                    prompt += slot[1]
                    requests += slot[2]
            horizon = now - self.window_s
            ttfts = [t for end, t in self._ttft if end >= horizon]
            return MetricsSnapshot(
                taken_at=now, window_s=self.window_s, bucket_s=self.bucket_s,
                output_tps_series=tuple(out_series), prompt_tps_series=tuple(prompt_series),
                output_tps=out / RATE_S, prompt_tps=prompt / RATE_S, requests_per_min=requests,
                ttft_p50_ms=percentile(ttfts, 0.5), ttft_p95_ms=percentile(ttfts, 0.95),
                in_flight=len(self._in_flight), requests_total=self.requests_total,
                errors_total=self.errors_total, started_at=self.started_at,
            )

    def in_flight(self) -> list[RequestStarted]:
        """Requests under way now, oldest first."""
        with self._lock:
            return sorted(self._in_flight.values(), key=lambda e: e.started_at)

    def progress(self) -> list[RequestProgress]:
        """The latest progress of each request under way that reported any."""
        with self._lock:
            return list(self._progress.values())

    def counts(self) -> list[LabelCounts]:
        """Cumulative counters per (model, route, status)."""
        with self._lock:
            return [LabelCounts(m, r, s, t.requests, t.input_tokens, t.output_tokens, t.cache_read_tokens,
                                t.cache_creation_tokens, t.hung_up, t.tool_repairs)
                    for (m, r, s), t in sorted(self._totals.items())]

    def ttft_histograms(self) -> list[Histogram]:
        with self._lock:
            return [Histogram(m, r, h.bounds, h.cumulative(), h.total) for (m, r), h in sorted(self._ttft_hist.items())]

    def duration_histograms(self) -> list[Histogram]:
        with self._lock:
            return [Histogram(m, r, h.bounds, h.cumulative(), h.total)
                    for (m, r), h in sorted(self._duration_hist.items())]


def summary_line(snap: MetricsSnapshot) -> str:
    """One line for `ccbridge serve`'s log: the same numbers as the panel's dashboard."""
    def secs(ms: float | None) -> str:
        return "-" if ms is None else f"{ms / 1000:.2f}s"

    return (f"last minute: {snap.requests_per_min} requests, output {snap.output_tps:.1f} tok/s, "
            f"prompt {snap.prompt_tps:.1f} tok/s; TTFT p50 {secs(snap.ttft_p50_ms)} p95 {secs(snap.ttft_p95_ms)} "
            f"({snap.window_s // 60} min); in flight {snap.in_flight}; {snap.requests_total} since start, "
            f"{snap.errors_total} failed")
