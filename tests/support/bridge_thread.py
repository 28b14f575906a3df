"""A `Bridge` on its own thread and event loop, for tests that drive it from synchronous code.

The panel no longer runs the bridge in its process (it is a client of
`ccbridge serve`); tests that send traffic with blocking clients (hypothesis,
httpx) still want the real bridge beside them. `call(lambda b: b.status())`
runs any `BridgeControl` call on the bridge's loop and waits for it, so the
method list is not written again here.

Events are delivered on the backend thread: a listener must only hand them over.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from backend.bridge import Bridge
from backend.config.model import Config
from backend.events import Listener

T = TypeVar("T")
_CALL_TIMEOUT = 30.0


class BridgeThread:
    """A `Bridge` running on a background thread."""

    def __init__(self, config: Config, **bridge_kw: Any) -> None:
        self._config = config
        self._bridge_kw = bridge_kw
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bridge: Bridge | None = None
        self._listeners: list[Listener] = []
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------
    def subscribe(self, listener: Listener) -> None:
        """Add a listener before `start()` (it sees every event from the first one)."""
        self._listeners.append(listener)

    def start(self, timeout: float = 30.0) -> None:
        """Start the thread and the bridge; return when the proxy accepts connections.

        Raises what `Bridge` raises (StartupError, ConfigError) in the caller's thread.
        """
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="ccbridge-backend", daemon=True)
        self._thread.start()
        ready.result(timeout)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = _new_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_bridge(ready))
            if ready.exception() is None:
                loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    async def _start_bridge(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            bridge = Bridge(self._config, **self._bridge_kw)
            for listener in self._listeners:
                bridge.subscribe(listener)
            await bridge.start()
            self._bridge = bridge
            ready.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of start()
            ready.set_exception(exc)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop LiteLLM and every server, then the thread. Idempotent."""
        loop = self._loop
        if loop is None or self._stopped.is_set():
            return
        if self._bridge is not None:
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(self._bridge.stop(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._stopped.wait(timeout)

    # -- calls -----------------------------------------------------------------
    def call(self, fn: Callable[[Bridge], Coroutine[Any, Any, T]], timeout: float = _CALL_TIMEOUT) -> T:
        """Run `fn(bridge)` on the backend's loop and wait for its result (any BridgeControl call)."""
        if self._loop is None or self._bridge is None:
            raise RuntimeError("the backend is not running")
        return asyncio.run_coroutine_threadsafe(fn(self._bridge), self._loop).result(timeout)

    @property
    def bridge(self) -> Bridge:
        if self._bridge is None:
            raise RuntimeError("the backend is not running")
        return self._bridge

    @property
    def proxy_url(self) -> str:
        return self.bridge.proxy_url

    @property
    def config(self) -> Config:
        return self.bridge.config


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
