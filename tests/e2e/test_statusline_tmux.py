"""Interactive Claude Code 2.1.332 started by `ccbridge claude` shows what the local model is doing.

In tmux, as a user runs it: `ccbridge claude` starts ccbridge (with LiteLLM)
and gives Claude Code its status line (`--settings`, refreshed every second).
The user types one line. Claude Code's first turn is long for the tiny test
model's vocabulary (tens of thousands of tokens), so llama-server reads it for
several seconds: the status line must show `reading N%` with N moving, then
`generating`, then, once the answer is in, the share of the prompt that came
from llama-server's cache. llama-server runs with `--ignore-eos` and the
backend's `max_tokens` is small, so each answer generates for a second or more
(the random model would otherwise stop after a few tokens, between two
refreshes) and then ends at the cap; Claude Code then asks again to continue,
from cache.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.claude import CLAUDE_VERSIONS, assert_nothing_left, claude_binary, trusted_home
from tests.support.llama import LlamaServer, cache_dir
from tests.support.serve import REPO, write_chain_config
from tests.support.tmux import Pane

pytestmark = pytest.mark.e2e
READING = re.compile(r"reading (\d+)% \(")
SHOT_ENV = "CCBRIDGE_SAVE_SHOT"
"""Set to a path: the pane in colour, mid-read, is saved there as SVG (the README's screenshot)."""


def save_shot(ansi: str, path: Path) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=110, file=io.StringIO())
    console.print(Text.from_ansi(ansi.rstrip("\n")))
    console.save_svg(str(path), title="ccbridge claude: Claude Code 2.1.332 while the local model reads its prompt")


def status_line(screen: str) -> str | None:
    """ccbridge's line under Claude Code's input box (it starts with the backend's name and model)."""
    for line in screen.splitlines():
        text = line.strip()
        if text.startswith(("local tiny-llama", "local ·", "ccbridge ·")):
            return text
    return None


def test_status_line_goes_from_reading_to_generating_to_a_cache_share(tiny_model, tmp_path):
    version = CLAUDE_VERSIONS[-1]
    home, work = trusted_home(tmp_path)
    data = tmp_path / "d"
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--slots", "--metrics", "--ignore-eos")) as llama:
        config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base, max_tokens=120)
        cmd = shlex.join(["env", "-i", f"PATH={claude_binary(version).parent}:/usr/bin:/bin", f"HOME={home}",
                          "TERM=xterm-256color", "LANG=C.UTF-8", "DISABLE_AUTOUPDATER=1",
                          f"CCBRIDGE_CACHE_DIR={cache_dir()}", f"CCBRIDGE_CONFIG_DIR={tmp_path / 'c'}",
                          f"CCBRIDGE_DATA_DIR={data}",
                          str(REPO / ".venv" / "bin" / "ccbridge"), "claude", "--config", str(config)])
        pane = Pane(cmd, work)
        try:
            pane.wait_prompt()
            pane.wait("ccbridge's status line", 30, lambda: status_line(pane.screen()))
            before = status_line(pane.screen())
            assert before is not None and "ready" in before, before  # nothing asked yet in this session
            pane.type_line("Hello there")
            seen: list[str] = []
            shot: str | None = None
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                line = status_line(pane.screen())
                if line and (not seen or seen[-1] != line):
                    seen.append(line)
                    if shot is None and (m := READING.search(line)) and 40 <= int(m.group(1)) <= 70:
                        shot = subprocess.run([*pane.tmux, "capture-pane", "-p", "-e", "-t", "c"],
                                              capture_output=True, text=True).stdout
                generated = [i for i, s in enumerate(seen) if "generating" in s]
                if generated and any("cache" in s and "reading" not in s and "generating" not in s
                                     for s in seen[generated[0]:]):
                    break
                time.sleep(0.2)
            shown = "\n".join(seen)
            percents = [int(m.group(1)) for s in seen if (m := READING.search(s))]
            assert len(set(percents)) >= 3 and percents == sorted(percents), shown  # a moving percentage
            first_reading = next(i for i, s in enumerate(seen) if READING.search(s))
            first_generating = next(i for i, s in enumerate(seen) if "generating" in s)
            assert first_reading < first_generating, shown
            done = [s for s in seen[first_generating:] if "generating" not in s and "reading" not in s]
            assert any(re.search(r"cache \d+%", s) for s in done), shown
            assert all(len(s) < 80 for s in seen), shown
            print(shown)  # what the user saw, for the log
            if os.environ.get(SHOT_ENV) and shot:
                save_shot(shot, Path(os.environ[SHOT_ENV]))
            pane.exit_claude()
        finally:
            pane.close()
        assert_nothing_left(config, data)
