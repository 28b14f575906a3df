"""Typed events that flow from the proxy to the store, metrics and listeners.

Every event is a frozen dataclass: it is built once and handed to several
listeners (SQLite writer, metrics, the TUI bridge, the JSON API) that must not
be able to change it under each other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from backend.redaction import redact

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One client request as ccbridge saw it, from arrival to last byte."""

    id: str
    started_at: float  # unix time, seconds
    method: str
    path: str
    session_id: str | None = None  # X-Claude-Code-Session-Id
    client_version: str | None = None  # from the user agent, e.g. "claude-cli/2.1.197"
    requested_model: str | None = None
    alias_rule: str | None = None  # the pattern that matched
    routed_backend: str | None = None
    routed_model: str | None = None
    status: int | None = None  # HTTP status sent to the client
    stream: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    ttft_ms: float | None = None  # time to the first content delta
    duration_ms: float | None = None
    output_tps: float | None = None  # output tokens per second after the first token
    backend_prompt_tps: float | None = None  # llama-server timings.prompt_per_second
    backend_gen_tps: float | None = None  # llama-server timings.predicted_per_second
    backend_prompt_n: int | None = None  # timings.prompt_n (tokens processed, not cached)
    backend_cache_n: int | None = None  # timings.cache_n (prompt tokens served from cache)
    backend_calls: int = 0  # calls the backend leg saw for this request (LiteLLM retries)
    stop_reason: str | None = None
    client_hung_up: bool = False
    error: str | None = None
    subagent: bool = False  # a Claude Code subagent's request (its billing line said so)
    cache_share: float | None = None  # share of the prompt llama-server served from its cache (0..1)
    miss_reason: str | None = None  # why it took clearly less from cache than it should have (proxy.misses)
    tool_repairs: int = 0  # tool calls the model wrote as text that ccbridge sent as tool_use blocks
    repaired_text: str | None = None  # the text those calls were written as (cut at 4,000 characters)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A request was accepted and routed; sent before the upstream answers."""

    id: str
    started_at: float
    method: str
    path: str
    requested_model: str | None
    routed_backend: str | None
    session_id: str | None


@dataclass(frozen=True, slots=True)
class RequestProgress:
    """How far a request in flight has got: llama-server reading its prompt, or generating.

    `prefill`: `prompt_done` of `prompt_total` prompt tokens read (`prompt_cached` of them
    from llama-server's cache), `eta_s` the estimated seconds left at the speed so far.
    `generating`: the first token has arrived (sent once)."""

    id: str
    phase: str  # "prefill" or "generating"
    at: float
    prompt_total: int | None = None
    prompt_done: int | None = None
    prompt_cached: int | None = None
    eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """A request ended (any outcome); carries the full record."""

    record: RequestRecord


@dataclass(frozen=True, slots=True)
class UnknownModel:
    """A client asked for a model that no alias matched."""

    model: str
    at: float


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """A telemetry or connectivity probe answered locally (never forwarded)."""

    path: str
    method: str
    at: float


@dataclass(frozen=True, slots=True)
class ServiceStateChanged:
    """A supervised service moved to a new state (starting, ready, ...)."""

    service: str
    state: str
    detail: str | None
    at: float

    def __post_init__(self) -> None:  # a detail may hold a command line: secrets never leave in one
        if self.detail is not None:
            object.__setattr__(self, "detail", redact(self.detail))


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a service's output (LiteLLM's stdout, the proxy's events)."""

    service: str
    line: str
    at: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "line", redact(self.line))


@dataclass(frozen=True, slots=True)
class ConfigApplied:
    """A new configuration took effect (file edit or API)."""

    path: str
    at: float
    restarted: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class WarmupFinished:
    """ccbridge replayed a kept prompt to a llama-server that came up cold (backend.proxy.warm):
    not a user request, so never a request record and never in the request metrics."""

    backend: str
    family: str
    at: float
    duration_ms: float
    prompt_tokens: int | None
    cached_tokens: int | None
    cancelled: bool = False  # a user request arrived and went first
    error: str | None = None


Event = (
    RequestStarted
    | RequestProgress
    | RequestFinished
    | UnknownModel
    | ProbeAnswered
    | ServiceStateChanged
    | LogLine
    | ConfigApplied
    | WarmupFinished
)
Listener = Callable[[Event], None]


LISTENER_ERROR_EVERY = 30.0
"""Seconds between two log lines about the same failing listener (the count between them is kept)."""


class EventBus:
    """Fan-out of events to listeners.

    Listeners are called synchronously on the publishing thread; they must be
    quick and must not raise. One that raises does not stop the others (or the
    proxy): the error is counted (`listener_errors`, in the status API and
    /metrics) and logged with its traceback, at most once per listener every
    `LISTENER_ERROR_EVERY` seconds, with how many were not logged since.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self.listener_errors = 0
        """Exceptions raised by listeners since start."""
        self._reported: dict[str, tuple[float, int]] = {}  # listener -> (last logged, errors not logged since)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners = [*self._listeners, listener]

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = [x for x in self._listeners if x is not listener]

        return unsubscribe

    def publish(self, event: Event) -> None:
        for listener in self._listeners:  # copy-on-write list: no lock on the hot path
            try:
                listener(event)
            except Exception as exc:  # noqa: BLE001 - a listener must never break the proxy (or the others)
                self._listener_failed(listener, event, exc)

    def _listener_failed(self, listener: Listener, event: Event, exc: Exception) -> None:
        name = getattr(listener, "__qualname__", None) or repr(listener)
        now = time.monotonic()
        with self._lock:  # the rare path: publishers on several threads may fail at once
            self.listener_errors += 1
            last, quiet = self._reported.get(name, (-LISTENER_ERROR_EVERY, 0))
            if now - last < LISTENER_ERROR_EVERY:
                self._reported[name] = (last, quiet + 1)
                return
            self._reported[name] = (now, 0)
        more = f" ({quiet} more from it not logged in the last {LISTENER_ERROR_EVERY:.0f} s)" if quiet else ""
        _log.error("event listener %s failed on %s: %s: %s%s", name, type(event).__name__, type(exc).__name__,
                   exc, more, exc_info=exc)
