"""`ccbridge claude`'s wait for the backend, on one updating line, and what it assumes when it cannot learn."""

from __future__ import annotations

import io
from pathlib import Path

from backend.backend_info import BackendInfo
from backend.config import parse_config
from backend.launch import OneLine, statusline_args, user_statusline, wait_backend
from backend.serve_info import describe
from tests.support.config import config_text

CONFIG = parse_config(config_text())
BACKEND = CONFIG.backends["local"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_updating_line_while_loading_then_ready():
    answers = [BackendInfo("local", "x", False, error="Loading model", health="loading")] * 3 + [
        BackendInfo("local", "x", True, "qwen", n_ctx_slot=32768, health="ok")]
    term = Terminal()
    info = wait_backend(BACKEND, OneLine(term), interval=0.01, probe=lambda b: answers.pop(0))
    assert info.n_ctx_slot == 32768
    text = term.getvalue()
    assert text.count("\r\x1b[K") == 4 and text.endswith("context 32768 per slot)\n")
    assert "waiting for backend local at http://127.0.0.1:9: llama-server is loading its model (503) (0 s)" in text


def test_gives_up_after_its_limits_and_returns_what_it_last_heard():
    down = BackendInfo("local", "x", False, error="ClientConnectorError: refused", health="unreachable")
    out = io.StringIO()
    info = wait_backend(BACKEND, OneLine(out), down_timeout=0.05, interval=0.01, probe=lambda b: down)
    assert info is down and out.getvalue().count("\n") == 1 and "refused" in out.getvalue()


def test_status_line_settings_unless_the_user_has_one_or_passed_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CCBRIDGE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    monkeypatch.chdir(tmp_path)
    said: list[str] = []
    args = statusline_args(["--model", "x"], said.append)
    assert args[0] == "--settings" and '"refreshInterval": 1' in args[1] and not said
    assert statusline_args(["--settings", "mine.json"], said.append) == [] and not said
    assert statusline_args(["-p", "x"], said.append) == [] == statusline_args(["--print"], said.append)
    project = tmp_path / "repo" / ".claude"
    project.mkdir(parents=True)
    (project / "settings.local.json").write_text('{"statusLine": {"type": "command", "command": "x"}}')
    assert user_statusline(tmp_path / "repo" / "src") == project / "settings.local.json"
    assert user_statusline(tmp_path) is None
    monkeypatch.chdir(tmp_path / "repo")
    assert statusline_args([], said.append) == [] and len(said) == 1 and "settings.local.json" in said[0]
    assert statusline_args([], said.append) == [] and len(said) == 1  # said once


def test_describe_names_the_serve_who_started_it_and_when():
    status = {"version": "0.1.0", "config_path": "/c.yaml",
              "services": [{"name": "proxy", "pid": 77, "started_by": "the panel (pid 5)", "started_at": 1000.0}]}
    line = describe(status, "http://127.0.0.1:8082", now=1000.0 + 7200)
    assert line.startswith("ccbridge serve 0.1.0 at http://127.0.0.1:8082 (pid 77, config /c.yaml), started by "
                           "the panel (pid 5) at ") and line.endswith("(2.0 h ago)")
    assert describe({"services": []}, "http://h:1") == "ccbridge serve at http://h:1"


def test_paths_are_absolute_in_the_settings_snippet():
    from backend.claude_env import statusline_command

    argv = statusline_command().split()
    assert Path(argv[0]).is_absolute() and argv[1:3] == ["-I", "-S"] and Path(argv[3]).is_file()


def test_env_ends_with_the_settings_entry_as_comments():
    import json

    from backend.claude_env import statusline_snippet_lines

    lines = statusline_snippet_lines("/x/python -I -S /x/backend/statusline.py")
    assert all(line.startswith("# ") for line in lines)  # `eval "$(ccbridge env)"` ignores them
    entry = json.loads(lines[-1].split('"statusLine": ', 1)[1])
    assert entry == {"type": "command", "command": "/x/python -I -S /x/backend/statusline.py", "refreshInterval": 1,
                     "padding": 0}


def test_waiting_for_the_services_rewrites_one_line_with_the_time(monkeypatch):
    from backend import launch

    answers = [{"services": [{"name": "proxy", "state": "ready"}, {"name": "litellm", "state": "installing"}]}] * 2 + [
        {"services": [{"name": "proxy", "state": "ready"}, {"name": "litellm", "state": "starting"}]},
        {"services": [{"name": "proxy", "state": "ready"}, {"name": "litellm", "state": "ready"}]}]
    monkeypatch.setattr(launch, "bridge_status", lambda url, key: answers.pop(0))
    monkeypatch.setattr(launch.time, "sleep", lambda s: None)
    term, said = Terminal(), []
    status = launch.wait_serving("http://x", None, alive=lambda: True, timeout=5, say=said.append, line=OneLine(term))
    assert status["services"][1]["state"] == "ready" and not said
    text = term.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.endswith("litellm starting (0 s)\n")
    assert "waiting for litellm installing (first run: LiteLLM's environment, about a minute) (0 s)" in text


def test_claude_never_starts_without_a_window_and_says_what_it_assumed(monkeypatch, tmp_path):
    import contextlib

    from backend import launch

    monkeypatch.setenv("CCBRIDGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CLAUDE_CODE_MAX_CONTEXT_TOKENS", raising=False)
    down = BackendInfo("local", "x", False, error="Loading model", health="loading")
    ran: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(launch, "running_bridge", lambda config, say: contextlib.nullcontext({}))
    monkeypatch.setattr(launch, "wait_backend", lambda backend, line: down)
    monkeypatch.setattr(launch, "run_claude", lambda claude, args, env: ran.append((args, env)) or 0)
    said: list[str] = []
    assert launch.claude_session(CONFIG, "claude", ["-p", "hi"], said.append) == 0
    assert ran[0][1]["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768"
    assert said == ["ccbridge: the backend's context is unknown (Loading model); assuming 32768 tokens (the least "
                    "Claude Code's first turn fits in): CLAUDE_CODE_MAX_CONTEXT_TOKENS=32768. Set "
                    "CLAUDE_CODE_MAX_CONTEXT_TOKENS to llama-server's context per slot (its -c divided by -np) to "
                    "change it."]
    monkeypatch.setenv("CLAUDE_CODE_MAX_CONTEXT_TOKENS", "50000")  # the user's own is kept
    assert launch.claude_session(CONFIG, "claude", ["-p", "hi"], said.append) == 0
    assert ran[1][1]["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "50000" and "keeping your" in said[-1]
