"""A loopback pass-through that records every request on its way to a real server.

Put between ccbridge and llama-server (as the backend's `api_base`), it shows exactly
what llama-server was sent, on either route: the body after ccbridge's edits (billing
line removed, `id_slot` added) and LiteLLM's translation. Responses, streamed or not,
are passed back chunk by chunk, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support.capture import Captured
from tests.support.loop import LoopThread

_CLIENT = web.AppKey("client", aiohttp.ClientSession)
_HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})


@dataclass
class RecordingForwarder:
    """Forwards to `target` (e.g. "http://127.0.0.1:8080") and keeps each request in `seen`."""

    target: str
    seen: list[Captured] = field(default_factory=list)
    port: int = 0
    _loop: LoopThread | None = None
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Captured(request.method, request.path_qs, dict(request.headers), body))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        client = request.app[_CLIENT]
        async with client.request(request.method, self.target + request.path_qs, data=body,
                                  headers=headers) as upstream:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    def __enter__(self) -> RecordingForwarder:
        self._loop = LoopThread()

        async def start() -> web.AppRunner:
            app = web.Application(client_max_size=64 * 2**20)
            # no timeout: a long prompt on a slow CPU may take minutes to its first byte
            app[_CLIENT] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.port = runner.addresses[0][1]
            return runner

        self._runner = self._loop.run(start(), 10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            runner = self._runner

            async def stop() -> None:
                await runner.app[_CLIENT].close()
                await runner.cleanup()

            self._loop.run(stop(), 10)
            self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, path_suffix: str) -> list[dict]:
        """The JSON bodies of the POSTs whose path (query left out) ends with `path_suffix`."""
        return [c.json() for c in self.seen
                if c.method == "POST" and c.path.split("?")[0].endswith(path_suffix)]
