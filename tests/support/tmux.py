"""Claude Code in a real terminal: one tmux session running a shell command, its screen, keys sent to it."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

DIALOGS = ("API key", "trust this folder", "Unable to connect", "Select login method", "Choose the text style")


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
