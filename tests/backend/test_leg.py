"""The backend leg: only LiteLLM may call it; it pairs, reads timings, and stops calls."""

from __future__ import annotations

import asyncio
import json
import time

from backend.config.model import BackendConfig
from backend.proxy.pairing import PAIR_HEADER
from tests.support.leg import AUTH, CHAT, OpenAIBackend, run_leg


def test_leg_refuses_callers_without_the_run_secret():
    server = OpenAIBackend()

    async def body(url, registry, leg, client):
        assert (await client.post(f"{url}/chat/completions", json=CHAT)).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await client.post(f"{url}/chat/completions", json=CHAT, headers=wrong)).status_code == 401
        assert server.calls == []

    run_leg(body, server)


def test_leg_forwards_with_real_model_and_reads_timings():
    server = OpenAIBackend()

    async def body(url, registry, leg, client):
        pair = registry.open("req-1", "local", None)
        resp = await client.post(f"{url}/chat/completions", json={**CHAT, "stream": True},
                                 headers={**AUTH, PAIR_HEADER: "req-1"})
        assert resp.status_code == 200 and b"[DONE]" in resp.content
        call = server.calls[-1]
        assert call["path"] == "/v1/chat/completions"
        assert call["body"]["model"] == "tiny-model"  # `auto` resolved from GET /models
        assert "authorization" not in {k.lower() for k in call["headers"]}
        assert pair.calls == 1 and pair.model == "tiny-model"
        assert pair.timings["cache_n"] == 17 and pair.timings["prompt_per_second"] == 900.0
        resp = await client.post(f"{url}/chat/completions", json=CHAT, headers={**AUTH, PAIR_HEADER: "req-1"})
        assert resp.status_code == 200 and pair.calls == 2

    run_leg(body, server)


def test_cancel_closes_backend_call_and_refuses_retries():
    server = OpenAIBackend(chunks=1000, delay=0.01)

    async def body(url, registry, leg, client):
        registry.open("req-2", "local", None)
        received = 0

        async def consume() -> None:
            nonlocal received
            async with client.stream("POST", f"{url}/chat/completions", json={**CHAT, "stream": True},
                                     headers={**AUTH, PAIR_HEADER: "req-2"}) as resp:
                async for chunk in resp.aiter_raw():
                    received += len(chunk)

        task = asyncio.create_task(consume())
        while received == 0:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        assert registry.cancel("req-2") == 1
        while server.disconnects == 0 and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.005)
        assert server.disconnects == 1
        await asyncio.gather(task, return_exceptions=True)
        # LiteLLM's retry of the same request is refused without reaching the model
        calls = len(server.calls)
        resp = await client.post(f"{url}/chat/completions", json=CHAT, headers={**AUTH, PAIR_HEADER: "req-2"})
        assert resp.status_code == 400 and "hung up" in resp.json()["error"]["message"]
        assert len(server.calls) == calls and leg.refused_total == 1

    run_leg(body, server)


def test_unreachable_backend_is_reported_on_the_pair():
    server = OpenAIBackend()
    dead = {"gone": BackendConfig("gone", "http://127.0.0.1:9/v1", model="m")}  # nothing listens on 9

    async def body(url, registry, leg, client):
        pair = registry.open("req-3", "gone", None)
        resp = await client.post(url.replace("/leg/local", "/leg/gone") + "/chat/completions", json=CHAT,
                                 headers={**AUTH, PAIR_HEADER: "req-3"})
        assert resp.status_code == 502
        assert "cannot reach backend 'gone'" in pair.unreachable

    run_leg(body, server, dead)


def test_plain_request_is_streamed_from_the_backend_and_assembled():
    """So that a hang-up can stop llama-server, which ignores it for non-streaming calls."""
    server = OpenAIBackend(chunks=3)

    async def body(url, registry, leg, client):
        pair = registry.open("req-4", "local", None)
        resp = await client.post(f"{url}/chat/completions", json=CHAT, headers={**AUTH, PAIR_HEADER: "req-4"})
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
        sent = server.calls[-1]["body"]
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        out = resp.json()
        assert out["object"] == "chat.completion"
        assert out["choices"][0]["message"] == {"role": "assistant", "content": "t0t1t2"}
        assert out["choices"][0]["finish_reason"] == "stop"
        assert out["timings"]["cache_n"] == 17 and pair.timings["cache_n"] == 17

    run_leg(body, server)


def test_assembler_rebuilds_tool_calls_and_reasoning():
    from backend.proxy.assemble import ChatCompletionAssembler

    chunks = [
        {"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "think "}}]},
        {"choices": [{"index": 0, "delta": {"reasoning_content": "more"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "Read", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"file"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\": \"a\"}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    ]
    raw = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"
    asm = ChatCompletionAssembler()
    for i in range(0, len(raw), 7):  # split anywhere
        asm.feed(raw[i:i + 7])
    out = asm.result()
    assert out["id"] == "c1" and out["usage"] == {"prompt_tokens": 5, "completion_tokens": 9}
    msg = out["choices"][0]["message"]
    assert msg["content"] is None and msg["reasoning_content"] == "think more"
    assert msg["tool_calls"] == [{"id": "call_1", "type": "function",
                                  "function": {"name": "Read", "arguments": "{\"file\": \"a\"}"}}]
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def test_leg_takes_bodies_over_aiohttps_1_mib_default():
    """LiteLLM passes on what the front accepted (proxy.max_body_mb): 1.3 MB must not get a 413."""
    server = OpenAIBackend(chunks=1)

    async def body(url, registry, leg, client):
        big = {**CHAT, "tools": [{"type": "function", "function": {"name": "t", "description": "d" * 1_300_000,
                                                                   "parameters": {"type": "object"}}}]}
        resp = await client.post(f"{url}/chat/completions", json=big, headers=AUTH)
        assert resp.status_code == 200, resp.text[:300]
        assert len(server.calls[-1]["body"]["tools"][0]["function"]["description"]) == 1_300_000

    run_leg(body, server)
