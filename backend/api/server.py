"""ccbridge's HTTP API: the control interface (`backend.control.BridgeControl`) over HTTP.

On the proxy's port, under /ccbridge/api/ (plus Prometheus at /metrics):

GET  /ccbridge/api/status                          services, aliases, backends, unknown models, metrics, monitor
GET  /ccbridge/api/requests/{id}/bodies                the request as sent and its answer (if kept)
GET  /ccbridge/api/requests?limit=N[&model=&status=&session=&since=]   newest first
GET  /ccbridge/api/requests/{id}                   one request
GET  /ccbridge/api/in_flight                       requests under way now
GET  /ccbridge/api/statusline?session=ID          one Claude Code session's request now (`ccbridge statusline`)
GET  /ccbridge/api/aliases                         the alias table in order
PUT  /ccbridge/api/aliases                         {"aliases": [["pattern", "target"], ...]}
POST /ccbridge/api/services/{name}/{restart,stop,start}
POST /ccbridge/api/backends/{name}/swa-full     add --swa-full to a ccbridge-run llama-server, restart it
GET  /ccbridge/api/services/{name}/log?n=200       the last lines of its log
GET  /ccbridge/api/events                          server-sent events: `hello` (requests in flight), then
                                                   `events` batches a few times a second, `: keepalive` lines
GET  /metrics                                      Prometheus text (prometheus-client)

Everything is subject to proxy.api_key: the front proxy checks it before
/ccbridge/ paths reach here, `metrics()` checks it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from backend import __version__
from backend.api.wire import EVENTS_PATH, bodies_to_dict, encode, events_payload
from backend.config import ConfigError
from backend.control import BridgeControl, ConfigNotApplied, ControlEvent, ServiceNotFound, StreamOpened
from backend.events import Event
from backend.proxy.errors import anthropic_error
from backend.proxy.headers import key_accepted
from backend.redaction import redact

_log = logging.getLogger(__name__)
_MAX_LIMIT = 1000
FLUSH_S = 0.2
"""The event stream is written at most five times a second, however many requests there are."""
KEEPALIVE_S = 15.0
EVENT_BUFFER = 20_000
"""Events held for one slow reader; past this the oldest are dropped and the batch says how many."""
_VERBS = ("restart", "stop", "start")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=encode(data), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=anthropic_error(status, message), content_type="application/json")


def parse_filters(query: Any) -> dict[str, Any]:
    """`model`, `status`, `session`, `since` query parameters as `recent()` keywords; ValueError says which is bad."""
    filters: dict[str, Any] = {}
    if query.get("model"):
        filters["model"] = query["model"]
    if query.get("session"):
        filters["session_id"] = query["session"]
    if query.get("status"):
        status = query["status"]
        if not (status.isdigit() or status == "error"):
            raise ValueError("status must be an HTTP status code or 'error'")
        filters["status"] = int(status) if status.isdigit() else status
    if query.get("since"):
        try:
            filters["since"] = float(query["since"])
        except ValueError:
            raise ValueError("since must be a unix time in seconds") from None
    return filters


class ControlAPI:
    """Handlers for /ccbridge/api/* and /metrics, reaching the bridge only through `BridgeControl`."""

    def __init__(self, control: BridgeControl, *, api_key: Callable[[], str | None],
                 prometheus: Callable[[], tuple[bytes, str]] | None = None) -> None:
        self._control = control
        self._api_key = api_key
        self._prometheus = prometheus
        self._closing = False
        self.streams = 0  # event streams open now

    def close(self) -> None:
        """End the open event streams (the bridge is stopping)."""
        self._closing = True

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        control = self._control
        try:
            if path == "/ccbridge/api/status" and method == "GET":
                return _json(await control.status())
            if path == "/ccbridge/api/requests" and method == "GET":
                return await self._requests(request)
            if path.startswith("/ccbridge/api/requests/") and path.endswith("/bodies") and method == "GET":
                rid = path.split("/")[-2]
                bodies = await control.bodies(rid)
                if bodies is None:
                    return _error(404, f"no bodies kept for request {rid!r} (history.bodies is off, or they "
                                       "went with retention)")
                return _json(bodies_to_dict(bodies))
            if path.startswith("/ccbridge/api/requests/") and method == "GET":
                record = await control.record(path.rsplit("/", 1)[1])
                if record is None:
                    return _error(404, f"no request with id {path.rsplit('/', 1)[1]!r} in the history")
                return _json(record)
            if path == "/ccbridge/api/statusline" and method == "GET":
                return _json(await control.session_status(request.query.get("session") or None))
            if path == "/ccbridge/api/scorecards":
                if method == "GET":
                    return _json({"scorecards": (await control.status()).get("scorecards", [])})
                if method == "POST":
                    return _json({"scorecards": await control.probe_models()})
            if path == "/ccbridge/api/in_flight" and method == "GET":
                return _json({"in_flight": events_payload(await control.in_flight()),
                              "progress": events_payload(await control.progress())})
            if path == "/ccbridge/api/aliases":
                if method == "GET":
                    return _json({"aliases": [list(a) for a in await control.aliases()]})
                if method == "PUT":
                    return await self._put_aliases(request)
            if path == EVENTS_PATH and method == "GET":
                return await self._events(request)
            parts = path.strip("/").split("/")
            if len(parts) == 5 and parts[:3] == ["ccbridge", "api", "services"]:
                return await self._service(request, parts[3], parts[4])
            if len(parts) == 5 and parts[:3] == ["ccbridge", "api", "backends"] and parts[4] == "swa-full":
                if method != "POST":
                    return _error(405, "use POST to add --swa-full to a backend's command")
                try:
                    restarted = await control.enable_swa_full(parts[3])
                except ConfigError as exc:
                    return _error(400, str(exc))
                return _json({"restarted": list(restarted)})
        except ServiceNotFound as exc:
            return _error(404, str(exc))
        except ConfigNotApplied as exc:
            return _error(503, f"ccbridge: {exc}")
        except ConfigError as exc:
            return _error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a JSON error that says what failed, never a bare 500 page
            _log.exception("%s %s failed", method, path)
            return _error(500, redact(f"ccbridge: {method} {path} failed: {type(exc).__name__}: {exc}"))
        return _error(404, f"no such ccbridge API path: {method} {path}")

    async def _service(self, request: web.BaseRequest, name: str, verb: str) -> web.StreamResponse:
        if verb == "log":
            try:
                n = max(1, min(10_000, int(request.query.get("n", "200"))))
            except ValueError:
                return _error(400, "n must be an integer")
            return _json({"service": name, "lines": await self._control.log_tail(name, n)})
        if verb not in _VERBS:
            return _error(404, f"no such service action {verb!r} (use {', '.join(_VERBS)} or log)")
        if request.method != "POST":
            return _error(405, f"use POST to {verb} a service")
        call = {"restart": self._control.restart_service, "stop": self._control.stop_service,
                "start": self._control.start_service}[verb]
        await call(name)
        return _json({f"{verb}ed" if verb != "stop" else "stopped": name})

    async def _requests(self, request: web.BaseRequest) -> web.Response:
        q = request.query
        try:
            limit = max(1, min(_MAX_LIMIT, int(q.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        try:
            filters = parse_filters(q)
        except ValueError as exc:
            return _error(400, str(exc))
        records = await self._control.recent(limit, **filters)
        return _json({"requests": records})

    async def _put_aliases(self, request: web.BaseRequest) -> web.Response:
        try:
            data = json.loads(await request.read())
            raw = data["aliases"]
            if isinstance(raw, dict):
                pairs = [(str(k), str(v)) for k, v in raw.items()]
            else:
                pairs = [(str(k), str(v)) for k, v in raw]
        except (ValueError, KeyError, TypeError):
            return _error(400, 'body must be {"aliases": [["pattern", "target"], ...]}')
        try:
            saved = await self._control.save_aliases(pairs)
        except ConfigError as exc:
            return _error(400, f"aliases not saved: {exc}")
        return _json({"aliases": [list(a) for a in saved]})

    async def _events(self, request: web.BaseRequest) -> web.StreamResponse:
        """Server-sent events: a `hello` with the requests in flight, then batches of events."""
        pending: deque[Event] = deque(maxlen=EVENT_BUFFER)
        dropped = 0

        def listener(event: ControlEvent) -> None:  # the proxy's hot path: only append (deque.append is atomic)
            nonlocal dropped
            if isinstance(event, StreamOpened):
                return  # a client's own marker, never sent by a bridge
            if len(pending) == EVENT_BUFFER:
                dropped += 1
            pending.append(event)

        unsubscribe = self._control.subscribe(listener)
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache",
                                               "x-accel-buffering": "no"})
        self.streams += 1
        try:
            await response.prepare(request)
            hello = {"version": __version__, "in_flight": events_payload(await self._control.in_flight()),
                     "progress": events_payload(await self._control.progress())}
            await response.write(_sse("hello", hello))
            quiet_since = time.monotonic()
            while not self._closing:
                await asyncio.sleep(FLUSH_S)
                if pending:
                    batch = events_payload([pending.popleft() for _ in range(len(pending))])
                    lost, dropped = dropped, 0
                    await response.write(_sse("events", {"events": batch, "dropped": lost}))
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")  # proxies and tunnels keep the connection
                    quiet_since = time.monotonic()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the reader went away (or the bridge is stopping)
        finally:
            self.streams -= 1
            unsubscribe()
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    # -- Prometheus --------------------------------------------------------------------
    def authorized(self, request: web.BaseRequest) -> bool:
        """The front proxy's rule: with proxy.api_key set, x-api-key or a Bearer token must equal it."""
        return key_accepted(request.headers, self._api_key())

    async def metrics(self, request: web.BaseRequest) -> web.Response:
        if not self.authorized(request):
            return _error(401, "ccbridge: /metrics needs the proxy's api_key (x-api-key or Authorization: Bearer)")
        if request.method not in ("GET", "HEAD"):
            return _error(405, "use GET /metrics")
        if self._prometheus is None:
            return _error(404, "no metrics here")
        body, content_type = self._prometheus()
        response = web.Response(status=200, body=body)
        response.headers["content-type"] = content_type
        return response


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + encode(data) + b"\n\n"
