"""The core figures, measured side by side in one run.

    .venv/bin/python -m bench.core [--quick]

1. proxy overhead, non-streaming, concurrency 1: direct vs through `ccbridge serve`
   (litellm.url pointed at a zero-latency Anthropic backend), p50 / p99 added;
2. streaming time to first byte added, p50 / p99;
3. 20 concurrent ~1 s streams: wall time through ccbridge / direct;
4. `ccbridge serve` start to accepting connections;
5. the real chain (llama-server --ignore-eos, managed LiteLLM): how soon the
   slot is free after the client hangs up;
6. `claude -p "Hello world"` round trip through the real chain, both pinned releases.
Prints one table and writes bench/results/core-<time>.json (and core-latest.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import httpx

from bench.harness import REPO, ZeroBackend, free_port, median, pct, save, table, wait_port

BODY = {"model": "claude-opus-4-8", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def url_mode_config(tmp: Path, upstream: str) -> Path:
    path = tmp / "ccbridge.yaml"
    path.write_text(
        f"proxy:\n  host: 127.0.0.1\n  port: {free_port()}\nlitellm:\n  url: {upstream}\n"
        "backends:\n  local:\n    api_base: http://127.0.0.1:9/v1\n    model: m\n"
        'aliases:\n  "*": local\n')
    return path


def start_serve(config: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], float]:
    port = int(next(line.split(":")[1] for line in config.read_text().splitlines() if "port:" in line))
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_port(port)
    return proc, time.monotonic() - t0


async def sequential(session: aiohttp.ClientSession, url: str, n: int, stream: bool) -> list[float]:
    """Latency (non-stream) or time to first byte (stream), ms, n requests one after another."""
    body = {**BODY, "stream": stream}
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(url + "/v1/messages", json=body) as resp:
            if stream:
                await resp.content.readany()
                out.append((time.perf_counter() - t0) * 1000)
                await resp.read()
            else:
                await resp.read()
                out.append((time.perf_counter() - t0) * 1000)
    return out


async def concurrent_streams(session: aiohttp.ClientSession, url: str, n: int) -> float:
    body = {**BODY, "stream": True, "metadata": {"n_events": 20, "gap_ms": 50}}  # ~1 s each

    async def one() -> None:
        async with session.post(url + "/v1/messages", json=body) as resp:
            await resp.read()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def proxy_overhead(direct: str, proxy: str, n: int, rounds: int) -> dict:
    res: dict[str, dict[str, list[float]]] = {k: {"direct": [], "proxy": []}
                                              for k in ("p50", "p99", "ttfb50", "ttfb99", "wall20")}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in (direct, proxy):  # warm both paths
            await sequential(session, target, 50, False)
            await sequential(session, target, 20, True)
        for _ in range(rounds):
            for name, target in (("direct", direct), ("proxy", proxy)):
                lat = await sequential(session, target, n, False)
                res["p50"][name].append(pct(lat, 50))
                res["p99"][name].append(pct(lat, 99))
                ttfb = await sequential(session, target, n, True)
                res["ttfb50"][name].append(pct(ttfb, 50))
                res["ttfb99"][name].append(pct(ttfb, 99))
                res["wall20"][name].append(await concurrent_streams(session, target, 20))
    return {k: {t: median(v) for t, v in d.items()} for k, d in res.items()}


def hang_up_figures(tmp: Path, env: dict[str, str], repeats: int) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.support.llama import LlamaServer
    from tests.support.serve import ServeProcess, write_chain_config
    from tests.support.tiny_model import write_tiny_model

    model = write_tiny_model(tmp / "tiny.gguf")
    freed_ms: list[float] = []
    with LlamaServer(model, ctx=65536, extra_args=("--slots", "--ignore-eos")) as llama:
        t0 = time.monotonic()
        serve = ServeProcess(write_chain_config(tmp / "chain.yaml", llama.api_base), env).start()
        ready_s = time.monotonic() - t0
        try:
            for _ in range(repeats):
                freed_ms.append(_one_hang_up(serve.url, llama.base_url))
        finally:
            serve.stop()
    return {"slot_free_ms": freed_ms, "serve_to_litellm_ready_s": ready_s}


def _busy(base_url: str) -> bool:
    return any(s.get("is_processing") for s in httpx.get(f"{base_url}/slots", timeout=5).json())


def _one_hang_up(proxy_url: str, llama_url: str) -> float:
    deltas = 0
    hang_up = threading.Event()
    closed = {}

    def reader() -> None:
        nonlocal deltas
        body = {**BODY, "max_tokens": 60000, "stream": True}
        with httpx.Client(timeout=60) as client, client.stream("POST", f"{proxy_url}/v1/messages", json=body) as r:
            for chunk in r.iter_raw():
                deltas += chunk.count(b"content_block_delta")
                if hang_up.is_set():
                    break
            closed["at"] = time.monotonic()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    while deltas < 50:
        time.sleep(0.01)
    assert _busy(llama_url)
    hang_up.set()
    thread.join(10)
    # poll at 50 ms: polling /slots much faster was seen to delay llama-server's own cancel
    while _busy(llama_url):
        time.sleep(0.05)
    freed = (time.monotonic() - closed["at"]) * 1000
    time.sleep(0.5)
    return freed


def claude_round_trips(tmp: Path, env: dict[str, str], repeats: int) -> dict:
    from tests.support.claude import CLAUDE_VERSIONS, run_claude
    from tests.support.llama import LlamaServer
    from tests.support.serve import ServeProcess, write_chain_config
    from tests.support.tiny_model import write_tiny_model

    model = write_tiny_model(tmp / "tiny2.gguf")
    out: dict[str, list[float]] = {}
    with LlamaServer(model, ctx=65536, extra_args=("--slots",)) as llama:
        with ServeProcess(write_chain_config(tmp / "claude.yaml", llama.api_base), env) as serve:
            for version in CLAUDE_VERSIONS:
                run_claude(version, serve.url, timeout=240)  # warm: first turn fills llama's prompt cache
                times = []
                for _ in range(repeats):
                    t0 = time.monotonic()
                    result = run_claude(version, serve.url, timeout=240)
                    times.append(time.monotonic() - t0)
                    if result.returncode != 0:
                        raise RuntimeError(f"claude {version} failed: {result.stderr[-500:]}")
                out[version] = times
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    n, rounds, repeats = (100, 2, 2) if args.quick else (300, 3, 3)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**__import__("os").environ, "CCBRIDGE_CONFIG_DIR": str(tmp / "c"),
               "CCBRIDGE_DATA_DIR": str(tmp / "d")}
        with ZeroBackend() as backend:
            config = url_mode_config(tmp, backend.url)
            starts = []
            for _ in range(5):
                proc, took = start_serve(config, env)
                starts.append(took)
                proc.terminate()
                proc.wait(10)
            proc, _ = start_serve(config, env)
            try:
                port = int(next(line.split(":")[1] for line in config.read_text().splitlines() if "port:" in line))
                over = asyncio.run(proxy_overhead(backend.url, f"http://127.0.0.1:{port}", n, rounds))
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
        hang = hang_up_figures(tmp, env, repeats + 2)
        claude = claude_round_trips(tmp, env, repeats)

    def added(key: str) -> float:
        return over[key]["proxy"] - over[key]["direct"]

    data = {
        "nonstream_p50_ms": over["p50"], "nonstream_p99_ms": over["p99"],
        "ttfb_p50_ms": over["ttfb50"], "ttfb_p99_ms": over["ttfb99"],
        "concurrent20_wall_s": over["wall20"],
        "added_p50_ms": added("p50"), "added_p99_ms": added("p99"),
        "added_ttfb_p50_ms": added("ttfb50"), "added_ttfb_p99_ms": added("ttfb99"),
        "concurrent20_ratio": over["wall20"]["proxy"] / over["wall20"]["direct"],
        "serve_accepting_s": median(starts), "serve_accepting_all_s": starts,
        **hang,
        "claude_p_s": claude,
    }
    rows = [("figure", "ccbridge", "direct / note")]
    rows.append(("non-streaming latency p50 / p99 added",
                 f"{data['added_p50_ms']:+.2f} / {data['added_p99_ms']:+.2f} ms",
                 f"direct {over['p50']['direct']:.2f} / {over['p99']['direct']:.2f} ms"))
    rows.append(("streaming first byte p50 / p99 added",
                 f"{data['added_ttfb_p50_ms']:+.2f} / {data['added_ttfb_p99_ms']:+.2f} ms",
                 f"direct {over['ttfb50']['direct']:.2f} / {over['ttfb99']['direct']:.2f} ms"))
    rows.append(("20 concurrent ~1 s streams, wall", f"{over['wall20']['proxy']:.3f} s",
                 f"direct {over['wall20']['direct']:.3f} s, ratio {data['concurrent20_ratio']:.3f}"))
    rows.append(("`ccbridge serve` to accepting (median of 5)", f"{data['serve_accepting_s'] * 1000:.0f} ms",
                 "LiteLLM not needed for this figure"))
    rows.append(("`ccbridge serve` to LiteLLM ready", f"{hang['serve_to_litellm_ready_s']:.1f} s",
                 "requests wait for it meanwhile"))
    freed = hang["slot_free_ms"]
    rows.append(("slot free after hang-up (real chain)", f"median {median(freed):.0f} ms, max {max(freed):.0f} ms",
                 f"{len(freed)} runs, /slots polled every 50 ms"))
    for version, times in claude.items():
        rows.append((f"claude -p round trip, {version}", f"median {median(times):.2f} s",
                     f"{len(times)} runs, tiny model, warm cache"))
    print(table(rows))
    print(f"saved {save('core', data)}")
    print(json.dumps({"machine": __import__("bench.harness").harness.machine()}))


if __name__ == "__main__":
    main()
