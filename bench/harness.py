"""Shared pieces of the benchmarks: processes, clients, statistics, reporting."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> float:
    """Seconds until 127.0.0.1:port accepts a connection."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return time.monotonic() - t0
        time.sleep(0.005)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values)


class ZeroBackend:
    """bench/zero_backend.py in its own process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ZeroBackend:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.zero_backend", str(self.port)], cwd=REPO,
                                     stdout=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = {"benchmark": name, "at": stamp, "machine": machine(), **data}
    path = RESULTS / f"{name}-{stamp}.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    (RESULTS / f"{name}-latest.json").write_text(text)
    return path


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("| " + " | ".join(c.ljust(widths[j]) for j, c in enumerate(row)) + " |")
        if i == 0:
            lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def litellm_alone(api_base: str) -> Iterator[tuple[str, str]]:
    """LiteLLM by itself, pointed straight at `api_base` (the baseline ccbridge+LiteLLM is compared to)."""
    from backend.services import litellm_env

    key = "sk-bench-" + secrets.token_hex(8)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "litellm.yaml"
        cfg.write_text(json.dumps({
            "model_list": [{"model_name": name, "litellm_params": {"model": "openai/m", "api_base": api_base,
                                                                   "api_key": "none"}}
                           for name in ("local", "claude-opus-4-8")],
            "litellm_settings": {"use_chat_completions_url_for_anthropic_messages": True, "num_retries": 0},
            "general_settings": {"master_key": key}}))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.Popen([str(litellm_env.ensure_env(lambda _: None)), "--config", str(cfg), "--host",
                                 "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}", key
        finally:
            proc.terminate()
            proc.wait(20)
