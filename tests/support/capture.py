"""Capture what the real Claude Code sends: a loopback server that records every request
and answers `/v1/messages` with a short valid Anthropic stream (or message).

Used where a test needs Claude Code's real request bodies (to mutate them, to compare
two sessions) without committing Claude Code's prompt text to this repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.claude import run_claude
from tests.support.loop import LoopThread
from tests.support.upstreams import anthropic_events


@dataclass
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def message_events(content: list[dict[str, Any]], stop_reason: str) -> list[bytes]:
    """An Anthropic SSE stream carrying `content` blocks (text and tool_use)."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [ev("message_start", {"type": "message_start", "message": {
        "id": "msg_c", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 0}}})]
    for i, block in enumerate(content):
        if block["type"] == "tool_use":
            out.append(ev("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}))
            out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
        else:
            out.append(ev("content_block_start", {"type": "content_block_start", "index": i,
                                                  "content_block": {"type": "text", "text": ""}}))
            out.append(ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": {"type": "text_delta", "text": block["text"]}}))
        out.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason},
                                    "usage": {"output_tokens": 1}}))
    out.append(ev("message_stop", {"type": "message_stop"}))
    return out


# Given a turn's body and the turns seen before it, what the "model" answers: content blocks and a stop reason.
Responder = Callable[[dict[str, Any], list[dict[str, Any]]], tuple[list[dict[str, Any]], str]]


@dataclass
class CaptureServer:
    """Records requests; answers like a tiny Anthropic API (text "ok", end_turn), or as
    `responder` says (e.g. a tool call, to make Claude Code start a subagent)."""

    seen: list[Captured] = field(default_factory=list)
    responder: Responder | None = None
    port: int = 0
    _loop: LoopThread | None = None
    _runner: web.ServerRunner | None = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Captured(request.method, request.path, dict(request.headers), body))
        if request.path == "/v1/messages" and request.method == "POST":
            payload = json.loads(body)
            if payload.get("stream"):
                resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
                await resp.prepare(request)
                events = anthropic_events(["ok"])
                if self.responder is not None:
                    earlier = self.turns()[:-1]
                    events = message_events(*self.responder(payload, earlier))
                for event in events:
                    await resp.write(event)
                await resp.write_eof()
                return resp
            return web.json_response({"id": "msg_c", "type": "message", "role": "assistant", "model": "m",
                                      "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                                      "usage": {"input_tokens": 1, "output_tokens": 1}})
        if request.path == "/v1/messages/count_tokens":
            return web.json_response({"input_tokens": 10})
        return web.json_response({})

    def __enter__(self) -> CaptureServer:
        self._loop = LoopThread()

        async def start() -> None:
            self._runner = web.ServerRunner(web.Server(self._handle))
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.port = self._runner.addresses[0][1]

        self._loop.run(start(), 10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            if self._runner is not None:
                self._loop.run(self._runner.cleanup(), 10)
            self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def turns(self) -> list[dict[str, Any]]:
        """The bodies of the model turns Claude Code sent (largest first is the main turn)."""
        return [c.json() for c in self.seen if c.path == "/v1/messages" and c.method == "POST"]


def capture_claude_turn(version: str, prompt: str = "Hello world", **kw: Any) -> dict[str, Any]:
    """The body of the main `/v1/messages` turn the real Claude Code sends for `claude -p prompt`."""
    with CaptureServer() as server:
        result = run_claude(version, server.url, prompt, timeout=120, **kw)
        if result.returncode != 0:
            raise RuntimeError(f"claude -p failed against the capture server: {result.stderr[-2000:]}")
        turns = server.turns()
    if not turns:
        raise RuntimeError("Claude Code sent no /v1/messages request")
    return max(turns, key=lambda body: len(json.dumps(body)))
