"""ccbridge's own JSON API, on the proxy's port under /ccbridge/api/.

GET  /ccbridge/api/status                       services, aliases, backends, unknown models
GET  /ccbridge/api/requests?limit=N[&model=&status=&session=]   newest first
GET  /ccbridge/api/aliases                      the alias table in order
PUT  /ccbridge/api/aliases                      {"aliases": [["pattern", "target"], ...]}
POST /ccbridge/api/services/{name}/restart      restart a service (litellm)

Subject to proxy.api_key like everything else (the front proxy checks it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from backend.config import ConfigError
from backend.proxy.errors import anthropic_error

if TYPE_CHECKING:
    from backend.bridge import Bridge

_MAX_LIMIT = 1000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=anthropic_error(status, message),
                        content_type="application/json")


class AdminAPI:
    """Handlers for /ccbridge/api/*, reaching the backend only through the Bridge façade."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        if path == "/ccbridge/api/status" and method == "GET":
            return _json(self._bridge.status())
        if path == "/ccbridge/api/requests" and method == "GET":
            return self._requests(request)
        if path == "/ccbridge/api/aliases":
            if method == "GET":
                return _json({"aliases": [[r.pattern, r.target] for r in self._bridge.config.aliases]})
            if method == "PUT":
                return await self._put_aliases(request)
        parts = path.strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["ccbridge", "api", "services"] and parts[4] == "restart":
            if method != "POST":
                return _error(405, "use POST to restart a service")
            try:
                await self._bridge.restart_service(parts[3])
            except KeyError as exc:
                return _error(404, str(exc.args[0]))
            return _json({"restarted": parts[3]})
        return _error(404, f"no such ccbridge API path: {method} {path}")

    def _requests(self, request: web.BaseRequest) -> web.Response:
        q = request.query
        try:
            limit = max(1, min(_MAX_LIMIT, int(q.get("limit", "100"))))
        except ValueError:
            return _error(400, "limit must be an integer")
        filters: dict[str, Any] = {}
        if q.get("model"):
            filters["model"] = q["model"]
        if q.get("session"):
            filters["session_id"] = q["session"]
        if q.get("status"):
            status = q["status"]
            filters["status"] = int(status) if status.isdigit() else status
        records = self._bridge.recent(limit, **filters)
        return _json({"requests": [r.to_dict() for r in records]})

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
            await self._bridge.save_aliases(pairs)
        except ConfigError as exc:
            return _error(400, f"aliases not saved: {exc}")
        return _json({"aliases": [[r.pattern, r.target] for r in self._bridge.config.aliases]})
