"""The panel in a real terminal (tmux) over the real chain, as a user runs it.

1. `ccbridge --config X`: the panel starts `ccbridge serve` in the background;
   real `claude -p` traffic shows on the first screen (a request under way as
   `wait`, then its row); `q` stops serve, LiteLLM and every child.
2. `ccbridge attach URL` on a `ccbridge serve` started apart: the same live
   rows; `q` closes the panel and serve keeps answering.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.claude import run_claude
from tests.support.serve import ServeProcess, write_chain_config

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e  # scripts/test.sh installs tmux when it is missing


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Tmux:
    """One tmux server of our own with one pane running `command`."""

    def __init__(self, command: str, size: tuple[int, int] = (120, 40)) -> None:
        self.base = ["tmux", "-L", f"ccbridge-test-{uuid.uuid4().hex[:8]}"]
        env = {**os.environ, "TERM": "xterm-256color"}
        subprocess.run([*self.base, "new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), "-s", "panel",
                        command], check=True, env=env, cwd=REPO)
        self.pid = int(subprocess.run([*self.base, "list-panes", "-t", "panel", "-F", "#{pane_pid}"],
                                      capture_output=True, text=True).stdout.split()[0])

    def screen(self) -> str:
        return subprocess.run([*self.base, "capture-pane", "-p", "-t", "panel"], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "panel", *keys], check=True)

    def exited(self) -> bool:
        return not psutil.pid_exists(self.pid) or psutil.Process(self.pid).status() == psutil.STATUS_ZOMBIE

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def _status(url: str) -> dict | None:
    try:
        return httpx.get(f"{url}/ccbridge/api/status", timeout=2, trust_env=False).json()
    except (httpx.HTTPError, ValueError):
        return None


def _long_stream(url: str, done: list[int]) -> None:
    """A request under way for seconds: a ~8k-token prompt takes the tiny model that long to read here."""
    prompt = " ".join(f"word{i % 977}" for i in range(800))
    resp = httpx.post(f"{url}/v1/messages", json={
        "model": "claude-sonnet-4-6", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": prompt}]},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}, timeout=180, trust_env=False)
    done.append(resp.status_code)


def _live_rows_on_the_first_screen(tmux: Tmux, url: str) -> None:
    """A long request shows as `wait` while under way, then as done; claude -p's turn shows too."""
    done: list[int] = []
    thread = threading.Thread(target=_long_stream, args=(url, done), daemon=True)
    thread.start()
    _wait(lambda: "sonnet-4-6>local" in tmux.screen() and " wait " in tmux.screen(), 60, "an in-flight row")
    thread.join(180)
    assert done == [200]
    _wait(lambda: any("sonnet-4-6>local" in line and " 200 " in line for line in tmux.screen().splitlines()),
          10, "the row done")
    result = run_claude("2.1.197", url, "Hello world", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    text = _wait(lambda: (t := tmux.screen()) and ("opus" in t or "haiku" in t) and t, 10, "claude's row")
    assert "Home" in text and "TTFT" in text  # still the first screen: nothing was pressed


def test_panel_starts_serve_shows_live_requests_and_q_leaves_nothing_running(tmp_path, start_llama_server):
    llama = start_llama_server(ctx=65536, extra_args=("--slots", "--metrics"))
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base)
    port = next(int(x.split(":")[1]) for x in config.read_text().splitlines() if x.strip().startswith("port:"))
    url = f"http://127.0.0.1:{port}"
    tmux = Tmux(f"{REPO}/.venv/bin/ccbridge --config {config}")
    serve_pid = None
    try:
        status = _wait(lambda: (s := _status(url)) and s["services"][1]["state"] == "ready" and s, 180,
                       "LiteLLM ready")
        serve = next(p for p in psutil.Process(tmux.pid).children(recursive=True)
                     if "serve" in p.cmdline() and "backend" in p.cmdline())
        serve_pid = serve.pid
        children = serve.children(recursive=True)
        assert any("litellm" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
        assert status["services"][1]["pid"] in {c.pid for c in children}
        _wait(lambda: "litellm" in tmux.screen() and "ready" in tmux.screen(), 10, "dashboard card")

        _live_rows_on_the_first_screen(tmux, url)

        tmux.keys("q")
        _wait(tmux.exited, 60, "the panel to exit")
        _wait(lambda: not psutil.pid_exists(serve_pid), 30, "serve to stop")
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert not left, [c.cmdline() for c in left]
        assert _status(url) is None
    finally:
        if not tmux.exited():
            tmux.keys("q")  # let it stop what it started
            time.sleep(3)
        tmux.kill()
        if serve_pid and psutil.pid_exists(serve_pid):
            psutil.Process(serve_pid).terminate()


def test_attach_shows_live_requests_and_q_leaves_serve_answering(tmp_path, start_llama_server):
    llama = start_llama_server(ctx=65536, extra_args=("--slots", "--metrics"))
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base)
    with ServeProcess(config) as serve:
        tmux = Tmux(f"{REPO}/.venv/bin/ccbridge attach {serve.url}")
        try:
            _wait(lambda: "attached" in tmux.screen() or "litellm" in tmux.screen(), 30, "the panel")
            _wait(lambda: "ready" in tmux.screen(), 30, "the cards")
            _live_rows_on_the_first_screen(tmux, serve.url)
            tmux.keys("q")
            _wait(tmux.exited, 30, "the panel to exit")
        finally:
            tmux.kill()
        assert serve.proc is not None and serve.proc.poll() is None
        resp = httpx.post(f"{serve.url}/v1/messages", json={
            "model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}, timeout=120, trust_env=False)
        assert resp.status_code == 200  # serve kept answering after the attached panel quit
        assert serve.status()["metrics"]["requests_total"] >= 3
