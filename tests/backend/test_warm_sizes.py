"""A warm-up whose stream left out `message_start` still records the prompt's size (backend/proxy/warm.py).

llama-server's Anthropic stream sometimes leaves out `message_start` (the only event with the prompt's
usage) when its first token is part of a UTF-8 character (see backend/proxy/stream_fix.py). Once in a loaded CI
run the warm-up after a cancelled one was recorded without its size. The stand-in server here answers
like that and counts tokens on /v1/messages/count_tokens."""

from __future__ import annotations

import asyncio
import json

import uvloop
from aiohttp import ClientSession, web

from backend.proxy.warm import Warmer

EVENTS = (b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
          b'"content_block":{"type":"text","text":""}}\n\n'
          b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
          b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
          b'"usage":{"output_tokens":1}}\n\n'
          b'event: message_stop\ndata: {"type":"message_stop"}\n\n')


def test_a_warm_up_without_message_start_asks_for_the_prompts_size():
    counted: list[dict] = []

    async def main() -> list[dict]:
        async def messages(request: web.Request) -> web.StreamResponse:
            sent = json.loads(await request.read())
            assert sent["max_tokens"] == 1 and sent["stream"] is True
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(EVENTS)
            return response

        async def count(request: web.Request) -> web.Response:
            counted.append(json.loads(await request.read()))
            return web.json_response({"input_tokens": 12_345})

        app = web.Application()
        app.router.add_post("/v1/messages", messages)
        app.router.add_post("/v1/messages/count_tokens", count)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with ClientSession() as session:
            warmer = Warmer(lambda: session, lambda event: None)
            body = json.dumps({"model": "m", "max_tokens": 900, "system": "long rules",
                               "messages": [{"role": "user", "content": "hi"}]}).encode()
            warmer.keep("local", "fam", f"http://127.0.0.1:{port}/v1/messages", body, {})
            assert warmer.start("local")
            while not warmer.recent:
                await asyncio.sleep(0.02)
        await runner.cleanup()
        return warmer.recent

    recent = uvloop.run(main())
    assert recent[0]["prompt_tokens"] == 12_345 and recent[0]["cancelled"] is False and recent[0]["error"] is None
    assert counted and counted[0]["max_tokens"] == 900  # the prompt as the user sent it
