"""`ccbridge web` refuses a foreign `Host` (DNS rebinding) and a foreign `Origin` on its websocket.

The page drives everything the panel drives, and browsers let any site open a
websocket to 127.0.0.1: textual-serve checks neither, so `host_guard` does.
"""

from __future__ import annotations

import asyncio

import httpx
from aiohttp import web

from tests.support.llama import free_port
from tui.web import guarded_server, host_guard

EVIL = "rebind.attacker.test"


def test_the_web_panel_refuses_a_foreign_host_and_a_foreign_websocket_origin():
    async def main() -> None:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text="panel")

        app = web.Application(middlewares=[host_guard("127.0.0.1", ["gpubox"])])
        app.router.add_get("/", page)
        app.router.add_get("/ws", page)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
                assert (await http.get("/")).text == "panel"
                assert (await http.get("/", headers={"host": f"gpubox:{port}"})).status_code == 200
                ws = {"origin": f"http://127.0.0.1:{port}", "upgrade": "websocket"}
                assert (await http.get("/ws", headers=ws)).status_code == 200
                rebound = await http.get("/", headers={"host": f"{EVIL}:{port}"})
                assert rebound.status_code == 403 and "--allow-host" in rebound.text
                hijack = await http.get("/ws", headers={"origin": "http://evil.example.com", "upgrade": "websocket"})
                assert hijack.status_code == 403 and "evil.example.com" in hijack.text
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_the_web_server_carries_the_guard(tmp_path):
    server = guarded_server("true", host="127.0.0.1", port=free_port(), templates_path=tmp_path)
    app = asyncio.run(server._make_app())
    assert any(getattr(m, "__name__", "") == "guard" for m in app.middlewares)
