"""Warm-up of a llama-server that came up cold, and a user request that arrives during one.

A llama-server the user runs (the tiny model, native route) serves one long prompt; then it is
restarted by hand. ccbridge sees the new process (its start time) and replays the kept prompt with
max_tokens 1. A user request sent while that replay is reading its prompt goes first: the replay is
dropped and the request starts soon after its arrival (measured against the same request on the idle
server: under 1 s in quiet runs, up to ~1.7 s on a loaded machine),
and once idle again the warm-up finishes, so the long prompt's next turn comes from the cache.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from backend.bridge import Bridge
from backend.config import load_config
from tests.support.config import chain_config
from tests.support.llama import LlamaServer, free_port
from tests.support.sessions import served_turns

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(200)]

# ~12k tokens for the tiny model's vocabulary: llama-server reads them for seconds on a busy 2-core machine.
LONG_SYSTEM = " ".join(f"rule {n}: keep answers short and exact." for n in range(300))
LONG = 5_000


def body(system: str, prompt: str, **extra) -> dict:
    return {"model": "claude-opus-5-5", "max_tokens": 4, "stream": True, "system": system,
            "messages": [{"role": "user", "content": prompt}], **extra}


async def first_token(client: httpx.AsyncClient, payload: dict, whole: bool = False) -> float:
    """Seconds from sending to the first content event of a streamed answer; the rest is read only
    when `whole` (else the client hangs up, and llama-server logs no timings for the request)."""
    began = time.monotonic()
    first = None
    async with client.stream("POST", "/v1/messages", json=payload) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if first is None and ("content_block_delta" in line or "message_stop" in line):
                first = time.monotonic() - began
                if not whole:
                    break
    assert first is not None, "no content"
    return first


def test_a_user_request_goes_first_and_the_warm_up_then_fills_the_cache(tiny_model: Path, tmp_path: Path):
    port = free_port()
    server = LlamaServer(tiny_model, ctx=131072, parallel=1, port=port, extra_args=("--ignore-eos",))
    config = tmp_path / "ccbridge.yaml"
    chain_config(config, {"local": {"api_base": f"http://127.0.0.1:{port}/v1", "route": "native"}}, litellm=False)

    async def main() -> dict:
        bridge = Bridge(load_config(config), run_dir=tmp_path / "run")
        await bridge.start()
        out: dict = {}
        try:
            async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=300, trust_env=False) as client:
                out["cold_long"] = await first_token(client, body(LONG_SYSTEM, "first"))
                out["idle_short"] = await first_token(client, body("You answer.", "quick question"))
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)  # the same port: a restart by hand
                deadline = time.monotonic() + 30  # the monitor sees the new process, the warm-up starts
                while not bridge.warmer.progress.get("local"):
                    assert time.monotonic() < deadline, (bridge.warmer.recent, bridge.monitor.snapshot().backends)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # well into its prompt
                out["during_warmup_short"] = await first_token(client, body("You answer.", "quick question 2"))
                out["cancelled"] = [w for w in bridge.warmer.recent if w["cancelled"]]
                deadline = time.monotonic() + 120
                while not any((w["prompt_tokens"] or 0) > LONG and not w["cancelled"] for w in bridge.warmer.recent):
                    assert time.monotonic() < deadline, [(w["prompt_tokens"], w["cached_tokens"], w["cancelled"],
                                                          w["error"]) for w in bridge.warmer.recent]
                    await asyncio.sleep(0.1)
                out["warmups"] = list(bridge.warmer.recent)
                out["warm_long"] = await first_token(client, body(LONG_SYSTEM, "first"), whole=True)
                out["records"] = await bridge.recent(10)
                out["status"] = bridge.status_now()
        finally:
            await bridge.stop()
        return out

    with server:
        out = asyncio.run(main())
        served = served_turns(server.log_text())  # the restarted server's requests
    print({k: v for k, v in out.items() if k not in ("records", "status")})
    # The user request waited less than 1 s more than on the idle server in quiet runs (0.89, 0.93,
    # 0.96 s) but 1.68 s on a loaded machine: llama-server notices the warm-up's closed connection only
    # when it next polls it (about once a second), then finishes its current batch. The bound asserted
    # here is the loaded one; a warm-up sent in short steps (not built yet) would bring it under 1 s.
    assert out["during_warmup_short"] - out["idle_short"] < 2.0, out
    assert out["cancelled"], out["warmups"]  # it went first: the warm-up in flight was dropped for it
    done = [w for w in out["warmups"] if not w["cancelled"] and (w["prompt_tokens"] or 0) > LONG]
    assert done, out["warmups"]
    # The long prompt came back from cache: llama-server's log says so for its last request. The record
    # says so too where it knows; it does not when llama-server left out `message_start` and the tiny
    # model's whole short answer came at once (each byte token is part of a character until the end).
    assert served[-1].prompt_tokens > LONG and served[-1].share >= 0.95, served
    share = out["records"][0].cache_share
    assert share is None or share == pytest.approx(served[-1].share), (out["records"][0], served[-1])
    assert out["warm_long"] < out["cold_long"] / 3, out
    # warm-ups are not requests: four user requests recorded, none of them a warm-up
    assert len(out["records"]) == 4, out["records"]
