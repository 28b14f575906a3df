"""Connection guard against clients that open a connection and never finish a request.

aiohttp waits for request headers forever, so one slow-loris client can hold
a connection (and a file descriptor) indefinitely. `HeaderDeadline` wraps
aiohttp's protocol and closes a connection whose request headers have not
fully arrived within `timeout` seconds of its first byte (or of connecting).
Request bodies are bounded separately by the front proxy's read timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

_END = b"\r\n\r\n"


class HeaderDeadline(asyncio.Protocol):
    """Forwards everything to aiohttp's RequestHandler; closes stalled header reads."""

    def __init__(self, inner: Any, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""
        self.closed_stalled = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._timer is not None:
            # Only the first request's headers are timed; after that aiohttp's own
            # keep-alive timeout covers idle connections.
            window = self._tail + data
            if _END in window:
                self._timer.cancel()
                self._timer = None
            else:
                self._tail = window[-3:]
        self._inner.data_received(data)

    def _expire(self) -> None:
        self._timer = None
        self.closed_stalled = True
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedServer:
    """Protocol factory for aiohttp's site: aiohttp's handler wrapped in a HeaderDeadline."""

    def __init__(self, server: Any, timeout: float) -> None:
        self._server = server
        self._timeout = timeout

    def __call__(self) -> HeaderDeadline:
        return HeaderDeadline(self._server(), self._timeout)

    def __getattr__(self, name: str) -> Any:  # shutdown(), connections, ... stay aiohttp's
        return getattr(self._server, name)
