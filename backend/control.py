"""The one control interface of a running bridge.

`BridgeControl` is what anything that watches or drives ccbridge may ask:
the panel, the JSON API, `ccbridge export`, tests. `backend.bridge.Bridge`
implements it in the serving process; `backend.api.client.BridgeClient`
implements it over HTTP (the panel attached to a `ccbridge serve`, here or
through an SSH tunnel). The HTTP API (`backend.api.server`) serves it. The
method list is written here once; the others only implement it.

Every call is a coroutine: in the serving process they run on the bridge's
event loop (blocking work such as SQLite reads and fsynced config writes is
moved to a thread there), over HTTP they are requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from backend.events import Event, RequestProgress, RequestRecord, RequestStarted
from backend.store.history import RequestBodies

Alias = tuple[str, str]
"""(pattern, target) in file order."""


class ServiceNotFound(KeyError):
    """No service of that name here (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such service"


class ConfigNotApplied(RuntimeError):
    """A valid config could not be put in force (LiteLLM did not start with it); the running one is kept."""


class ControlUnavailable(ConnectionError):
    """The bridge cannot be reached or answered something unexpected; the message says which and what to do."""


class ControlUnreachable(ControlUnavailable):
    """Nothing answers at the bridge's address (no `ccbridge serve` there, or the tunnel is down)."""


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The event stream of a bridge reached over HTTP (re)connected; `in_flight` are the requests
    under way at that moment.

    Not a bridge event: `backend.api.client.BridgeClient` hands it to its listeners
    before the events that follow, so they can drop what they thought was in
    flight and, when `reconnected`, fetch the history they missed."""

    in_flight: tuple[RequestStarted, ...]
    reconnected: bool
    progress: tuple[RequestProgress, ...] = ()


ControlEvent = Event | StreamOpened
"""What a `BridgeControl` listener may receive."""


@runtime_checkable
class BridgeControl(Protocol):
    """Status, history, aliases, services, logs and live events of one bridge."""

    async def status(self) -> dict[str, Any]:
        """Services, aliases, backends, unknown models, metrics (`backend.metrics`), the monitor."""
        ...

    async def recent(self, limit: int = 100, *, model: str | None = None, status: int | str | None = None,
                     session_id: str | None = None, since: float | None = None) -> list[RequestRecord]:
        """Finished requests, newest first; `status` is a code or "error"; `since` is unix time."""
        ...

    async def record(self, request_id: str) -> RequestRecord | None:
        """One finished request, or None."""
        ...

    async def bodies(self, request_id: str) -> RequestBodies | None:
        """The request body as the client sent it and the answer (each cut at `history.body_max_kb`,
        secrets blanked), or None: bodies are not kept (`history.bodies: false`) or are gone."""
        ...

    async def in_flight(self) -> list[RequestStarted]:
        """Requests under way now, oldest first."""
        ...

    async def progress(self) -> list[RequestProgress]:
        """The latest progress (prompt read so far, or generating) of each request under way."""
        ...

    async def aliases(self) -> list[Alias]:
        """The alias table in file order."""
        ...

    async def session_status(self, session_id: str | None) -> dict[str, Any]:
        """One Claude Code session now (`ccbridge statusline`): its request in flight (`request`:
        phase, prompt progress) else its last (`last`), the backend's model, health and context
        (`backend`), LiteLLM's and the backend's service states (`services`)."""
        ...

    async def save_aliases(self, aliases: list[Alias]) -> list[Alias]:
        """Validate, write ccbridge.yaml (comments kept), apply to the next request; returns the table
        now in force. Raises `backend.config.ConfigError` with the reason (nothing written)."""
        ...

    async def restart_service(self, name: str) -> None:
        """Restart a service ("litellm", "llama:<backend>"); raises ServiceNotFound."""
        ...

    async def stop_service(self, name: str) -> None:
        """Stop a service; raises ServiceNotFound."""
        ...

    async def start_service(self, name: str) -> None:
        """Start a stopped service; raises ServiceNotFound."""
        ...

    async def log_tail(self, service: str, n: int = 200) -> list[str]:
        """The last lines of a service's log ("proxy" is ccbridge's own)."""
        ...

    async def enable_swa_full(self, backend: str) -> tuple[str, ...]:
        """Add `--swa-full` to a ccbridge-run llama-server's command (ccbridge.yaml, comments kept) and
        restart it; returns the services restarted. Raises `backend.config.ConfigError` with the reason."""
        ...

    async def probe_models(self) -> list[dict[str, Any]]:
        """Probe each idle backend's model for the scorecard (tools, tool calls, thinking, context,
        sliding window), once per model setup; returns every card (backend.monitor.scorecard)."""
        ...

    def subscribe(self, listener: Callable[[ControlEvent], None]) -> Callable[[], None]:
        """Call `listener` with every event from now on; returns the call that stops it.

        The listener must only hand the event over (it may run on the proxy's loop)."""
        ...
