"""A stand-in llama-server that answers with bodies captured from a real one (tests/backend/fixtures/monitor)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "backend" / "fixtures" / "monitor"


class ReplayLlama:
    """Answers /health, /props, /v1/models, /slots, /metrics with captured bodies (or 501s)."""

    def __init__(self, *, slots: bool = True, metrics: bool = True, health_status: int = 200) -> None:
        self.slots, self.metrics, self.health_status = slots, metrics, health_status
        self.slots_file = "slots_after_request.json"
        self.props_fail = False
        self.hits: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    def _file(self, name: str, content_type: str = "application/json", status: int = 200) -> web.Response:
        return web.Response(status=status, body=(FIXTURES / name).read_bytes(), content_type=content_type)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.auth.append(request.headers.get("Authorization"))
        if path == "/health":
            if self.health_status == 503:
                return web.json_response({"error": {"code": 503, "message": "Loading model",
                                                    "type": "unavailable_error"}}, status=503)
            return self._file("health_ok.json")
        if path == "/props":
            if self.props_fail:
                return web.json_response({"error": {"code": 500, "message": "busy"}}, status=500)
            return self._file("props_np2_metrics.json" if self.metrics else "props_noslots_nometrics.json")
        if path == "/v1/models":
            return self._file("models.json")
        if path == "/slots":
            return self._file(self.slots_file) if self.slots else self._file("slots_disabled_501.json", status=501)
        if path == "/metrics":
            if self.metrics:
                return self._file("metrics_after_request.txt", "text/plain")
            return self._file("metrics_disabled_501.json", status=501)
        return web.Response(status=404)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
