"""`ccbridge claude -p ...` as a user runs it: the real Claude Code, ccbridge, LiteLLM, llama-server.

With no ccbridge running it starts one and stops it (and its LiteLLM) when
Claude Code exits; with one running it uses it and leaves it running. It never
touches ~/.claude.json, passes Claude Code's exit code through, and says how to
install Claude Code when there is none. The interactive run is in test_interactive.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.claude import CLAUDE_VERSIONS, assert_nothing_left, claude_binary, trusted_home
from tests.support.llama import cache_dir
from tests.support.serve import ServeProcess, write_chain_config

pytestmark = pytest.mark.e2e


def ccbridge_claude(args: list[str], *, home: Path, tmp: Path, path: str, timeout: float = 300,
                    ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(PATH=path, HOME=str(home), CCBRIDGE_CACHE_DIR=str(cache_dir()), DISABLE_AUTOUPDATER="1",
               CCBRIDGE_CONFIG_DIR=str(tmp / "c"), CCBRIDGE_DATA_DIR=str(tmp / "d"),
               ANTHROPIC_API_KEY="sk-stray-from-profile")  # `ccbridge claude` must not pass this on
    return subprocess.run([sys.executable, "-m", "backend", "claude", *args], cwd=home / "work", env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _path(version: str) -> str:
    return f"{claude_binary(version).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def _port(config: Path) -> int:
    return next(int(line.split(":")[1]) for line in config.read_text().splitlines() if line.strip().startswith("port:"))


def test_claude_p_starts_ccbridge_answers_and_leaves_nothing_running(llama_server, tmp_path):
    version = CLAUDE_VERSIONS[-1]
    home, _ = trusted_home(tmp_path)
    before = json.loads((home / ".claude.json").read_text())
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    result = ccbridge_claude(["--config", str(config), "-p", "Hello world"], home=home, tmp=tmp_path,
                             path=_path(version))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), result.stderr[-3000:]
    assert "starting ccbridge serve" in result.stderr
    # the request went through the ccbridge it started, asking for the tier name `ccbridge env` sets
    log = (tmp_path / "d" / "run" / "claude-serve.log").read_text()
    assert any(" 200 POST /v1/messages claude-opus-ccbridge -> local" in line for line in log.splitlines()), log
    assert_nothing_left(config, tmp_path / "d")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{_port(config)}/ccbridge/api/status", timeout=2, trust_env=False)
    # Claude Code adds its own first-start keys; nothing of ours (no approved key, no changed setting)
    after = json.loads((home / ".claude.json").read_text())
    assert {k: after.get(k) for k in before} == before
    assert not {"customApiKeyResponses", "primaryApiKey"} & set(after)


def test_claude_uses_a_running_ccbridge_leaves_it_running_and_never_touches_claude_json(llama_server, tmp_path):
    version = CLAUDE_VERSIONS[0]
    home, _ = trusted_home(tmp_path)
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "serve-c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "serve-d")}
    with ServeProcess(config, env) as serve:
        litellm_pid = serve.litellm_pid()
        warm = ccbridge_claude(["--config", str(config), "-p", "Hello world"], home=home, tmp=tmp_path,
                               path=_path(version))  # Claude Code writes its first-start keys on this run
        assert warm.returncode == 0, warm.stderr[-3000:]
        claude_json = (home / ".claude.json").read_bytes()

        result = ccbridge_claude(["--config", str(config), "-p", "Hello world"], home=home, tmp=tmp_path,
                                 path=_path(version))
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip()
        assert serve.proc is not None  # it says which serve it uses, who started it and when
        assert f"using ccbridge serve 0.1.0 at {serve.url} (pid {serve.proc.pid}, config {config}), started by " \
            "`ccbridge serve` at " in result.stderr, result.stderr
        assert (home / ".claude.json").read_bytes() == claude_json

        records = [r for r in serve.requests(20) if r["requested_model"] == "claude-opus-ccbridge"]
        assert records and all(version in r["client_version"] for r in records)
        assert any(r["status"] == 200 for r in records)

        # Claude Code's own exit code comes back (1: an option it does not know)
        bad = ccbridge_claude(["--config", str(config), "--no-such-option"], home=home, tmp=tmp_path,
                              path=_path(version))
        assert bad.returncode == 1, bad.stderr
        assert serve.proc is not None and serve.proc.poll() is None
        assert serve.status()["services"][1]["state"] == "ready" and serve.litellm_pid() == litellm_pid


def test_claude_missing_says_how_to_install_it_and_starts_nothing(tmp_path):
    home, _ = trusted_home(tmp_path)
    config = write_chain_config(tmp_path / "ccbridge.yaml", "http://127.0.0.1:9/v1")
    python_dir = str(Path(sys.executable).parent)
    result = ccbridge_claude(["--config", str(config), "-p", "Hello world"], home=home, tmp=tmp_path,
                             path=python_dir, timeout=60)
    assert result.returncode == 127
    assert "npm install -g @anthropic-ai/claude-code" in result.stderr
    assert not (tmp_path / "d" / "run" / "claude-serve.log").exists()
    assert_nothing_left(config, tmp_path / "d", timeout=1)
