"""Interactive Claude Code through ccbridge, in tmux, for each pinned release.

The shell does what the README says: `eval "$(ccbridge env)"`, then `claude`,
with a stray ANTHROPIC_API_KEY in the environment as many users have. The
scratch HOME has onboarding done and the folder trusted, which takes two keys
in `~/.claude.json` (`hasCompletedOnboarding`, and
`projects.<folder>.hasTrustDialogAccepted`). Claude Code must reach its input
prompt with no dialog (no API-key question, no "Unable to connect"), answer a
typed message through ccbridge, and leave on `/exit`. The same through
`ccbridge claude`, which starts ccbridge itself and stops it afterwards.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.claude import CLAUDE_VERSIONS, assert_nothing_left, claude_binary, trusted_home
from tests.support.llama import cache_dir
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


class Pane:
    """One tmux session running a shell command; the pane's text, keys sent to it."""

    def __init__(self, cmd: str, cwd: Path) -> None:
        self.tmux = ["tmux", "-L", f"ccbridge-interactive-{uuid.uuid4().hex[:8]}"]
        subprocess.run([*self.tmux, "new-session", "-d", "-x", "110", "-y", "40", "-s", "c",
                        f"{cmd}; echo CLAUDE_EXITED=$?; sleep 60"], check=True, cwd=cwd, env=os.environ)

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "c"], capture_output=True, text=True).stdout

    def keys(self, *args: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "c", *args], check=True)

    def type_line(self, text: str) -> None:
        self.keys("-l", text)
        time.sleep(0.5)
        self.keys("Enter")

    def wait(self, what: str, timeout: float, check: Callable[[], object]) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; the pane:\n{self.screen()}")
            time.sleep(0.3)

    def wait_prompt(self) -> None:
        """Until Claude Code's input prompt (or a dialog) shows; then no dialog may be on screen."""
        self.wait("the input prompt", 90, lambda: "❯" in (s := self.screen()) and (
            "for agents" in s or "for shortcuts" in s) or any(d in s for d in DIALOGS))
        shown = self.screen()
        assert not [d for d in DIALOGS if d in shown], shown
        assert "claude-opus-ccbridge" in shown, shown  # the model ccbridge names for Claude Code

    def wait_answer(self, requests: Callable[[], list[dict]], version: str, seen: set[str]) -> dict:
        """Until ccbridge recorded a 200 for the typed message and the answer is on screen."""
        def answered() -> dict | None:
            return next((r for r in requests() if r["id"] not in seen and r["status"] == 200
                         and r["requested_model"] == "claude-opus-ccbridge"
                         and version in (r["client_version"] or "")), None)

        self.wait("a 200 for the typed message", 240, answered)
        record = answered()
        assert record is not None and record["output_tokens"], record
        self.wait("the answer on screen", 30, lambda: any(
            line.lstrip().startswith(("●", "⏺")) for line in self.screen().split("Hello there", 1)[-1].splitlines()))
        return record

    def exit_claude(self) -> None:
        self.type_line("/exit")
        self.wait("claude to exit", 60, lambda: "CLAUDE_EXITED=" in self.screen())
        assert "CLAUDE_EXITED=0" in self.screen(), self.screen()

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
def test_interactive_claude_reaches_the_prompt_answers_and_exits(version, bridge, tmp_path):
    home, work = trusted_home(tmp_path)
    env_cmd = shlex.join([str(REPO / ".venv" / "bin" / "ccbridge"), "env", "--config", str(bridge.config)])
    cmd = shlex.join(["env", "-i", f"PATH={claude_binary(version).parent}:/usr/bin:/bin", f"HOME={home}",
                      "TERM=xterm-256color", "LANG=C.UTF-8", "DISABLE_AUTOUPDATER=1",
                      "ANTHROPIC_API_KEY=sk-stray-from-profile",  # unset by the lines `ccbridge env` prints
                      f"CCBRIDGE_CONFIG_DIR={tmp_path / 'c'}", f"CCBRIDGE_DATA_DIR={tmp_path / 'd'}",
                      "sh", "-c", f'eval "$({env_cmd})" && exec claude'])
    pane = Pane(cmd, work)
    try:
        pane.wait_prompt()
        seen = {r["id"] for r in bridge.requests(50)}
        pane.type_line("Hello there")
        pane.wait_answer(lambda: bridge.requests(20), version, seen)
        pane.exit_claude()
    finally:
        pane.close()


def test_ccbridge_claude_interactive_starts_ccbridge_survives_ctrl_c_and_stops_it(llama_server, tmp_path):
    version = CLAUDE_VERSIONS[-1]
    home, work = trusted_home(tmp_path)
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    data = tmp_path / "d"
    cmd = shlex.join(["env", "-i", f"PATH={claude_binary(version).parent}:/usr/bin:/bin", f"HOME={home}",
                      "TERM=xterm-256color", "LANG=C.UTF-8", "DISABLE_AUTOUPDATER=1",
                      "ANTHROPIC_API_KEY=sk-stray-from-profile", f"CCBRIDGE_CACHE_DIR={cache_dir()}",
                      f"CCBRIDGE_CONFIG_DIR={tmp_path / 'c'}", f"CCBRIDGE_DATA_DIR={data}",
                      str(REPO / ".venv" / "bin" / "ccbridge"), "claude", "--config", str(config)])
    pane = Pane(cmd, work)
    url = "http://127.0.0.1:" + next(line.split(":")[1].strip() for line in config.read_text().splitlines()
                                     if line.strip().startswith("port:"))

    def requests() -> list[dict]:
        return httpx.get(f"{url}/ccbridge/api/requests?limit=20", timeout=5, trust_env=False).json()["requests"]

    try:
        pane.wait_prompt()
        pane.keys("C-c")  # the terminal's Ctrl-C is Claude Code's: the bridge behind it keeps running
        time.sleep(1)
        pane.type_line("Hello there")
        pane.wait_answer(requests, version, set())
        pane.exit_claude()
        assert_nothing_left(config, data)
    finally:
        pane.close()
