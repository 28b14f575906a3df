"""Zero-latency upstreams for proxy unit tests and benchmarks.

These are not stand-ins for LiteLLM or llama-server (the e2e tests run the
real ones); they are instruments: servers that answer instantly and record
exactly what reached them, so a test can see what the proxy changed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


def anthropic_events(text_parts: list[str], usage: dict[str, int] | None = None) -> list[bytes]:
    """An Anthropic SSE stream shaped as LiteLLM 1.102.4 emits it (zeros first, counts last)."""
    usage = usage or {"input_tokens": 11, "output_tokens": len(text_parts)}

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [
        ev("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "local", "content": [],
            "stop_reason": None, "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        ev("content_block_start", {"type": "content_block_start", "index": 0,
                                   "content_block": {"type": "text", "text": ""}}),
    ]
    for part in text_parts:
        out.append(ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": part}}))
    out.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                    "usage": usage}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class AnthropicUpstream:
    """An Anthropic-format server: /v1/messages (stream or not), anything else echoed."""

    seen: list[Seen] = field(default_factory=list)
    delay: float = 0.0  # seconds between stream events
    hold: float = 0.0  # seconds to wait before answering at all
    status: int = 200
    error_body: bytes = b""
    disconnects: int = 0
    parts: int = 4  # text deltas per stream
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.path, request.query_string,
                              {k.lower(): v for k, v in request.headers.items()}, body))
        try:
            if self.hold:
                await asyncio.sleep(self.hold)
            if self.status != 200:
                return web.Response(status=self.status, body=self.error_body, content_type="application/json")
            if request.path == "/v1/messages" and request.method == "POST":
                payload = json.loads(body)
                if payload.get("stream"):
                    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
                    await resp.prepare(request)
                    words = ["Hel", "lo", " wor", "ld"] if self.parts == 4 else ["tok "] * self.parts
                    for event in anthropic_events(words):
                        await resp.write(event)
                        if self.delay:
                            await asyncio.sleep(self.delay)
                    await resp.write_eof()
                    return resp
                return web.json_response({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": payload.get("model"),
                    "content": [{"type": "text", "text": "Hello world"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 7, "output_tokens": 2}})
            if request.path == "/v1/messages/count_tokens":
                return web.json_response({"input_tokens": 42})
            return web.json_response({"echo": request.path, "query": request.query_string,
                                      "headers": dict(request.headers)})
        except asyncio.CancelledError:
            self.disconnects += 1
            raise

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Script:
    """What a `ScriptedUpstream` answers to one request: raw writes, then how it ends.

    `end`: "eof" (a clean end), "abort" (the connection is cut mid-body: the
    reader sees a payload error), "hang" (nothing more is sent until the
    client goes away)."""

    writes: list[bytes]
    status: int = 200
    content_type: str = "text/event-stream"
    end: str = "eof"
    pause: float = 0.0  # seconds between writes


@dataclass
class ScriptedUpstream:
    """A server that answers each request with the `Script` its `x-script` header names.

    Scripts are registered with `add()`; requests without a known script get a
    404. Used to send broken streams (cut anywhere, garbage, errors at chunk
    edges) through the front proxy and the backend leg."""

    scripts: dict[str, Script] = field(default_factory=dict)
    disconnects: int = 0
    runner: web.ServerRunner | None = None
    port: int = 0

    def add(self, script: Script) -> str:
        key = f"s{len(self.scripts)}"
        self.scripts[key] = script
        return key

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        script = self.scripts.get(request.headers.get("x-script", ""))
        if script is None:
            return web.Response(status=404, text="no script")
        resp = web.StreamResponse(status=script.status, headers={"content-type": script.content_type})
        try:
            await resp.prepare(request)
            for write in script.writes:
                await resp.write(write)
                await asyncio.sleep(script.pause)
            if script.end == "abort":
                assert request.transport is not None
                request.transport.abort()
                return resp
            if script.end == "hang":
                await asyncio.sleep(3600)
            await resp.write_eof()
            return resp
        except (asyncio.CancelledError, ConnectionError):
            self.disconnects += 1
            raise

    async def start(self) -> str:
        self.runner = web.ServerRunner(web.Server(self.handle, handler_cancellation=True))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
