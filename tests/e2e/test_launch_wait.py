"""`ccbridge claude` waits for a loading model and always gives Claude Code a window; `ccbridge stop`.

Tried as a new user would: started while llama-server was still loading its
model (503 "Loading model" on every endpoint), `ccbridge claude` used to start
Claude Code with no CLAUDE_CODE_MAX_CONTEXT_TOKENS, and Claude Code then
assumed a million tokens. Here a llama-server stand-in answers 503 for a few
seconds and then the captured answers of a real one; `claude` is a stand-in
that writes down its environment and arguments. ccbridge itself is the real
command (serve started as a child, native route: no LiteLLM needed).

`ccbridge stop` ends a real serve of the full chain (its LiteLLM included)
and leaves nothing running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.support.claude import assert_nothing_left
from tests.support.config import chain_config
from tests.support.loop import LoopThread
from tests.support.replay_llama import ReplayLlama
from tests.support.serve import REPO, ServeProcess, write_chain_config

pytestmark = pytest.mark.e2e


class LoadingLlama(ReplayLlama):
    """503 "Loading model" on every path for `loading_s` seconds, as llama-server does; then a real one's answers."""

    def __init__(self, loading_s: float) -> None:
        super().__init__()
        self.ready_at = time.monotonic() + loading_s
        self.loading_answers = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if time.monotonic() < self.ready_at:
            self.loading_answers += 1
            return web.json_response({"error": {"code": 503, "message": "Loading model",
                                                "type": "unavailable_error"}}, status=503)
        return await super().handle(request)


def _fake_claude(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "claude"
    script.write_text(f"#!{sys.executable}\n"
                      "import json, os, sys\n"
                      "keep = {k: v for k, v in os.environ.items() if k.startswith(('CLAUDE_', 'ANTHROPIC_'))}\n"
                      "saw = json.dumps({'env': keep, 'argv': sys.argv[1:]})\n"
                      "open(os.environ['FAKE_CLAUDE_OUT'], 'w').write(saw)\n")
    script.chmod(0o755)
    return folder


def test_claude_waits_while_the_model_loads_and_sets_the_window_and_the_status_line(tmp_path):
    loop = LoopThread()
    llama = LoadingLlama(loading_s=4.0)
    try:
        url = loop.run(llama.start())
        config = tmp_path / "ccbridge.yaml"
        chain_config(config, {"local": {"api_base": f"{url}/v1", "model": "auto", "route": "native"}}, litellm=False)
        out = tmp_path / "claude-saw.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
        env.update(PATH=f"{_fake_claude(tmp_path / 'bin')}:/usr/bin:/bin", HOME=str(tmp_path / "home"),
                   CCBRIDGE_CONFIG_DIR=str(tmp_path / "c"), CCBRIDGE_DATA_DIR=str(tmp_path / "d"),
                   FAKE_CLAUDE_OUT=str(out))
        (tmp_path / "home").mkdir()
        result = subprocess.run([sys.executable, "-m", "backend", "claude", "--config", str(config), "hi"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert llama.loading_answers > 0  # it was asked while loading
        saw = json.loads(out.read_text())
        assert saw["env"]["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768", (saw, result.stderr)  # the fixture's n_ctx
        assert "waiting for backend local" in result.stderr and "loading its model (503)" in result.stderr
        assert result.stderr.count("loading its model") == 1  # off a terminal: one line per change, not per second
        assert "assum" not in result.stderr.lower()
        # the status line came with it, run by this install's ccbridge
        assert saw["argv"][:1] == ["--settings"] and saw["argv"][2:] == ["hi"]
        status_line = json.loads(saw["argv"][1])["statusLine"]
        assert status_line["refreshInterval"] == 1 and status_line["command"].endswith("/backend/statusline.py")
        shown = subprocess.run(status_line["command"], shell=True, input='{"session_id": "s"}', text=True,
                               capture_output=True, env={"PATH": "/usr/bin:/bin", "NO_COLOR": "1",
                                                         **{k: v for k, v in saw["env"].items() if k.startswith(
                                                             "ANTHROPIC_")}}, timeout=10)
        assert shown.stdout.startswith("ccbridge · down (nothing at 127.0.0.1:"), shown  # the serve it used is gone

        # the user's own status line is kept, and they are told once how to add ours
        (tmp_path / "home" / ".claude").mkdir()
        (tmp_path / "home" / ".claude" / "settings.json").write_text('{"statusLine": {"type": "command", '
                                                                    '"command": "echo mine"}}')
        again = [subprocess.run([sys.executable, "-m", "backend", "claude", "--config", str(config), "hi"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL) for _ in range(2)]
        assert json.loads(out.read_text())["argv"] == ["hi"]
        assert "kept the statusLine of" in again[0].stderr and "kept the statusLine" not in again[1].stderr
    finally:
        loop.run(llama.stop())
        loop.close()


def test_stop_ends_the_serve_and_what_it_started(llama_server, tmp_path):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    data = tmp_path / "d"
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(data),
           "CCBRIDGE_STARTED_BY": "the panel (pid 4242)"}
    serve = ServeProcess(config, env).start()
    try:
        assert serve.litellm_pid()  # it started LiteLLM
        stop = subprocess.run([str(REPO / ".venv" / "bin" / "ccbridge"), "stop", "--config", str(config)],
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert f"stopping ccbridge serve 0.1.0 at {serve.url} (pid {serve.proc.pid}" in stop.stderr  # type: ignore[union-attr]
        assert "started by the panel (pid 4242) at " in stop.stderr and "LiteLLM" in stop.stderr
        assert serve.proc is not None and serve.proc.wait(10) == 0
        assert_nothing_left(config, data, timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{serve.url}/ccbridge/api/status", timeout=2, trust_env=False)
        nothing = subprocess.run([str(REPO / ".venv" / "bin" / "ccbridge"), "stop", "--config", str(config)],
                                 env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert nothing.returncode == 0 and "nothing to stop" in nothing.stderr
    finally:
        serve.stop()
