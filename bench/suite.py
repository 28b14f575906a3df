"""The benchmark suite: ccbridge against a direct connection, side by side in one run.

    .venv/bin/python -m bench.suite [--quick] [--no-real]

Against a zero-latency Anthropic/OpenAI backend (bench/zero_backend.py, its own
process), the same requests go
  direct             -> backend
  ccbridge           -> proxy only (`litellm.url` pointed at the backend)
  ccbridge+LiteLLM   -> proxy -> managed LiteLLM -> backend leg -> backend
  LiteLLM alone      -> a LiteLLM pointed straight at the backend (what ccbridge adds on top)
and on the real tiny llama-server: the native route, LiteLLM routes, `claude -p`,
the hang-up, prompt-cache reuse of two interleaved sessions with and
without slot pinning, and (bench/cache.py) the prompt cache with real Claude Code
sessions and subagents, before and after ccbridge removes the billing line, and
(bench/groups.py) four Claude Code sessions on a group of two llama-servers, one of them
killed mid-run, with session affinity and with plain round-robin, and (bench/realmodel.py, not
with --quick) the real Qwen2.5-Coder 0.5B model's prompt read through both routes against
direct, and Claude Code 2.1.332 reading a file with it, and (bench/statusline.py) the status line
command's own time while serve is under load.
Prints one table; writes bench/results/suite-<time>.json (and suite-latest.json).
Figures are ratios or differences within this run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil

from bench import cache, groups, realmodel, statusline
from bench.harness import REPO, ZeroBackend, free_port, litellm_alone, machine, median, pct, save, table, wait_port

sys.path.insert(0, str(REPO))

FAILURES: list[str] = []
BODY = {"model": "claude-opus-4-8", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


# -- processes ------------------------------------------------------------------
def serve_config(tmp: Path, name: str, *, url: str | None = None, api_base: str = "http://127.0.0.1:9/v1",
                 **backend: Any) -> Path:
    """A serve config: LiteLLM at `url` (proxy only) or managed, one backend `local` (plus `backend` fields)."""
    from tests.support.config import write_config

    return write_config(tmp / f"{name}.yaml", proxy={"port": free_port()},
                        litellm={"url": url} if url else {"port": free_port()},
                        backends={"local": {"api_base": api_base, "model": "m", **backend}})


@contextlib.contextmanager
def serve(config: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    from tests.support.serve import ServeProcess

    proc = ServeProcess(config, env).start()
    try:
        yield proc.url, proc.proc.pid
    finally:
        proc.stop()


# -- measurements ---------------------------------------------------------------
async def sequential(session: aiohttp.ClientSession, url: str, n: int, stream: bool,
                     headers: dict[str, str] | None = None, body: dict | None = None) -> dict[str, list[float]]:
    body = {**(body or BODY), "stream": stream}
    lat, gaps = [], []
    for _ in range(n):
        try:
            await _one(session, url, body, headers, stream, lat, gaps)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, RuntimeError) as exc:
            # a keep-alive connection the server had just closed, or a failed answer:
            # counted, then measured once more (a second failure stops the run)
            FAILURES.append(f"{url}: {exc}")
            await _one(session, url, body, headers, stream, lat, gaps)
    return {"lat": lat, "gaps": gaps}


async def _one(session: aiohttp.ClientSession, url: str, body: dict, headers: dict[str, str] | None, stream: bool,
               lat: list[float], gaps: list[float]) -> None:
    t0 = time.perf_counter()
    async with session.post(url + "/v1/messages", json=body, headers=headers or {}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}: {(await resp.read())[:300]!r}")
        if stream:
            await resp.content.readany()
            first = time.perf_counter()
            lat.append((first - t0) * 1000)
            last = first
            async for _chunk in resp.content.iter_any():
                now = time.perf_counter()
                gaps.append((now - last) * 1000)
                last = now
        else:
            await resp.read()
            lat.append((time.perf_counter() - t0) * 1000)


async def latency_rounds(targets: dict[str, tuple[str, dict[str, str]]], n: int, rounds: int) -> dict:
    """Per target: medians over rounds of p50/p99 latency, time to first byte and event gaps."""
    out: dict[str, dict[str, list[float]]] = {name: {} for name in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for url, headers in targets.values():
            await sequential(session, url, 30, False, headers)
            await sequential(session, url, 10, True, headers)
        for _ in range(rounds):
            for name, (url, headers) in targets.items():
                plain = await sequential(session, url, n, False, headers)
                streamed = await sequential(session, url, n, True, headers)
                for key, values in (("p50", pct(plain["lat"], 50)), ("p99", pct(plain["lat"], 99)),
                                    ("ttfb50", pct(streamed["lat"], 50)), ("ttfb99", pct(streamed["lat"], 99)),
                                    ("gap50", pct(streamed["gaps"], 50) if streamed["gaps"] else 0.0),
                                    ("gap99", pct(streamed["gaps"], 99) if streamed["gaps"] else 0.0)):
                    out[name].setdefault(key, []).append(values)
    return {name: {k: median(v) for k, v in d.items()} for name, d in out.items()}


async def concurrent_streams(url: str, n: int) -> float:
    body = {**BODY, "stream": True, "metadata": {"n_events": 20, "gap_ms": 50}}  # ~1 s each
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one() -> None:
            async with session.post(url + "/v1/messages", json=body) as resp:
                await resp.read()
                assert resp.status == 200

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0


async def throughput(url: str, total: int, concurrency: int) -> float:
    """Requests per second, non-streaming, `concurrency` at a time."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        left = total

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url + "/v1/messages", json=BODY) as resp:
                    await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    """Resident memory of the ccbridge process (in `litellm.url` mode it has no children)."""
    return psutil.Process(pid).memory_info().rss / 2**20


# -- the real chain ---------------------------------------------------------------
def rss_figures(url: str, pid: int, quick: bool) -> dict:
    """Serve's memory over many requests, read once it has reached its level.

    The first ~20k requests grow RSS by ~30 MB (51 -> 81 MB here) and then it stays: the
    bounded windows (cache shares, misses, failures) fill, SQLite's page cache fills, and the
    history writer's queue reaches its steady depth. So the level is read after a warm-up
    past that, and growth is measured from there over `requests` more, read at four marks."""
    warm, total = (5_000, 20_000) if quick else (25_000, 100_000)
    idle = rss_mb(pid)
    asyncio.run(throughput(url, warm, 32))
    time.sleep(1)  # the history writer's last batch
    level = rss_mb(pid)
    marks = []
    for _ in range(4):
        asyncio.run(throughput(url, total // 4, 32))
        marks.append(rss_mb(pid))
    time.sleep(1)
    return {"idle": idle, "warm_up": warm, "level": level, "marks": marks, "after": rss_mb(pid), "requests": total}


def hang_up_figures(tmp: Path, env: dict[str, str], repeats: int) -> dict:
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


def real_chain(tmp: Path, env: dict[str, str], n: int, quick: bool) -> dict:
    from tests.support.claude import CLAUDE_VERSIONS, run_claude
    from tests.support.llama import LlamaServer
    from tests.support.tiny_model import write_tiny_model

    model = write_tiny_model(tmp / "tiny.gguf")
    results: dict = {}
    with LlamaServer(model, ctx=65536) as llama:
        native_cfg = serve_config(tmp, "native", api_base=llama.api_base, route="native")
        chain_cfg = serve_config(tmp, "chain", api_base=llama.api_base)
        tiny = {**BODY, "max_tokens": 1}
        with serve(native_cfg, env) as (native_url, _), serve(chain_cfg, env) as (chain_url, _), \
                litellm_alone(llama.api_base) as (alone_url, key), peer(llama.api_base) as ccr_url:
            targets = {"llama-server direct": (llama.base_url, {}), "ccbridge native": (native_url, {}),
                       "ccbridge+LiteLLM": (chain_url, {}), "LiteLLM alone": (alone_url, {"x-api-key": key})}
            if ccr_url:
                targets["claude-code-router"] = (ccr_url, {})

            async def measure() -> dict:
                out: dict[str, dict[str, float]] = {}
                # llama-server drops reused connections after a stream: a new connection per
                # request for every target keeps the comparison fair
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                    for url, headers in targets.values():
                        await sequential(session, url, 5, False, headers, tiny)
                    for name, (url, headers) in targets.items():
                        plain = await sequential(session, url, n, False, headers, tiny)
                        streamed = await sequential(session, url, n, True, headers, tiny)
                        out[name] = {"p50": pct(plain["lat"], 50), "ttfb50": pct(streamed["lat"], 50)}
                return out

            results["routes"] = asyncio.run(measure())
            claude: dict[str, dict[str, float]] = {}
            repeats = 1 if quick else 3
            for version in CLAUDE_VERSIONS:
                env_model = {"ANTHROPIC_MODEL": "local"}  # the same traffic to both; LiteLLM knows "local"
                times: dict[str, list[float]] = {"ccbridge": [], "litellm": []}
                for _ in range(repeats + 1):  # the first round warms llama-server's prompt cache
                    for name, url, api_key in (("ccbridge", chain_url, "k"), ("litellm", alone_url, key)):
                        t0 = time.monotonic()
                        result = run_claude(version, url, api_key=api_key, extra_env=env_model, timeout=300)
                        if result.returncode != 0:
                            raise RuntimeError(f"claude {version} via {name}: {result.stdout[-300:]}")
                        times[name].append(time.monotonic() - t0)
                claude[version] = {k: median(v[1:]) for k, v in times.items()}
            results["claude"] = claude
    results["cache"] = cache_reuse(tmp, env, model)
    results["hang_up"] = hang_up_figures(tmp, env, 3 if quick else 6)
    return results


@contextlib.contextmanager
def peer(api_base: str) -> Iterator[str | None]:
    """claude-code-router (npm) in front of the same llama-server, when it can be installed."""
    from bench.peers import ccr_binary, claude_code_router

    if ccr_binary(install=True) is None:
        yield None
        return
    with claude_code_router(api_base) as url:
        yield url


def cache_reuse(tmp: Path, env: dict[str, str], model: Path) -> dict:
    """Two sessions, turns interleaved, two slots: cache share and TTFT on turns 2+."""
    from tests.support.llama import LlamaServer

    out = {}
    for label, extra in (("direct to llama-server", None), ("ccbridge native", {"route": "native"}),
                         ("ccbridge+LiteLLM", {}), ("ccbridge+LiteLLM, pin_slots", {"pin_slots": True})):
        with LlamaServer(model, ctx=2 * 16384, parallel=2) as llama:
            if extra is None:
                out[label] = _conversation(llama.base_url, llama)
                continue
            with serve(serve_config(tmp, f"cache{len(out)}", api_base=llama.api_base, **extra),
                       env) as (url, _):
                out[label] = _conversation(url, llama)
    return out


def _conversation(url: str, llama: Any) -> dict[str, float]:
    """Two sessions, four turns each, interleaved; the cache share of turns 2+ as llama-server's own
    log tells it (its Anthropic stream leaves out the usage event about 1 time in 4)."""
    from tests.support.sessions import wait_served_turns

    ttfts = []
    histories: dict[str, list[dict]] = {"a": [], "b": []}
    # no keep-alive: llama-server drops reused connections without notice (same for every target)
    with httpx.Client(timeout=120, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for turn in range(4):
            for name, history in histories.items():
                # ~5k tokens for the tiny model's byte-level tokenizer, growing each turn
                system = f"Session {name}. " + " ".join(f"{name}-fact-{i}" for i in range(400))
                history.append({"role": "user", "content": f"turn {turn} of {name}: " + "more " * 60})
                t0 = time.perf_counter()
                with client.stream("POST", f"{url}/v1/messages", headers={"x-claude-code-session-id": name},
                                   json={"model": "claude-opus-4-8", "max_tokens": 4, "stream": True,
                                         "system": system, "messages": history}) as resp:
                    if resp.status_code != 200:
                        raise RuntimeError(f"{url}: HTTP {resp.status_code}: {resp.read()[:300]!r}")
                    data = b""
                    ttft = None
                    for chunk in resp.iter_raw():
                        if ttft is None and b"content_block_delta" in chunk:
                            ttft = (time.perf_counter() - t0) * 1000
                        data += chunk
                history.append({"role": "assistant", "content": "ok"})
                if turn:
                    ttfts.append(ttft or 0.0)
    served = wait_served_turns(llama.log_text, 8)
    if len(served) != 8:
        raise RuntimeError(f"llama-server's log shows {len(served)} requests, not 8")
    shares = [t.share for t in served[2:]]
    return {"share_min": min(shares), "share_mean": sum(shares) / len(shares), "ttft_p50_ms": median(ttfts)}


def request_check_cost() -> dict:
    """What the front's request shape check costs on a body the size of a long Claude Code
    session (tools with schemas, many tool calls and results), against parsing it."""
    import timeit

    from backend.proxy import fastjson
    from backend.proxy.validate import check_messages_request

    tools = [{"name": f"Tool{i}", "description": "d" * 2000,
              "input_schema": {"type": "object", "properties": {f"p{j}": {"type": "string"} for j in range(6)}}}
             for i in range(20)]
    messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": "task " * 200}]}]
    for i in range(60):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "step " * 20},
            {"type": "tool_use", "id": f"toolu_{i}", "name": "Tool1", "input": {"p0": "x" * 40}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": [{"type": "text", "text": "r" * 600}]}]})
    body = {"model": "claude-opus-5-5", "max_tokens": 8000, "stream": True, "tools": tools,
            "system": [{"type": "text", "text": "s" * 8000}], "messages": messages}
    raw = json.dumps(body).encode()
    n = 300
    check = timeit.timeit(lambda: check_messages_request(body), number=n) / n
    parse = timeit.timeit(lambda: fastjson.loads(raw), number=n) / n
    return {"body_kb": len(raw) / 1024, "blocks": sum(len(m["content"]) for m in messages),
            "check_us": check * 1e6, "parse_us": parse * 1e6}


# -- main -------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-real", action="store_true", help="skip the real-chain parts (llama-server, Claude Code)")
    args = parser.parse_args()
    n, rounds = (100, 2) if args.quick else (300, 3)
    data: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
        with ZeroBackend() as zero:
            starts = []
            for i in range(5):
                cfg = serve_config(tmp, f"start{i}", url=zero.url)
                port = int(cfg.read_text().split("port: ")[1].split()[0])
                proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--config", str(cfg)], cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                starts.append(wait_port(port))
                proc.terminate()
                proc.wait(10)
            data["serve_accepting_s"] = median(starts)
            with serve(serve_config(tmp, "proxy", url=zero.url), env) as (proxy_url, proxy_pid), \
                    serve(serve_config(tmp, "managed", api_base=zero.url + "/v1"), env) as (managed_url, _), \
                    litellm_alone(zero.url + "/v1") as (alone_url, key):
                targets = {"direct": (zero.url, {}), "ccbridge": (proxy_url, {}),
                           "ccbridge+LiteLLM": (managed_url, {}), "LiteLLM alone": (alone_url, {"x-api-key": key})}
                data["latency"] = asyncio.run(latency_rounds(targets, n, rounds))
                walls = {name: [] for name in ("direct", "ccbridge")}
                for _ in range(rounds):
                    for name in walls:
                        walls[name].append(asyncio.run(concurrent_streams(targets[name][0], 100)))
                data["streams100_wall_s"] = {k: median(v) for k, v in walls.items()}
                tput = {name: [] for name in ("direct", "ccbridge")}
                for _ in range(rounds):
                    for name in tput:
                        tput[name].append(asyncio.run(throughput(targets[name][0], 1000 if args.quick else 3000, 32)))
                data["throughput_c32_rps"] = {k: median(v) for k, v in tput.items()}
                data["rss_mb"] = rss_figures(proxy_url, proxy_pid, args.quick)
        data["request_check"] = request_check_cost()
        data["statusline"] = statusline.measure(30 if args.quick else 100)
        if not args.no_real:
            data["real"] = real_chain(tmp, env, 30 if args.quick else 100, args.quick)
            data["prompt_cache"] = cache.measure(tmp / "prompt-cache", env, args.quick)
            data["groups"] = groups.measure(tmp / "groups", args.quick)
            if not args.quick:  # minutes on two cores: the real model reads ~115 prompt tokens a second
                data["real_model"] = realmodel.measure(tmp / "real-model")
    data["retried_requests"] = FAILURES
    print(render(data))
    if FAILURES:
        print(f"{len(FAILURES)} request(s) failed once and were retried: {FAILURES[:3]}")
    print(f"saved {save('suite', data)}  machine: {json.dumps(machine())}")


def render(d: dict) -> str:
    lat = d["latency"]
    add = {k: {m: lat[k][m] - lat[base][m] for m in lat[k]} for k, base in
           (("ccbridge", "direct"), ("ccbridge+LiteLLM", "LiteLLM alone"))}
    rows = [("figure", "measured", "target")]
    rows.append(("added latency, non-streaming, p50 / p99",
                 f"{add['ccbridge']['p50']:+.2f} / {add['ccbridge']['p99']:+.2f} ms", "<= 0.3 / <= 1 ms"))
    if "request_check" in d:
        c = d["request_check"]
        rows.append((f"request shape check, {c['body_kb']:.0f} KB body ({c['blocks']} blocks)",
                     f"{c['check_us']:.0f} us (parse {c['parse_us']:.0f} us)", "in the p50 above"))
    rows.append(("added time to first byte, p50 / p99",
                 f"{add['ccbridge']['ttfb50']:+.2f} / {add['ccbridge']['ttfb99']:+.2f} ms", "<= 0.3 ms (p50)"))
    rows.append(("inter-event gap p99, ccbridge vs direct",
                 f"{lat['ccbridge']['gap99']:.2f} vs {lat['direct']['gap99']:.2f} ms", "-"))
    rows.append(("ccbridge+LiteLLM vs LiteLLM alone, p50 / ttfb p50",
                 f"{add['ccbridge+LiteLLM']['p50']:+.2f} / {add['ccbridge+LiteLLM']['ttfb50']:+.2f} ms",
                 "-"))
    w = d["streams100_wall_s"]
    rows.append(("100 concurrent 1 s streams, wall ratio", f"{w['ccbridge'] / w['direct']:.3f}", "<= 1.05"))
    t = d["throughput_c32_rps"]
    rows.append(("throughput at c=32, ratio to direct",
                 f"{t['ccbridge'] / t['direct']:.2f} ({t['ccbridge']:.0f} vs {t['direct']:.0f} req/s)", ">= 0.5"))
    r = d["rss_mb"]
    if "level" in r:
        rows.append((f"proxy RSS after a {r['warm_up']:,}-request warm-up -> {r['requests']:,} more",
                     f"{r['level']:.1f} -> {r['after']:.1f} MB ({100 * (r['after'] / r['level'] - 1):+.1f} %; "
                     f"idle {r['idle']:.0f} MB)", "<= +10 %"))
    else:  # results saved before the warm-up was measured apart
        rows.append((f"proxy RSS idle -> after {r['requests']:,} requests",
                     f"{r['idle']:.1f} -> {r['after']:.1f} MB ({100 * (r['after'] / r['idle'] - 1):+.1f} %)",
                     "<= +10 %"))
    rows.append(("`ccbridge serve` to accepting", f"{d['serve_accepting_s'] * 1000:.0f} ms", "<= 1 s"))
    if d.get("statusline"):
        rows.extend(statusline.suite_rows(d["statusline"]))
    real = d.get("real")
    if real:
        routes = real["routes"]
        direct = routes["llama-server direct"]
        for name in ("ccbridge native", "claude-code-router", "ccbridge+LiteLLM", "LiteLLM alone"):
            if name not in routes:
                continue
            rows.append((f"real llama-server: {name} p50 / ttfb p50",
                         f"{routes[name]['p50']:.2f} / {routes[name]['ttfb50']:.2f} ms",
                         f"direct {direct['p50']:.2f} / {direct['ttfb50']:.2f} ms"))
        for version, times in real["claude"].items():
            share = times["ccbridge"] / times["litellm"] - 1
            rows.append((f"claude -p {version}: ccbridge+LiteLLM vs LiteLLM alone",
                         f"{times['ccbridge']:.2f} vs {times['litellm']:.2f} s ({100 * share:+.1f} %)", "<= 2 %"))
        hang = real["hang_up"]
        rows.append(("slot free after the client hangs up (real chain)",
                     f"median {median(hang['slot_free_ms']):.0f} ms, max {max(hang['slot_free_ms']):.0f} ms",
                     f"{len(hang['slot_free_ms'])} runs, /slots polled every 50 ms"))
        rows.append(("`ccbridge serve` to LiteLLM ready", f"{hang['serve_to_litellm_ready_s']:.1f} s",
                     "requests wait meanwhile"))
        for label, c in real["cache"].items():
            rows.append((f"cache share turns 2+, 2 sessions: {label}",
                         f"min {100 * c['share_min']:.1f} %, ttft p50 {c['ttft_p50_ms']:.0f} ms", ">= 90 %"))
    if d.get("prompt_cache"):
        rows.extend(cache.rows(d["prompt_cache"]))
    if d.get("groups"):
        rows.extend(groups.suite_rows(d["groups"]))
    if d.get("real_model"):
        rows.extend(realmodel.suite_rows(d["real_model"]))
    return table(rows)


if __name__ == "__main__":
    main()
