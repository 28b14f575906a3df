"""The backend leg in process, in front of an OpenAI-format server that streams slowly and notices hang-ups."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
from aiohttp import ClientSession, web

from backend.config.model import BackendConfig
from backend.proxy.leg import BackendLeg
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PairRegistry
from backend.proxy.slots import SlotPinner

SECRET = "leg-secret-for-tests"


class OpenAIBackend:
    """An OpenAI-format server that streams slowly and notices hang-ups."""

    def __init__(self, chunks: int = 5, delay: float = 0.0) -> None:
        self.chunks, self.delay = chunks, delay
        self.calls: list[dict] = []
        self.disconnects = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/models"):
            return web.json_response({"data": [{"id": "tiny-model"}]})
        body = await request.json()
        self.calls.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        timings = {"prompt_n": 3, "cache_n": 17, "prompt_per_second": 900.0, "predicted_per_second": 40.0}
        if not body.get("stream"):
            return web.json_response({"choices": [{"message": {"content": "hi"}}], "timings": timings})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(self.chunks):
                await resp.write(f'data: {{"choices":[{{"delta":{{"content":"t{i}"}}}}]}}\n\n'.encode())
                await asyncio.sleep(self.delay)
            last = {"choices": [{"delta": {}, "finish_reason": "stop"}], "timings": timings}
            await resp.write(f"data: {json.dumps(last)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise
        return resp

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # llama-server takes big bodies
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"


def run_leg(body, backend_server: OpenAIBackend, extra: dict[str, BackendConfig] | None = None) -> None:
    """`body(url, registry, leg, client)` with a leg at `url` (backend `local`) in front of `backend_server`."""
    async def main() -> None:
        api_base = await backend_server.start()
        # an extra backend without api_base is another name for the same server
        backends = {"local": BackendConfig("local", api_base),
                    **{k: v if v.api_base else replace(v, api_base=api_base) for k, v in (extra or {}).items()}}
        registry = PairRegistry()
        async with ClientSession() as session:
            leg = BackendLeg(backends=lambda: backends, secret=SECRET, registry=registry,
                             session=session, resolver=ModelResolver(session), pinner=SlotPinner(session))
            runner = web.ServerRunner(web.Server(leg.handle, handler_cancellation=True))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/leg/local"
            try:
                async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
                    await body(url, registry, leg, client)
            finally:
                await runner.cleanup()
                await backend_server.runner.cleanup()

    asyncio.run(main())


AUTH = {"authorization": f"Bearer {SECRET}"}
CHAT = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
