"""A zero-latency Anthropic-format backend for benchmarks (its own process).

`python -m bench.zero_backend PORT` answers POST /v1/messages at once: JSON,
or (with "stream": true) an SSE stream of `n_events` text deltas spaced
`gap_ms` apart (both read from the request's `metadata`), so one server can
give both instant answers and 1-second streams.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_b","type":"message",'
    b'"role":"assistant","model":"m","content":[],"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
_DELTA = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
          b'"delta":{"type":"text_delta","text":"tok "}}\n\n')
_END = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"input_tokens":10,"output_tokens":20}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
_JSON = json.dumps({"id": "msg_b", "type": "message", "role": "assistant", "model": "m",
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 10, "output_tokens": 1}}).encode()


_CHUNK = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
          b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n')
_CHUNK_END = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
              b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}\n\ndata: [DONE]\n\n')
_CHAT = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}).encode()


async def chat(request: web.BaseRequest, payload: dict) -> web.StreamResponse:
    """OpenAI chat completions (what LiteLLM sends through ccbridge's backend leg)."""
    if not payload.get("stream"):
        return web.Response(body=_CHAT, content_type="application/json")
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for _ in range(20):
        await resp.write(_CHUNK)
    await resp.write(_CHUNK_END)
    await resp.write_eof()
    return resp


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    if request.path.endswith("/chat/completions"):
        return await chat(request, json.loads(body))
    if request.path.endswith("/models"):
        return web.Response(body=b'{"data":[{"id":"m"}]}', content_type="application/json")
    if request.path != "/v1/messages":
        return web.Response(status=200, body=b"{}", content_type="application/json")
    payload = json.loads(body)
    if not payload.get("stream"):
        return web.Response(body=_JSON, content_type="application/json")
    meta = payload.get("metadata") or {}
    n_events = int(meta.get("n_events", 20))
    gap = float(meta.get("gap_ms", 0)) / 1000.0
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(_START)
    for _ in range(n_events):
        if gap:
            await asyncio.sleep(gap)
        await resp.write(_DELTA)
    await resp.write(_END)
    await resp.write_eof()
    return resp


async def main(port: int) -> None:
    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main(int(sys.argv[1])))
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
