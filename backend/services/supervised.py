"""What every supervised child service shares: states, events, log, supervision task.

`LiteLLMService` and `LlamaServerService` differ in how they start and
restart (blue/green against stop-then-start); the bookkeeping is here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import psutil

from backend.events import EventBus, LogLine, ServiceStateChanged
from backend.services.process import LogBuffer

# States a service moves through; the panel and the status API show them.
STOPPED, INSTALLING, STARTING, READY, CRASHED, STOPPING = (
    "stopped", "installing", "starting", "ready", "crashed", "stopping",
)
RESTARTING = "restarting"
"""A zero-loss restart in progress: the running instance keeps serving meanwhile."""
_BACKOFF = (0.0, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # the first crash restarts at once


def backoff(failures: int) -> float:
    """Seconds to wait before restart number `failures` (1-based) after crashes."""
    return _BACKOFF[min(max(failures, 1) - 1, len(_BACKOFF) - 1)]


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A snapshot for the status API and the panel."""

    name: str
    state: str
    pid: int | None
    port: int | None
    url: str | None
    restarts: int
    started_at: float | None
    state_since: float
    version: str | None
    last_error: str | None
    log_tail: tuple[str, ...]


def port_owner(port: int) -> psutil.Process | None:
    """The local process listening on 127.0.0.1:port, if one can be seen."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    return psutil.Process(conn.pid)
    return None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class SupervisedService:
    """State, state events, a redacting log and the supervision task of one service."""

    name: str

    def __init__(self, name: str, bus: EventBus) -> None:
        self.name = name
        self._bus = bus
        self.log = LogBuffer()
        self.state = STOPPED
        self.state_since = time.time()
        self.last_error: str | None = None
        self.restarts = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    def _set_state(self, state: str, detail: str | None = None) -> None:
        self.state = state
        self.state_since = time.time()
        self._bus.publish(ServiceStateChanged(self.name, state, detail, time.time()))

    def _line(self, line: str) -> None:
        self._bus.publish(LogLine(self.name, self.log.add(line), time.time()))

    @property
    def supervising(self) -> bool:
        return self._supervisor is not None and not self._supervisor.done()

    def _supervise_with(self, coro: Coroutine[Any, Any, None]) -> None:
        self._stopping = False
        self._supervisor = asyncio.create_task(coro, name=f"{self.name}-supervisor")

    async def _end_supervision(self) -> None:
        """Stop restarting the service (its process is stopped by the caller)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None

    async def _crashed(self, failures: int) -> None:
        """Count a crash, say why, and wait the back-off before the next start."""
        self.restarts += 1
        delay = backoff(failures)
        self._set_state(CRASHED, f"{self.last_error} (restarting in {delay:.0f} s)")
        await asyncio.sleep(delay)
