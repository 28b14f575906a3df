"""`BridgeClient`: the control interface of a `ccbridge serve`, over its HTTP API.

The panel uses it for every call, whether it started that serve itself or
attached to one (here, or on a GPU box through an SSH tunnel). Events arrive
over server-sent events (`/ccbridge/api/events`); when the stream breaks the
client reconnects by itself and tells its listeners with `StreamOpened`, so a
reader can fetch what it missed. No textual here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
from httpx_sse import SSEError, aconnect_sse

from backend.api.wire import EVENTS_PATH, bodies_from_dict, event_from_wire, record_from_dict
from backend.config import ConfigError
from backend.control import (
    Alias,
    ConfigNotApplied,
    ControlEvent,
    ControlUnavailable,
    ControlUnreachable,
    ServiceNotFound,
    StreamOpened,
)
from backend.events import RequestProgress, RequestRecord, RequestStarted
from backend.store.history import RequestBodies

RECONNECT_S = 1.0


def _message(resp: httpx.Response) -> str:
    try:
        error = resp.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    except ValueError:
        pass
    return f"HTTP {resp.status_code}: {resp.text[:200]}"


class BridgeClient:
    """A `backend.control.BridgeControl` over HTTP. Create and use it on one event loop."""

    def __init__(self, url: str, key: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"x-api-key": key} if key else {}  # the key is sent, never logged or shown
        self._timeout = timeout
        self._http: httpx.AsyncClient | None = None
        self._listeners: list[Callable[[ControlEvent], None]] = []
        self._stream: asyncio.Task[None] | None = None
        self.connected = False
        """The event stream is open now."""
        self.link_error: str | None = None
        """Why the event stream is down (None while it is up or before it first tried)."""

    # -- plumbing ------------------------------------------------------------------------
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self._timeout,
                                           trust_env=False)
        return self._http

    def unreachable(self, exc: BaseException) -> ControlUnreachable:
        return ControlUnreachable(
            f"cannot reach ccbridge at {self.url} ({type(exc).__name__}: {exc}). Is `ccbridge serve` running "
            "there? For a remote one, open a tunnel first: ssh -N -L 8082:127.0.0.1:8082 <host>")

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self._client().request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        if resp.status_code == 401:
            raise ControlUnavailable(
                f"ccbridge at {self.url} needs its api_key (proxy.api_key): pass --key, or set "
                "ANTHROPIC_AUTH_TOKEN or ANTHROPIC_API_KEY to it")
        if resp.status_code == 404 and "/services/" in path:
            raise ServiceNotFound(_message(resp))
        if resp.status_code == 400 and path.endswith("/aliases"):
            raise ConfigError(_message(resp).removeprefix("aliases not saved: "))
        if resp.status_code == 503 and (path.endswith("/aliases") or path.endswith("/swa-full")):
            raise ConfigNotApplied(_message(resp).removeprefix("ccbridge: "))
        if resp.status_code == 404 and path.startswith("/ccbridge/api/requests/"):
            return None
        if resp.status_code >= 400:
            raise ControlUnavailable(f"ccbridge at {self.url} answered {method} {path}: {_message(resp)}")
        try:
            return resp.json()
        except ValueError:
            raise ControlUnavailable(f"{self.url}{path} did not answer JSON: is that a ccbridge?") from None

    async def aclose(self) -> None:
        """Stop the event stream and close the connections."""
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
            self._stream = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- BridgeControl -------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        data = await self._call("GET", "/ccbridge/api/status")
        if not isinstance(data, dict) or "services" not in data:
            raise ControlUnavailable(f"{self.url} answered a status that is not ccbridge's")
        return data

    async def recent(self, limit: int = 100, *, model: str | None = None, status: int | str | None = None,
                     session_id: str | None = None, since: float | None = None) -> list[RequestRecord]:
        params: dict[str, Any] = {"limit": limit}
        for key, value in (("model", model), ("status", status), ("session", session_id), ("since", since)):
            if value is not None:
                params[key] = value
        data = await self._call("GET", "/ccbridge/api/requests", params=params)
        return [record_from_dict(r) for r in data["requests"]]

    async def record(self, request_id: str) -> RequestRecord | None:
        data = await self._call("GET", f"/ccbridge/api/requests/{request_id}")
        return record_from_dict(data) if data else None

    async def bodies(self, request_id: str) -> RequestBodies | None:
        data = await self._call("GET", f"/ccbridge/api/requests/{request_id}/bodies")
        return bodies_from_dict(data) if data else None  # a 404 (none kept) comes back as None

    async def in_flight(self) -> list[RequestStarted]:
        data = await self._call("GET", "/ccbridge/api/in_flight")
        return [e for e in map(event_from_wire, data["in_flight"]) if isinstance(e, RequestStarted)]

    async def progress(self) -> list[RequestProgress]:
        data = await self._call("GET", "/ccbridge/api/in_flight")
        return [e for e in map(event_from_wire, data.get("progress", [])) if isinstance(e, RequestProgress)]

    async def session_status(self, session_id: str | None) -> dict[str, Any]:
        params = {"session": session_id} if session_id else {}
        data = await self._call("GET", "/ccbridge/api/statusline", params=params)
        return data if isinstance(data, dict) else {}

    async def aliases(self) -> list[Alias]:
        data = await self._call("GET", "/ccbridge/api/aliases")
        return [(str(p), str(t)) for p, t in data["aliases"]]

    async def save_aliases(self, aliases: list[Alias]) -> list[Alias]:
        data = await self._call("PUT", "/ccbridge/api/aliases", json={"aliases": [list(a) for a in aliases]})
        return [(str(p), str(t)) for p, t in data["aliases"]]

    # State-changing calls carry a JSON body (even an empty one): the serve refuses any other content
    # type for them, which a web page cannot send cross-site without a preflight.
    async def restart_service(self, name: str) -> None:
        # a zero-loss LiteLLM restart waits for the new one to be healthy: minutes on a slow machine
        await self._call("POST", f"/ccbridge/api/services/{name}/restart", json={}, timeout=300)

    async def stop_service(self, name: str) -> None:
        await self._call("POST", f"/ccbridge/api/services/{name}/stop", json={}, timeout=120)

    async def start_service(self, name: str) -> None:
        await self._call("POST", f"/ccbridge/api/services/{name}/start", json={}, timeout=300)

    async def enable_swa_full(self, backend: str) -> tuple[str, ...]:
        data = await self._call("POST", f"/ccbridge/api/backends/{backend}/swa-full", json={},
                                timeout=300)
        return tuple(str(x) for x in data["restarted"])

    async def probe_models(self) -> list[dict[str, Any]]:
        data = await self._call("POST", "/ccbridge/api/scorecards", json={}, timeout=400)
        return list(data["scorecards"])

    async def log_tail(self, service: str, n: int = 200) -> list[str]:
        data = await self._call("GET", f"/ccbridge/api/services/{service}/log", params={"n": n})
        return [str(x) for x in data["lines"]]

    def subscribe(self, listener: Callable[[ControlEvent], None]) -> Callable[[], None]:
        """Events from the serve, delivered on this loop; starts the stream (call it on a running loop)."""
        self._listeners.append(listener)
        if self._stream is None:
            self._stream = asyncio.get_running_loop().create_task(self._run_stream(), name="ccbridge-events")

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    # -- the event stream ----------------------------------------------------------------
    def _deliver(self, event: ControlEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    async def _run_stream(self) -> None:
        opened = 0
        while True:
            try:
                async with aconnect_sse(self._client(), "GET", EVENTS_PATH,
                                        timeout=httpx.Timeout(self._timeout, read=None)) as source:
                    if source.response.status_code == 401:
                        self.link_error = (f"ccbridge at {self.url} needs its api_key: pass --key, or set "
                                           "ANTHROPIC_AUTH_TOKEN or ANTHROPIC_API_KEY")
                    elif source.response.status_code != 200:
                        self.link_error = f"{self.url}{EVENTS_PATH} answered HTTP {source.response.status_code}"
                    else:
                        async for sse in source.aiter_sse():
                            data = json.loads(sse.data) if sse.data else {}
                            if sse.event == "hello":
                                self.connected, self.link_error = True, None
                                started = tuple(e for e in map(event_from_wire, data.get("in_flight", []))
                                                if isinstance(e, RequestStarted))
                                progress = tuple(e for e in map(event_from_wire, data.get("progress", []))
                                                 if isinstance(e, RequestProgress))
                                self._deliver(StreamOpened(started, reconnected=opened > 0, progress=progress))
                                opened += 1
                            elif sse.event == "events":
                                for item in data.get("events", []):
                                    with contextlib.suppress(ValueError, KeyError, TypeError):
                                        self._deliver(event_from_wire(item))
                        self.link_error = f"ccbridge at {self.url} closed the event stream (stopped?)"
            except (httpx.HTTPError, SSEError, ValueError) as exc:
                self.link_error = str(self.unreachable(exc))
            self.connected = False
            await asyncio.sleep(RECONNECT_S)
