"""The panel in a real terminal: `ccbridge --config X` in tmux, real `claude -p` through it, `q`, nothing left."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.claude import run_claude
from tests.support.serve import write_chain_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e  # scripts/test.sh installs tmux when it is missing


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_panel_in_tmux_shows_claude_traffic_and_q_leaves_nothing_running(tmp_path, start_llama_server):
    llama = start_llama_server(ctx=65536, extra_args=("--slots", "--metrics"))
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base)
    port = next(int(x.split(":")[1]) for x in config.read_text().splitlines() if x.strip().startswith("port:"))
    url = f"http://127.0.0.1:{port}"
    sock = f"ccbridge-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock]
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run([*tmux, "new-session", "-d", "-x", "100", "-y", "30", "-s", "panel",
                    f"{REPO}/.venv/bin/ccbridge --config {config}"], check=True, env=env, cwd=REPO)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "panel"], capture_output=True, text=True).stdout

    def status() -> dict | None:
        try:
            return httpx.get(f"{url}/ccbridge/api/status", timeout=2, trust_env=False).json()
        except (httpx.HTTPError, ValueError):
            return None

    try:
        _wait(lambda: (s := status()) and s["services"][1]["state"] == "ready", 180, "LiteLLM ready")
        panel_pid = int(subprocess.run([*tmux, "list-panes", "-t", "panel", "-F", "#{pane_pid}"],
                                       capture_output=True, text=True).stdout.split()[0])
        children = psutil.Process(panel_pid).children(recursive=True)
        assert any("litellm" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
        _wait(lambda: "litellm" in screen() and "ready" in screen(), 10, "dashboard card")

        result = run_claude("2.1.197", url, "Hello world", timeout=240)
        assert result.returncode == 0, result.stderr[-2000:]

        subprocess.run([*tmux, "send-keys", "-t", "panel", "2"], check=True)
        def row() -> str | None:
            text = screen()
            return text if ">local" in text and " 200 " in text else None

        text = _wait(row, 15, "request row")
        assert "opus" in text or "haiku" in text or "sonnet" in text, text

        subprocess.run([*tmux, "send-keys", "-t", "panel", "q"], check=True)
        _wait(lambda: not psutil.pid_exists(panel_pid) or psutil.Process(panel_pid).status() == "zombie",
              60, "the panel to exit")
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not left, [c.cmdline() for c in left]
    finally:
        subprocess.run([*tmux, "send-keys", "-t", "panel", "q"], capture_output=True)  # let it stop LiteLLM
        time.sleep(3)
        subprocess.run([*tmux, "kill-server"], capture_output=True)
