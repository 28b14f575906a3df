"""Peer projects measured against the same llama-server: claude-code-router (`ccr`).

    .venv/bin/python -m bench.peers [-n 50]

``ccr_binary()`` installs @musistudio/claude-code-router into the ccbridge tool
cache (next to llama-server and claude-code); ``claude_code_router(api_base)``
runs its server in the foreground under a throwaway HOME, pointed at an
OpenAI-compatible backend, and yields the base URL where Anthropic-format
``POST /v1/messages`` works. Run as a script it compares llama-server's own
``/v1/messages`` with the same requests through ccr on the tiny test model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.harness import free_port

CCR_PACKAGE = "@musistudio/claude-code-router"
CCR_VERSION = "2.0.0"
REPO = Path(__file__).resolve().parents[1]

# Environment variables that could send ccr's outbound requests elsewhere.
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# A --require hook that records every outbound connection and DNS lookup (one
# JSON line each), to check that ccr reaches nothing but the backend.
_AUDIT_JS = r"""
const fs = require("fs"), net = require("net"), dns = require("dns");
const out = process.env.CCR_AUDIT_FILE;
const note = (o) => { try { fs.appendFileSync(out, JSON.stringify(o) + "\n"); } catch {} };
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  let o = args[0];
  if (Array.isArray(o)) o = o[0];
  if (typeof o === "object" && o !== null) note({connect: o.path || `${o.host || "localhost"}:${o.port}`});
  else note({connect: `${args[1] || "localhost"}:${o}`});
  return connect.apply(this, args);
};
const lookup = dns.lookup;
dns.lookup = function (host, ...rest) { note({lookup: host}); return lookup.call(this, host, ...rest); };
"""


def cache_dir() -> Path:
    """The ccbridge tool cache (same rule as the build and install scripts)."""
    env = os.environ.get("CCBRIDGE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ccbridge"


def ccr_prefix(version: str | None = None) -> Path:
    return cache_dir() / "tools" / f"claude-code-router-{version or CCR_VERSION}"


def ccr_binary(install: bool = True) -> Path | None:
    """The cached ``ccr`` (installing it with npm when missing and ``install``); None if unavailable."""
    prefix = ccr_prefix()
    path = prefix / "node_modules" / ".bin" / "ccr"
    if path.exists():
        return path
    if not install:
        print(f"ccr: not installed at {path}")
        return None
    npm = shutil.which("npm")
    if npm is None:
        print("ccr: npm not found on PATH")
        return None
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix", str(prefix),
           f"{CCR_PACKAGE}@{CCR_VERSION}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"ccr: npm install failed: {exc!r}")
        return None
    if proc.returncode != 0 or not path.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        print(f"ccr: npm install exited with {proc.returncode}:\n{tail}")
        return None
    print(f"ccr: installed {CCR_PACKAGE}@{CCR_VERSION} in {time.monotonic() - t0:.1f} s")
    return path


def ccr_config(api_base: str, model: str, port: int) -> dict:
    """ccr's ~/.claude-code-router/config.json: one provider, every route to it."""
    route = f"local,{model}"
    return {
        "LOG": False,
        "HOST": "127.0.0.1",
        "PORT": port,
        "NON_INTERACTIVE_MODE": True,
        "API_TIMEOUT_MS": 600000,
        "Providers": [{
            "name": "local",
            "api_base_url": api_base.rstrip("/") + "/chat/completions",
            "api_key": "none",
            "models": [model],
        }],
        "Router": {"default": route, "background": route, "think": route, "longContext": route},
    }  # fmt: skip


@contextlib.contextmanager
def claude_code_router(api_base: str, model: str = "local", *, audit: Path | None = None,
                       startup_timeout: float = 30.0) -> Iterator[str]:
    """Run ccr against an OpenAI-compatible ``api_base``; yield its base URL (POST /v1/messages there).

    ``audit``: a file that gets one JSON line per outbound connection or DNS lookup ccr makes.
    """
    binary = ccr_binary()
    if binary is None:
        raise RuntimeError("claude-code-router is not available (see the message above)")
    cli = binary.resolve()  # .bin/ccr -> .../dist/cli.js
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node not found on PATH")
    home = Path(tempfile.mkdtemp(prefix="ccbridge-ccr-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        conf_dir = home / ".claude-code-router"
        conf_dir.mkdir()
        port = free_port()
        (conf_dir / "config.json").write_text(json.dumps(ccr_config(api_base, model, port), indent=2))
        env = {k: v for k, v in os.environ.items() if k not in _PROXY_VARS}
        env.update(HOME=str(home), NO_PROXY="*", CI="true", DISABLE_TELEMETRY="1")
        args = [node]
        if audit is not None:
            hook = home / "audit.cjs"
            hook.write_text(_AUDIT_JS)
            env["CCR_AUDIT_FILE"] = str(audit)
            args += ["--require", str(hook)]
        log_path = home / "ccr.log"
        with open(log_path, "wb") as log:
            # `ccr start` serves in the foreground of this very process (it only
            # writes its pid file); a new session lets us kill the whole group.
            proc = subprocess.Popen([*args, str(cli), "start"], cwd=home, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ccr exited with {proc.returncode} while starting:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"ccr not listening on {port} after {startup_timeout:.0f} s:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        shutil.rmtree(home, ignore_errors=True)


# -- the comparison ---------------------------------------------------------------
BODY = {"model": "claude-opus-4-8", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}


async def _one(url: str, stream: bool) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the end) of one POST /v1/messages, new connection."""
    import aiohttp

    body = {**BODY, "stream": stream}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        t0 = time.perf_counter()
        async with session.post(url + "/v1/messages", json=body,
                                headers={"x-api-key": "none", "anthropic-version": "2023-06-01"}) as resp:
            first = None
            async for _chunk in resp.content.iter_any():
                if first is None:
                    first = time.perf_counter() - t0
            total = time.perf_counter() - t0
            if resp.status != 200:
                raise RuntimeError(f"{url}: {resp.status}")
    return first if first is not None else total, total


async def measure(url: str, n: int) -> dict[str, float]:
    import statistics

    for stream in (False, True):  # warm up both paths
        await _one(url, stream)
    plain = [await _one(url, False) for _ in range(n)]
    streamed = [await _one(url, True) for _ in range(n)]
    ms = lambda xs: round(statistics.median(xs) * 1000, 2)  # noqa: E731
    return {"p50_ms": ms([t for _, t in plain]), "p50_ttfb_ms": ms([f for f, _ in plain]),
            "stream_p50_ms": ms([t for _, t in streamed]), "stream_p50_ttfb_ms": ms([f for f, _ in streamed])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="requests per route and mode (default 50)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.support.llama import LlamaServer
    from tests.support.tiny_model import write_tiny_model

    t0 = time.monotonic()
    if ccr_binary() is None:
        sys.exit(1)
    print(f"ccr {CCR_VERSION} ready in {time.monotonic() - t0:.1f} s")
    with tempfile.TemporaryDirectory(prefix="ccbridge-peers-") as tmp:
        model = write_tiny_model(Path(tmp) / "tiny.gguf")
        with LlamaServer(model, ctx=65536) as llama:
            # One audited start (and a request of each kind) first; the timed run goes unhooked.
            audit = Path(tmp) / "ccr-connections.jsonl"
            t1 = time.monotonic()
            with claude_code_router(llama.api_base, audit=audit) as ccr_url:
                startup = time.monotonic() - t1
                for stream in (False, True):
                    asyncio.run(_one(ccr_url, stream))
            seen = set(audit.read_text().splitlines()) if audit.exists() else set()
            print(f"ccr listening after {startup:.2f} s")
            with claude_code_router(llama.api_base) as ccr_url:
                rows = {"llama-server direct": asyncio.run(measure(llama.base_url, args.n)),
                        "claude-code-router": asyncio.run(measure(ccr_url, args.n))}
    print(f"\n{args.n} requests each, max_tokens 1, new connection per request (ms)")
    print(f"{'route':<22}{'p50':>10}{'p50 TTFB':>10}{'stream p50':>12}{'stream TTFB':>13}")
    for name, r in rows.items():
        print(f"{name:<22}{r['p50_ms']:>10}{r['p50_ttfb_ms']:>10}{r['stream_p50_ms']:>12}"
              f"{r['stream_p50_ttfb_ms']:>13}")
    d, c = rows["llama-server direct"], rows["claude-code-router"]
    extra, extra_ttfb = c["p50_ms"] - d["p50_ms"], c["stream_p50_ttfb_ms"] - d["stream_p50_ttfb_ms"]
    print(f"ccr adds {extra:+.2f} ms (p50), {extra_ttfb:+.2f} ms (stream TTFB)")
    print("ccr outbound connections / lookups:", ", ".join(sorted(seen)) or "none recorded")


if __name__ == "__main__":
    main()
