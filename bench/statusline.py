"""`ccbridge statusline`'s own time, as Claude Code runs it (every second, for every open session).

    .venv/bin/python -m bench.statusline [--runs 100] [--rate 100]

`ccbridge serve` runs as its own process with the proxy-only chain
(`litellm.url` pointed at bench/zero_backend.py, so the serve's work is
ccbridge's own) while a separate process sends it --rate requests per second
under several Claude Code session ids: the serve is under load while the
command asks about one of those sessions. Each run is a fresh
`ccbridge statusline` process (the console script, JSON on stdin, the
environment `ccbridge claude` gives Claude Code), timed from spawn to exit:
interpreter start and imports included, which is what Claude Code waits
for. Timed: the command `ccbridge claude` installs (`python -I -S
.../backend/statusline.py`) and, for comparison, the `ccbridge statusline`
console script (site-packages, the editable install's finder); for scale,
the same interpreter's `python -c pass` and `python -S -c pass`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backend.claude_env import statusline_command
from bench.harness import REPO, ZeroBackend, median, pct, save, table
from bench.panel import config_for, finish, load

CCBRIDGE = REPO / ".venv" / "bin" / "ccbridge"


def time_runs(argv: list[str], runs: int, stdin: bytes, env: dict[str, str]) -> tuple[list[float], str]:
    """Wall milliseconds of `runs` fresh processes, and the last one's output."""
    took: list[float] = []
    out = b""
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=True)
        took.append((time.perf_counter() - t) * 1000)
        out = proc.stdout
        time.sleep(0.02)
    return took, out.decode(errors="replace").rstrip("\n")


def measure(runs: int = 100, rate: float = 100) -> dict:
    """The figures (see the module docstring); serve, its zero backend and the load are started here."""
    from tests.support.serve import ServeProcess

    stdin = json.dumps({"session_id": "bench-session-1", "model": {"id": "claude-opus-ccbridge"},
                        "cwd": "/tmp", "version": "2.1.332"}).encode()
    with tempfile.TemporaryDirectory() as d, ZeroBackend() as zero:
        tmp = Path(d)
        dirs = {"CCBRIDGE_DATA_DIR": str(tmp / "data"), "CCBRIDGE_CONFIG_DIR": str(tmp / "config")}
        config = config_for(tmp, zero.url)
        with ServeProcess(config, dirs) as serve:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}, **dirs,
                   "ANTHROPIC_BASE_URL": serve.url, "ANTHROPIC_AUTH_TOKEN": "ccbridge-local", "NO_COLOR": "1"}
            import httpx  # one request of the session asked about, so the line has its last call to show

            httpx.post(f"{serve.url}/v1/messages", json={"model": "claude-opus-4-8", "max_tokens": 16, "messages": [
                {"role": "user", "content": "hi"}]}, headers={"x-claude-code-session-id": "bench-session-1"},
                trust_env=False, timeout=30)
            installed = shlex.split(statusline_command())
            idle, _ = time_runs(installed, max(10, runs // 5), stdin, env)
            seconds = runs * 0.3 + 15
            loader = load(serve.url, rate, seconds)
            time.sleep(2)
            busy, line = time_runs(installed, runs, stdin, env)
            script, _ = time_runs([str(CCBRIDGE), "statusline"], max(10, runs // 2), stdin, env)
            pass_site, _ = time_runs([sys.executable, "-c", "pass"], 30, b"", env)
            pass_bare, _ = time_runs([sys.executable, "-S", "-c", "pass"], 30, b"", env)
            load_result = finish(loader)
            down_env = {**env, "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
        down, down_line = time_runs(installed, 20, stdin, down_env)
    return {"runs": runs, "rate": rate, "load": load_result, "line": line, "down_line": down_line,
            "busy_p50_ms": median(busy), "busy_p95_ms": pct(busy, 95), "busy_max_ms": max(busy),
            "idle_p50_ms": median(idle), "down_p50_ms": median(down), "command": statusline_command(),
            "console_script_p50_ms": median(script), "console_script_p95_ms": pct(script, 95),
            "python_site_p50_ms": median(pass_site), "python_bare_p50_ms": median(pass_bare)}


def suite_rows(d: dict) -> list[tuple[str, str, str]]:
    """bench.suite's rows: the command as installed, under load and with no serve, against the interpreter."""
    return [(f"status line command p50 / p95, serve under {d['rate']:.0f} req/s ({d['runs']} runs)",
             f"{d['busy_p50_ms']:.0f} / {d['busy_p95_ms']:.0f} ms",
             f"< 300 ms; python -S -c pass {d['python_bare_p50_ms']:.0f} ms"),
            ("status line command, no serve (p50)", f"{d['down_p50_ms']:.0f} ms", "< 300 ms")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100, help="requests per second sent to serve meanwhile")
    args = parser.parse_args()
    data = measure(args.runs, args.rate)
    print(render(data))
    print(f"saved {save('statusline', data)}")


def render(d: dict) -> str:
    rows = [("figure", "value", "target"),
            (f"status line command p50 / p95 / max, serve under load ({d['runs']} runs)",
             f"{d['busy_p50_ms']:.0f} / {d['busy_p95_ms']:.0f} / {d['busy_max_ms']:.0f} ms", "< 300 ms"),
            ("the same, serve idle p50", f"{d['idle_p50_ms']:.0f} ms", ""),
            ("the same, no serve (p50)", f"{d['down_p50_ms']:.0f} ms", "< 300 ms"),
            ("`ccbridge statusline` (console script) p50 / p95, under load",
             f"{d['console_script_p50_ms']:.0f} / {d['console_script_p95_ms']:.0f} ms", ""),
            ("`python -c pass` with site / `-S` p50", f"{d['python_site_p50_ms']:.0f} / "
             f"{d['python_bare_p50_ms']:.0f} ms", ""),
            ("load meanwhile: offered / achieved, errors",
             f"{d['rate']:.0f} / {d['load']['rate']:.0f} req/s, {d['load']['errors']}", ""),
            ("line under load", d["line"], "< 80 columns"),
            ("line with no serve", d["down_line"], "")]
    return table(rows)


if __name__ == "__main__":
    main()
