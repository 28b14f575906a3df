"""What the backend monitor knows at one moment: frozen, typed, JSON-ready.

A `MonitorSnapshot` is built by `BackendMonitor` (sampler.py) from the probes
in this package and handed to readers unchanged: the status API returns
`snapshot.to_dict()` as `status()["monitor"]`, `ccbridge doctor` prints from
it, the panel's GPU screen draws it. Every value a probe could not read is
`None` (shown as missing), never an exception and never a made-up zero.

Units: times are unix seconds (`*_at`) or seconds (`*_s`), durations of
requests are milliseconds (`*_ms`), memory and sizes are bytes, speeds are
tokens per second (`*_tps`), shares and progress are fractions 0..1,
percentages are 0..100 (`*_percent`).

The parts: `backend_status.py` (one llama-server), `machine_status.py` (GPUs
and host), and here the cache report, advice and chart series.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

from backend.monitor.backend_status import BackendStatus
from backend.monitor.machine_status import GpuStatus, HostStatus

AdviceLevel = Literal["error", "warn", "info"]


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Prompt-cache share folded from finished requests (backend leg's timings).

    `cached_tokens` is llama-server's `timings.cache_n`, `prompt_tokens`
    `cache_n + prompt_n` (the whole prompt the server saw).
    """

    key: str
    """The backend name (per-backend rows) or the Claude Code session id (per-session rows)."""
    backend: str | None
    """Backend the requests went to (the last one, for a session)."""
    session_id: str | None
    """X-Claude-Code-Session-Id; None for per-backend rows."""
    requests: int
    """Requests that carried llama-server timings."""
    prompt_tokens: int
    """Sum of prompt tokens the server saw (cached + processed)."""
    cached_tokens: int
    """Sum of prompt tokens served from the KV cache."""
    share: float | None
    """cached_tokens / prompt_tokens over all requests, None when no prompt tokens."""
    last_share: float | None
    """Share of the most recent request."""
    later_share: float | None
    """Share over requests after the first of each session (what a warm cache should serve)."""
    prompt_tps: float | None
    """Mean llama-server prompt speed (timings.prompt_per_second) over the requests."""
    ttft_ms: float | None
    """Median time to first token seen by the client."""
    last_ttft_ms: float | None
    """Time to first token of the most recent request."""
    low_turns: int = 0
    """Later turns (not a session's first) whose share was under 50%."""
    first_share: float | None = None
    """Share over the first turns of sessions that came after another session's prompt on the same
    backend: what a new session (or a subagent) took from the previous one's cache."""
    missed_first_turns: int = 0
    """Such first turns that served (nearly) nothing from cache (under 5%)."""
    reason: str | None = None
    """Why the share was low on a later turn, when it can be told."""
    fix: str | None = None
    """What to change for that reason."""
    last_at: float | None = None
    """Start time of the most recent request."""


@dataclass(frozen=True, slots=True)
class CacheReport:
    """Cache shares per backend and per Claude Code session (newest sessions first)."""

    by_backend: tuple[CacheStats, ...] = ()
    """One row per backend."""
    by_session: tuple[CacheStats, ...] = ()
    """One row per session id, newest first (bounded)."""


@dataclass(frozen=True, slots=True)
class Advice:
    """One thing to change, with the fix."""

    level: AdviceLevel
    """error: requests will fail; warn: they will be slow or fail later; info: worth knowing."""
    code: str
    """Stable id, e.g. "ctx_too_small", "ctx_below_compact", "no_metrics", "no_slots",
    "ngl_partial", "gpu_mem_full", "request_context_exceeded", "cache_low", "swa_no_full"."""
    text: str
    """What is wrong, with the numbers."""
    fix: str
    """What to do about it."""
    backend: str | None = None
    """The backend it is about (None for machine-wide advice)."""


@dataclass(frozen=True, slots=True)
class Series:
    """A short history for a chart: parallel lists of times and values."""

    key: str
    """Stable id: "backend:<name>:gen_tps", "backend:<name>:prompt_tps", "backend:<name>:busy_slots",
    "backend:<name>:cpu_percent", "backend:<name>:rss_bytes", "gpu:<index>:util_percent",
    "gpu:<index>:mem_used_bytes", "host:cpu_percent"."""
    unit: str
    """"tok/s", "%", "bytes", "slots"."""
    t: tuple[float, ...]
    """Sample times (unix seconds), oldest first."""
    v: tuple[float | None, ...]
    """Values, None where the sample had no value."""


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """Everything the backend monitor knows now: `status()["monitor"]`."""

    taken_at: float | None
    """When the newest sample finished (None before the first)."""
    interval_s: float
    """Sampling interval."""
    backends: tuple[BackendStatus, ...] = ()
    """One per configured backend, in config order."""
    gpu: GpuStatus = field(default_factory=GpuStatus)
    """GPU telemetry or the no-GPU state."""
    host: HostStatus = field(default_factory=HostStatus)
    """Machine CPU and memory."""
    cache: CacheReport = field(default_factory=CacheReport)
    """Prompt-cache shares."""
    advice: tuple[Advice, ...] = ()
    """Advice, most severe first."""
    history: tuple[Series, ...] = ()
    """Chart series over the last few minutes."""
    sampling: bool = False
    """True while the background sampler runs."""
    last_error: str | None = None
    """A sampler failure, if the last sample broke (the previous data stays)."""

    def backend(self, name: str) -> BackendStatus | None:
        """The status of the backend called `name`, if monitored."""
        return next((b for b in self.backends if b.name == name), None)

    def series(self, key: str) -> Series | None:
        """The history series with this key, if any."""
        return next((s for s in self.history if s.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists; derived properties added).

        Computed once per snapshot (the status API asks often, on the proxy's
        loop); each call returns a fresh top-level dict over shared inner values,
        which readers must not mutate.
        """
        global _LAST_DICT
        cached = _LAST_DICT
        if cached is not None and cached[0] is self:
            return dict(cached[1])
        data: dict[str, Any] = _plain(self)
        for dev, dev_dict in zip(self.gpu.devices, data["gpu"]["devices"], strict=True):
            dev_dict["mem_fraction"] = dev.mem_fraction
        data["gpu"]["no_telemetry"] = self.gpu.no_telemetry
        _LAST_DICT = (self, data)
        return dict(data)


_LAST_DICT: tuple[MonitorSnapshot, dict[str, Any]] | None = None
_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts to JSON types (faster than dataclasses.asdict, which deep-copies)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, tuple | list):
        if all(isinstance(v, _SCALARS) for v in value):
            return list(value)
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value
