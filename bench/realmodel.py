"""The real Qwen2.5-Coder 0.5B model at work: its prompt read speed and time to first token
through both routes against a direct connection, and Claude Code 2.1.332 using it.

    .venv/bin/python -m bench.realmodel [--quick]

`python -m bench.suite` runs it too (its "real model" rows; `--quick` skips them: they take
minutes on two cores). Prompt speed is llama-server's own (`/metrics`: prompt tokens and
prompt seconds, before and after each request); each request starts with a new line so
nothing is served from its cache. Claude Code runs `ccbridge claude -p "Read secret.txt and
tell me the word in it"` in a folder holding that file, once with its full prompt (13 tools,
~12k tokens) and once lean (`--tools Read --system-prompt ...`); ccbridge's records and kept
bodies say how many requests it made, how many calls were repaired, and whether the file's
word reached the model in a tool result (Claude Code ran the Read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from backend.monitor.llama import parse_prometheus
from bench.harness import REPO, free_port, machine, save, table
from tests.support.claude import claude_binary, trusted_home
from tests.support.config import write_config
from tests.support.llama import LlamaServer, cache_dir
from tests.support.qwen import qwen_llama_server
from tests.support.serve import ServeProcess

CLAUDE_VERSION = "2.1.332"
SECRET_WORD = "pelican"
PROMPT = "Read secret.txt and tell me the word in it"
LEAN = ["--tools", "Read", "--system-prompt", "You are a coding assistant. Use the tools to act."]
# A small model can loop writing calls until max_tokens (seen: 8,000 at ~5 tok/s): cap it as a user would
MAX_TOKENS = 1024
# ~1,100 tokens of plain text: long enough to time the read, short enough for two cores
FILLER = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog near the river bank." for i in range(60))


def _config(path: Path, api_base: str) -> Path:
    return write_config(path, proxy={"port": free_port()}, litellm={"port": free_port()},
                        backends={"local": {"api_base": api_base, "max_tokens": MAX_TOKENS},
                                  "native": {"api_base": api_base, "route": "native"}},
                        aliases={"claude-native": "native", "*": "local"})


def _prompt_counters(llama: LlamaServer) -> tuple[float, float]:
    text = httpx.get(f"{llama.base_url}/metrics", timeout=10, trust_env=False).text
    samples = parse_prometheus(text)
    return samples.get("llamacpp:prompt_tokens_total", 0.0), samples.get("llamacpp:prompt_seconds_total", 0.0)


async def _first_token(url: str, model: str) -> float:
    """Seconds from sending a new (uncached) prompt to its first text delta."""
    body = {"model": model, "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": f"{uuid.uuid4().hex}\n{FILLER}\nSummarise in one word."}]}
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01"}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session, \
            session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=900)) as resp:
        async for line in resp.content:
            if b"content_block_delta" in line:
                return time.perf_counter() - started
    raise RuntimeError(f"no content from {url}")


def prompt_reads(llama: LlamaServer, serve: ServeProcess, repeats: int) -> dict[str, Any]:
    paths = {"direct (llama-server /v1/messages)": (f"{llama.base_url}/v1/messages", "local"),
             "ccbridge native route": (f"{serve.url}/v1/messages", "claude-native"),
             "ccbridge LiteLLM route": (f"{serve.url}/v1/messages", "claude-litellm")}
    out: dict[str, Any] = {}
    for name, (url, model) in paths.items():
        ttfts, speeds = [], []
        for _ in range(repeats):
            tokens0, seconds0 = _prompt_counters(llama)
            ttfts.append(asyncio.run(_first_token(url, model)))
            time.sleep(0.5)  # llama-server's counters move when the request ends
            tokens1, seconds1 = _prompt_counters(llama)
            speeds.append((tokens1 - tokens0) / (seconds1 - seconds0) if seconds1 > seconds0 else 0.0)
            out.setdefault("prompt_tokens", tokens1 - tokens0)
        out[name] = {"ttft_s": sorted(ttfts)[len(ttfts) // 2], "prompt_tps": sorted(speeds)[len(speeds) // 2]}
    direct = out["direct (llama-server /v1/messages)"]["ttft_s"]
    for name in paths:
        out[name]["ttft_ratio"] = out[name]["ttft_s"] / direct
    return out


def claude_run(tmp: Path, config: Path, serve: ServeProcess, lean: bool) -> dict[str, Any]:
    home, work = trusted_home(tmp / ("lean" if lean else "full"))
    (work / "secret.txt").write_text(f"{SECRET_WORD}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(PATH=f"{claude_binary(CLAUDE_VERSION).parent}:{env.get('PATH', '/usr/bin:/bin')}", HOME=str(home),
               CCBRIDGE_CACHE_DIR=str(cache_dir()), DISABLE_AUTOUPDATER="1")
    before = {r["id"] for r in serve.requests(200)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "backend", "claude", "--config", str(config), "-p", PROMPT,
                             "--max-turns", "4", *(LEAN if lean else [])], cwd=work, env=env, capture_output=True,
                            text=True, timeout=1800, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    records = [r for r in serve.requests(200) if r["id"] not in before and r["path"] == "/v1/messages"]
    calls, results = [], []  # the tool calls Claude Code ran (from its next request) and what they returned
    for r in sorted(records, key=lambda r: r["started_at"]):
        bodies = httpx.get(f"{serve.url}/ccbridge/api/requests/{r['id']}/bodies", timeout=10, trust_env=False)
        if bodies.status_code != 200:
            continue
        try:
            messages = json.loads(bodies.json()["request"]).get("messages") or []
        except (ValueError, AttributeError):
            continue  # a body cut at history.body_max_kb
        for message in messages[-2:]:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if block.get("type") == "tool_use" and message.get("role") == "assistant":
                    calls.append(f"{block.get('name')}({json.dumps(block.get('input'))[:120]})")
                elif block.get("type") == "tool_result":
                    results.append(json.dumps(block.get("content"))[:200])
    read_it = any(SECRET_WORD in r for r in results)
    first = min(records, key=lambda r: r["started_at"]) if records else {}
    return {"exit": result.returncode, "wall_s": wall, "requests": len(records),
            "repairs": sum(r["tool_repairs"] for r in records), "read_the_file": read_it,
            "tools_run": calls, "tool_results": results,
            "said_the_word": SECRET_WORD in result.stdout.lower(), "answer": result.stdout.strip()[-300:],
            "first_turn_prompt": (first.get("backend_prompt_n") or 0) + (first.get("backend_cache_n") or 0),
            "first_turn_ttft_s": (first.get("ttft_ms") or 0) / 1000, "stderr": result.stderr.strip()[-300:]}


def measure(tmp: Path, quick: bool = False, runs: tuple[str, ...] = ("lean", "full"),
            reads: bool = True) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    with qwen_llama_server(ctx=32768) as llama:
        config = _config(tmp / "ccbridge.yaml", llama.api_base)
        with ServeProcess(config, env) as serve:
            data: dict[str, Any] = {"prompt_read": prompt_reads(llama, serve, 1 if quick else 3)} if reads else {}
            for run in () if quick else runs:
                data[f"claude_{run}"] = claude_run(tmp, config, serve, lean=run == "lean")
    return data


def render(data: dict[str, Any]) -> str:
    reads = data.get("prompt_read") or {}
    rows = [("path", "time to first token", "vs direct", "prompt read (llama-server)")]
    for name, r in reads.items():
        if isinstance(r, dict):
            rows.append((name, f"{r['ttft_s']:.2f} s", f"{r['ttft_ratio']:.3f}", f"{r['prompt_tps']:.0f} tok/s"))
    out = [f"prompt of {reads.get('prompt_tokens', 0):.0f} tokens, none cached", table(rows)] if reads else []
    runs = [("claude -p, 2.1.332", "wall", "requests", "repaired calls", "read the file", "said the word",
             "first turn prompt", "first token")]
    for key, label in (("claude_lean", "lean (--tools Read)"), ("claude_full", "full prompt")):
        if key in data:
            r = data[key]
            runs.append((label, f"{r['wall_s']:.0f} s", str(r["requests"]), str(r["repairs"]),
                         "yes" if r["read_the_file"] else "no", "yes" if r["said_the_word"] else "no",
                         f"{r['first_turn_prompt']:,}", f"{r['first_turn_ttft_s']:.1f} s"))
    if len(runs) > 1:
        out.append(table(runs))
    return "\n\n".join(out)


def suite_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """bench.suite's rows: first token and prompt speed per path, and the Claude Code runs."""
    reads = data["prompt_read"]
    direct = reads["direct (llama-server /v1/messages)"]
    rows = []
    for name in ("ccbridge native route", "ccbridge LiteLLM route"):
        r = reads[name]
        rows.append((f"real Qwen 0.5B, {reads['prompt_tokens']:.0f}-token prompt: {name}, first token / prompt read",
                     f"{r['ttft_s']:.2f} s ({r['ttft_ratio']:.3f} x direct) / {r['prompt_tps']:.0f} tok/s",
                     f"direct {direct['ttft_s']:.2f} s / {direct['prompt_tps']:.0f} tok/s"))
    for key, label in (("claude_lean", "lean"), ("claude_full", "full prompt")):
        if key in data:
            r = data[key]
            rows.append((f"claude -p 2.1.332 on real Qwen 0.5B ({label}): read the file / repaired calls",
                         f"{'yes' if r['read_the_file'] else 'no'} / {r['repairs']} in {r['requests']} requests, "
                         f"{r['wall_s']:.0f} s", f"first turn {r['first_turn_prompt']:,} tokens"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one prompt read per path, no Claude Code runs")
    parser.add_argument("--claude", choices=("lean", "full", "both", "none"), default="both",
                        help="which Claude Code runs (default: both)")
    parser.add_argument("--no-reads", action="store_true", help="skip the prompt reads")
    args = parser.parse_args()
    runs = {"both": ("lean", "full"), "none": ()}.get(args.claude, (args.claude,))
    with tempfile.TemporaryDirectory(prefix="ccbridge-realmodel-") as tmp:
        data = measure(Path(tmp), args.quick, runs, reads=not args.no_reads)
    path = save("realmodel", {"machine": machine(), **data})
    print(render(data))
    for key in ("claude_lean", "claude_full"):
        if key in data:
            print(f"{key}: exit {data[key]['exit']}, answer: {data[key]['answer']!r}")
            print(f"  tools Claude Code ran: {data[key]['tools_run']}; results: {data[key]['tool_results']}")
    print(f"saved {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
