"""Run the backend on its own thread and event loop, for a caller that has its own (the panel).

`BridgeThread` is the synchronous, thread-safe face of `Bridge`: every method
may be called from any thread; work is handed to the backend's loop and the
caller waits for the answer (bounded). Rendering therefore never adds latency
to proxied requests, and a busy proxy never blocks the caller's loop for long.

Events are delivered on the backend thread: a listener must only hand them
over (Textual's `post_message` is thread-safe), never draw.
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
from backend.events import Listener, RequestRecord

T = TypeVar("T")
_CALL_TIMEOUT = 30.0


class BridgeThread:
    """A `Bridge` running on a background thread; the façade the panel uses."""

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
                self._call(self._bridge.stop(), timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._stopped.wait(timeout)

    # -- calls -----------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = _CALL_TIMEOUT) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the backend is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _sync(self, fn: Callable[[], T], timeout: float = _CALL_TIMEOUT) -> T:
        async def run() -> T:
            return fn()

        return self._call(run(), timeout)

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

    def status(self) -> dict[str, Any]:
        """Services, aliases, backends, unknown models (read on the backend loop)."""
        return self._sync(self.bridge.status)

    def recent(self, limit: int = 100, **filters: Any) -> list[RequestRecord]:
        """Request history, newest first (the store is thread-safe: no hop needed)."""
        return self.bridge.recent(limit, **filters)

    def record(self, request_id: str) -> RequestRecord | None:
        return self.bridge.history.get(request_id)

    def log_tail(self, service: str, n: int = 200) -> list[str]:
        return self._sync(lambda: self.bridge.log_tail(service, n))

    def restart_service(self, name: str, timeout: float = 180.0) -> None:
        self._call(self.bridge.restart_service(name), timeout)

    def stop_service(self, name: str) -> None:
        self._call(self.bridge.stop_service(name))

    def start_service(self, name: str) -> None:
        self._call(self.bridge.start_service(name))

    def enable_swa_full(self, backend: str, timeout: float = 180.0) -> tuple[str, ...]:
        """Add --swa-full to a managed backend's command in ccbridge.yaml and restart it."""
        return self._call(self.bridge.enable_swa_full(backend), timeout)

    def save_aliases(self, aliases: list[tuple[str, str]], timeout: float = 180.0) -> Config:
        """Validate, save (comments kept) and apply; raises ConfigError with the reason."""
        return self._call(self.bridge.save_aliases(aliases), timeout)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()
