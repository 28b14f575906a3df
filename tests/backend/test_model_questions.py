"""Who asks llama-server for /v1/models and /props: the monitor, and the others only when it cannot answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import ClientSession, web

from backend.config.model import BackendConfig
from backend.monitor.llama import probe_backend
from backend.proxy.models import ModelResolver

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"


class CapturedLlama:
    """Replays the captured answers of the tiny llama-server (fixtures/monitor) and counts the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.asked.append(request.path)
        files = {"/health": "health_ok.json", "/props": "props_np2_metrics.json", "/v1/models": "models.json",
                 "/slots": "slots_after_request.json"}
        name = files.get(request.path)
        if name is None:
            return web.Response(status=501, text='{"error": "not enabled"}', content_type="application/json")
        return web.json_response(json.loads((FIXTURES / name).read_text()))

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def test_the_resolver_takes_the_monitors_answer_and_asks_only_without_one():
    async def main() -> None:
        llama = CapturedLlama()
        api_base = await llama.start()
        backend = BackendConfig(name="local", api_base=api_base, model="auto")
        monitored: dict[str, str | None] = {"local": None}
        try:
            async with ClientSession() as session:
                resolver = ModelResolver(session, known=lambda b: monitored[b.name])
                asked = await resolver.resolve(backend)  # the monitor has nothing yet: ask
                assert asked == json.loads((FIXTURES / "models.json").read_text())["data"][0]["id"]
                assert llama.asked == ["/v1/models"]
                monitored["local"] = "from-the-monitor"
                assert await resolver.resolve(backend) == "from-the-monitor"
                assert resolver.cached(backend) == "from-the-monitor"
                assert llama.asked == ["/v1/models"]  # nothing more was asked
        finally:
            await llama.stop()

    asyncio.run(main())


def test_probe_backend_reads_with_the_monitors_probe():
    async def start() -> tuple[CapturedLlama, str]:
        llama = CapturedLlama()
        return llama, await llama.start()

    loop = asyncio.new_event_loop()
    llama, api_base = loop.run_until_complete(start())
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        info = probe_backend(BackendConfig(name="local", api_base=api_base, model="auto"))
        assert info.reachable and info.model
        assert info.n_ctx_slot == 32768 and info.total_slots == 2  # props: -c 65536 -np 2
        assert info.n_ctx_train == 131072
        assert {"/health", "/props", "/v1/models"} <= set(llama.asked)
    finally:
        asyncio.run_coroutine_threadsafe(llama.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_probe_backend_says_why_when_nothing_answers():
    from tests.support.llama import free_port

    info = probe_backend(BackendConfig(name="local", api_base=f"http://127.0.0.1:{free_port()}/v1", model="auto"))
    assert not info.reachable and info.error
