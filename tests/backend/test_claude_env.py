"""What `ccbridge env` prints and `ccbridge claude` sets, and how `ccbridge claude` reads its arguments."""

from __future__ import annotations

from backend.backend_info import BackendInfo
from backend.claude_env import apply, claude_settings, shell_lines
from backend.cli import split_claude_args
from backend.config import parse_config

CONFIG = """
proxy:
  port: 8090
backends:
  big:
    api_base: http://127.0.0.1:8080/v1
  small:
    api_base: http://127.0.0.1:8081/v1
aliases:
  "claude-haiku-*": small
  "*": big
"""


def _values(settings):  # type: ignore[no-untyped-def]
    return {s.name: s.value for s in settings}


def test_token_not_api_key_and_tiers_follow_the_alias_table():
    info = BackendInfo("big", "http://127.0.0.1:8080/v1", True, "m", n_ctx_slot=131072)
    settings = claude_settings(parse_config(CONFIG), info)
    values = _values(settings)
    assert values["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8090"
    assert values["ANTHROPIC_AUTH_TOKEN"] == "ccbridge-local"
    assert values["ANTHROPIC_API_KEY"] is None  # unset, or interactive Claude Code asks about it
    assert values["CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert values["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "32000"
    assert values["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "131072"
    assert values["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] == "131072"
    assert values["ANTHROPIC_MODEL"] == "claude-opus-ccbridge"
    lines = shell_lines(settings)
    assert 'export ANTHROPIC_DEFAULT_HAIKU_MODEL=claude-haiku-ccbridge  # -> small (alias "claude-haiku-*")' in lines
    assert 'export ANTHROPIC_DEFAULT_SONNET_MODEL=claude-sonnet-ccbridge  # -> big (alias "*")' in lines
    assert any(line.startswith("unset ANTHROPIC_API_KEY  # ") for line in lines)


def test_unknown_context_gets_an_assumed_window_that_says_so():
    settings = claude_settings(parse_config(CONFIG), BackendInfo("big", "x", False, error="down"))
    values = _values(settings)
    assert values["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "8000"
    # never none: Claude Code would assume a million tokens and never compact
    assert values["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "32768" and "CLAUDE_CODE_AUTO_COMPACT_WINDOW" not in values
    line = next(x for x in shell_lines(settings) if "MAX_CONTEXT" in x)
    assert line.startswith("export CLAUDE_CODE_MAX_CONTEXT_TOKENS=32768  # ASSUMED (the least"), line
    managed = parse_config(CONFIG.replace("    api_base: http://127.0.0.1:8080/v1\n",
                                          "    api_base: http://127.0.0.1:8080/v1\n"
                                          "    command: llama-server -m m.gguf -c 65536 -np 2\n", 1))
    window = next(s for s in claude_settings(managed, None) if s.name == "CLAUDE_CODE_MAX_CONTEXT_TOKENS")
    assert window.value == "32768" and "-c 65536 / -np 2 in backends.big.command" in window.why


def test_a_tier_no_alias_routes_keeps_claude_codes_own_name():
    config = parse_config(CONFIG.replace('  "*": big\n', '  "claude-opus-*": big\n'))
    values = _values(claude_settings(config, None))
    assert values["ANTHROPIC_MODEL"] == "claude-opus-ccbridge"
    assert values["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "claude-haiku-ccbridge"
    assert "ANTHROPIC_DEFAULT_SONNET_MODEL" not in values


def test_proxy_key_is_the_token_and_apply_removes_a_stray_api_key():
    config = parse_config(CONFIG.replace("  port: 8090\n", "  port: 8090\n  api_key: sk-local-secret\n"))
    env = apply(claude_settings(config, None), {"ANTHROPIC_API_KEY": "sk-stray", "PATH": "/bin"})
    assert env["ANTHROPIC_AUTH_TOKEN"] == "sk-local-secret"
    assert "ANTHROPIC_API_KEY" not in env and env["PATH"] == "/bin"


def test_claude_arguments_are_passed_through_untouched():
    assert split_claude_args(["claude", "-p", "Hello world"]) == ([], None, ["-p", "Hello world"])
    assert split_claude_args(["claude", "--config", "c.yaml", "--version"]) == ([], "c.yaml", ["--version"])
    assert split_claude_args(["--config", "c.yaml", "claude", "--", "--config", "x"]) == \
        (["--config", "c.yaml"], None, ["--config", "x"])
    assert split_claude_args(["claude", "--config=c.yaml"]) == ([], "c.yaml", [])
    assert split_claude_args(["env", "claude"]) is None
    assert split_claude_args(["--config", "claude", "serve"]) is None
