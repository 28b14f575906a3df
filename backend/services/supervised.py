"""What every supervised child service shares: states, events, log, supervision task.

`LiteLLMService` and `LlamaServerService` differ in how they start and
restart (blue/green against stop-then-start); the bookkeeping is here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import psutil

from backend.events import EventBus, LogLine, ServiceStateChanged
from backend.redaction import redact, redact_optional
from backend.services.process import LogBuffer

# States a service moves through; the panel and the status API show them.
STOPPED, INSTALLING, STARTING, READY, CRASHED, STOPPING = (
    "stopped", "installing", "starting", "ready", "crashed", "stopping",
)
RESTARTING = "restarting"
"""A zero-loss restart in progress: the running instance keeps serving meanwhile."""
FAILED = "failed"
"""Stopped for good after a failure that retrying cannot fix; a restart (panel, API) tries again."""
SAME_EXIT_LIMIT = 3
"""This many exits in a row that look the same turn a crash loop into FAILED."""
STABLE_AFTER = 60.0
"""An instance that served this many seconds before it exited breaks a streak of same exits."""
_BACKOFF = (0.0, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # the first crash restarts at once


def backoff(failures: int) -> float:
    """Seconds to wait before restart number `failures` (1-based) after crashes."""
    return _BACKOFF[min(max(failures, 1) - 1, len(_BACKOFF) - 1)]


class PermanentFailure(RuntimeError):
    """A start failure that waiting and retrying will not fix; the message says what to do."""


class ExitStreak:
    """Counts a service's exits in a row that look the same (a crash loop, not bad luck).

    Two exits look the same when their reasons match once numbers other than the
    exit code are blanked out (ports, pids and timestamps differ between attempts,
    the cause does not).
    """

    def __init__(self) -> None:
        self._last: str | None = None
        self.count = 0

    @staticmethod
    def signature(reason: str) -> str:
        return re.sub(r"(code -?\d+)|\d+", lambda m: m.group(1) or "#", reason)

    def add(self, reason: str) -> int:
        """Record one exit; return how many in a row looked like this one."""
        sig = self.signature(reason)
        self.count = self.count + 1 if sig == self._last else 1
        self._last = sig
        return self.count

    def reset(self) -> None:
        self._last, self.count = None, 0


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

    def __post_init__(self) -> None:  # the status API and the panel show these: no secret in them
        object.__setattr__(self, "last_error", redact_optional(self.last_error))
        object.__setattr__(self, "log_tail", tuple(redact(line) for line in self.log_tail))


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

    def _give_up(self, reason: str) -> None:
        """Enter FAILED: say once what is wrong and what to do; nothing restarts it but a user."""
        self.last_error = (f"{reason.rstrip(' .')}. ccbridge stopped retrying: fix that, then restart {self.name} "
                           f"(panel: Services, r; or POST /ccbridge/api/services/{self.name}/restart).")
        self._set_state(FAILED, self.last_error)

    async def _crashed(self, failures: int) -> None:
        """Count a crash, say why, and wait the back-off before the next start."""
        self.restarts += 1
        delay = backoff(failures)
        self._set_state(CRASHED, f"{self.last_error} (restarting in {delay:.0f} s)")
        await asyncio.sleep(delay)
