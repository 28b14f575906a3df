"""Interactive Claude Code through ccbridge, in tmux, for each pinned release.

The shell does what the README says: `eval "$(ccbridge env)"`, then `claude`,
with a stray ANTHROPIC_API_KEY in the environment as many users have. The
scratch HOME has onboarding done and the folder trusted, which takes two keys
in `~/.claude.json` (`hasCompletedOnboarding`, and
`projects.<folder>.hasTrustDialogAccepted`). Claude Code must reach its input
prompt with no dialog (no API-key question, no "Unable to connect"), answer a
typed message through ccbridge, and leave on `/exit`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support.claude import CLAUDE_VERSIONS, claude_binary
from tests.support.serve import REPO, ServeProcess, write_chain_config

pytestmark = pytest.mark.e2e
DIALOGS = ("API key", "trust this folder", "Unable to connect", "Select login method", "Choose the text style")


@pytest.fixture(scope="module")
def bridge(llama_server, tmp_path_factory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("interactive-bridge")
    config = write_chain_config(tmp / "ccbridge.yaml", llama_server.api_base)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    with ServeProcess(config, env) as serve:
        yield serve


def _wait(what: str, timeout: float, check: Callable[[], object], screen: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; the pane:\n{screen()}")
        time.sleep(0.3)


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
def test_interactive_claude_reaches_the_prompt_answers_and_exits(version, bridge, tmp_path):
    home = tmp_path.resolve() / "home"
    work = home / "work"
    work.mkdir(parents=True)
    settings = {"hasCompletedOnboarding": True, "projects": {str(work): {"hasTrustDialogAccepted": True}}}
    (home / ".claude.json").write_text(json.dumps(settings))
    claude_dir = claude_binary(version).parent
    env_cmd = shlex.join([str(REPO / ".venv" / "bin" / "ccbridge"), "env", "--config", str(bridge.config)])
    inner = f'eval "$({env_cmd})" && exec claude'
    cmd = shlex.join(["env", "-i", f"PATH={claude_dir}:/usr/bin:/bin", f"HOME={home}", "TERM=xterm-256color",
                      "LANG=C.UTF-8", "DISABLE_AUTOUPDATER=1", "ANTHROPIC_API_KEY=sk-stray-from-profile",
                      f"CCBRIDGE_CONFIG_DIR={tmp_path / 'c'}", f"CCBRIDGE_DATA_DIR={tmp_path / 'd'}",
                      "sh", "-c", inner])
    tmux = ["tmux", "-L", f"ccbridge-interactive-{uuid.uuid4().hex[:8]}"]
    subprocess.run([*tmux, "new-session", "-d", "-x", "110", "-y", "40", "-s", "c",
                    f"{cmd}; echo CLAUDE_EXITED=$?; sleep 60"], check=True, cwd=work, env=os.environ)

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "c"], capture_output=True, text=True).stdout

    def keys(*args: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", "c", *args], check=True)

    try:
        _wait("the input prompt", 90, lambda: "❯" in (s := screen()) and ("for agents" in s or "for shortcuts" in s)
              or any(d in s for d in DIALOGS), screen)
        shown = screen()
        assert not [d for d in DIALOGS if d in shown], shown
        assert "claude-opus-ccbridge" in shown, shown  # the model `ccbridge env` named

        seen = {r["id"] for r in bridge.requests(50)}
        keys("-l", "Hello there")
        time.sleep(0.5)
        keys("Enter")

        def answered() -> dict | None:
            return next((r for r in bridge.requests(20) if r["id"] not in seen and r["status"] == 200
                         and r["requested_model"] == "claude-opus-ccbridge"
                         and version in (r["client_version"] or "")), None)

        _wait("a 200 for the typed message", 240, answered, screen)
        record = answered()
        assert record is not None and record["output_tokens"], record
        _wait("the answer on screen", 30, lambda: any(line.lstrip().startswith(("●", "⏺"))
                                                      for line in screen().split("Hello there", 1)[-1].splitlines()),
              screen)

        keys("-l", "/exit")
        time.sleep(0.5)
        keys("Enter")
        _wait("claude to exit", 30, lambda: "CLAUDE_EXITED=" in screen(), screen)
        assert "CLAUDE_EXITED=0" in screen(), screen()
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
