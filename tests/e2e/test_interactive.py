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

import shlex
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.claude import CLAUDE_VERSIONS, assert_nothing_left, claude_binary, trusted_home
from tests.support.llama import cache_dir
from tests.support.serve import REPO, ServeProcess, write_chain_config
from tests.support.tmux import Pane

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bridge(llama_server, tmp_path_factory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("interactive-bridge")
    config = write_chain_config(tmp / "ccbridge.yaml", llama_server.api_base)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    with ServeProcess(config, env) as serve:
        yield serve


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
