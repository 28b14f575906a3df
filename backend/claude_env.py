"""The environment that points Claude Code at ccbridge and suits a local model.

One list of settings, three readers: `ccbridge env` prints it as shell lines,
`ccbridge claude` applies it to Claude Code's environment, and the panel's env
card shows it. What each variable did in Claude Code 2.1.197, 2.1.330 and
2.1.332 (measured, see FACTS):

- `ANTHROPIC_AUTH_TOKEN` is sent as `Authorization: Bearer`. With
  `ANTHROPIC_API_KEY` set instead, interactive Claude Code stops on "Detected a
  custom API key ... Do you want to use this API key?" (No preselected), so the
  key variable is unset.
- `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`: without it, an interactive
  session on a machine with no route out stops on "Unable to connect to
  Anthropic services".
- `CLAUDE_CODE_ATTRIBUTION_HEADER=0` removes the per-session billing line at
  the head of the system prompt, which otherwise makes every new session miss
  llama-server's prompt cache from its first tokens.
- `CLAUDE_CODE_MAX_OUTPUT_TOKENS` replaces the 64000-128000 `max_tokens` it
  asks for, so prompt and answer fit the backend's context.
- `ANTHROPIC_MODEL` and the `ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL` tier
  variables: see `TIER_MODELS`.
- `CLAUDE_CODE_MAX_CONTEXT_TOKENS` is the context window Claude Code assumes
  for a model it does not know (2.1.330 and 2.1.332; ignored for its own model
  names): with the tier names below it compacts before the backend's context
  is full (`/context` showed "Auto-compact window: 65.5k tokens" for 65536).
  Without it an unknown name is assumed to hold a million tokens.
- `CLAUDE_CODE_AUTO_COMPACT_WINDOW` does the same for 2.1.197, which ignores
  the variable above (an unknown name gets 200k there), but only from 100k up.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from backend.backend_info import COMFORTABLE_CONTEXT, MIN_CONTEXT, BackendInfo, output_cap
from backend.config.aliases import AliasTable
from backend.config.model import Config

API_TIMEOUT_MS = 600_000
"""Local prompts can take minutes to process before the first token."""

TIER_MODELS = (
    ("ANTHROPIC_MODEL", "claude-opus-ccbridge"),
    ("ANTHROPIC_DEFAULT_OPUS_MODEL", "claude-opus-ccbridge"),
    ("ANTHROPIC_DEFAULT_SONNET_MODEL", "claude-sonnet-ccbridge"),
    ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "claude-haiku-ccbridge"),
)
"""The model names Claude Code is told to ask for, one per tier.

Claude Code's own names change with nearly every release, and for its default
(`opus[1m]`, "Opus 4.8 (1M context)") it assumes a million-token context
whatever the environment says, so it would never compact before a local
context overflows. These names are the same in every release, carry the tier
word so tier patterns such as `claude-haiku-*` still pick the backend for
that tier, and are unknown to Claude Code, so `CLAUDE_CODE_MAX_CONTEXT_TOKENS`
sets their window. Each is kept only when ccbridge's alias table routes it;
otherwise Claude Code's own name is used.
"""


@dataclass(frozen=True, slots=True)
class EnvSetting:
    """One environment variable for Claude Code; `value` None means: unset it."""

    name: str
    value: str | None
    why: str = ""

    def shell(self, *, why: bool = True) -> str:
        """The line for a POSIX shell, with the reason as a comment unless `why` is False."""
        line = f"unset {self.name}" if self.value is None else f"export {self.name}={shlex.quote(self.value)}"
        return f"{line}  # {self.why}" if self.why and why else line


def base_url(config: Config) -> str:
    """The URL Claude Code reaches ccbridge at: the one helper for it (a wildcard listen address becomes
    loopback; an IPv6 address is bracketed, `http://[::1]:8082`)."""
    host = config.proxy.host.strip("[]")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{config.proxy.port}"


def claude_settings(config: Config, info: BackendInfo | None) -> list[EnvSetting]:
    """Every variable for Claude Code, sized from `info` (the first backend, None when unknown)."""
    first = next(iter(config.backends.values()), None)
    reachable = info if info is not None and info.reachable else None
    cap = output_cap(reachable, first.max_tokens if first else None)
    n_ctx = reachable.n_ctx_slot if reachable else None
    ctx = f"context {n_ctx} per slot" if n_ctx else "context unknown"
    token_why = ("the proxy's api_key" if config.proxy.api_key else "any value: the proxy has no api_key")
    settings = [
        EnvSetting("ANTHROPIC_BASE_URL", base_url(config)),
        EnvSetting("ANTHROPIC_AUTH_TOKEN", config.proxy.api_key or "ccbridge-local",
                   f"{token_why}; sent as a Bearer token, so no API-key dialog"),
        EnvSetting("ANTHROPIC_API_KEY", None, "when set, interactive Claude Code asks whether to use it"),
        EnvSetting("CLAUDE_CODE_MAX_OUTPUT_TOKENS", str(cap), f"fits the backend ({ctx})"),
        EnvSetting("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1", "no calls to Anthropic's hosts"),
        EnvSetting("API_TIMEOUT_MS", str(API_TIMEOUT_MS), "local prompts can take minutes"),
        EnvSetting("CLAUDE_CODE_ATTRIBUTION_HEADER", "0", "no per-session billing line: sessions share the cache"),
    ]
    if n_ctx:
        settings.append(EnvSetting("CLAUDE_CODE_MAX_CONTEXT_TOKENS", str(n_ctx),
                                   "the window for the model names below: compact before it is full"))
    else:  # never none: Claude Code would assume a million tokens and never compact (FACTS)
        assumed, source = assumed_context(config)
        settings.append(EnvSetting("CLAUDE_CODE_MAX_CONTEXT_TOKENS", str(assumed),
                                   f"ASSUMED ({source}): the backend did not say; set its context per slot"))
    if n_ctx and n_ctx >= COMFORTABLE_CONTEXT:
        settings.append(EnvSetting("CLAUDE_CODE_AUTO_COMPACT_WINDOW", str(n_ctx),
                                   "the same for Claude Code 2.1.197 (from 100k up)"))
    table = AliasTable(config.aliases)
    for name, model in TIER_MODELS:
        rule = table.resolve(model)
        if rule is not None:
            settings.append(EnvSetting(name, model, f'-> {rule.target} (alias "{rule.pattern}")'))
    return settings


def assumed_context(config: Config) -> tuple[int, str]:
    """The window to give Claude Code when the backend cannot say (loading, down): the context per
    slot of the first backend's `command` (-c / -np) when ccbridge runs it, else the least Claude
    Code works in. Returns (tokens, where it came from)."""
    from backend.monitor.process import command_flags

    first = next(iter(config.backends.values()), None)
    flags = command_flags(first.command) if first is not None and first.command else None
    if first is not None and flags is not None and flags.ctx:
        per_slot = flags.ctx // max(1, flags.parallel or 1)
        return per_slot, f"-c {flags.ctx}" + (f" / -np {flags.parallel}" if flags.parallel else "") + \
            f" in backends.{first.name}.command"
    return MIN_CONTEXT, "the least Claude Code's first turn fits in"


STATUSLINE_REFRESH_S = 1
"""Claude Code's smallest refreshInterval: the prompt-read percentage moves every second."""


def statusline_command() -> str:
    """The shell command Claude Code runs for its status line: `ccbridge statusline`'s module run by
    this interpreter as `python -I -S .../statusline.py`, by absolute paths (Claude Code's PATH may not
    hold the virtual environment). Measured here: 46 ms a run against 84 ms for the console script,
    which pays for site-packages and the editable install's finder (bench/statusline.py)."""
    import sys
    from pathlib import Path

    return shlex.join([sys.executable, "-I", "-S", str(Path(__file__).with_name("statusline.py"))])


def statusline_settings(command: str | None = None) -> dict[str, object]:
    """Claude Code settings with ccbridge's status line (for `claude --settings` or settings.json)."""
    return {"statusLine": {"type": "command", "command": command or statusline_command(),
                           "refreshInterval": STATUSLINE_REFRESH_S, "padding": 0}}


def statusline_snippet_lines(command: str | None = None) -> list[str]:
    """`ccbridge env`'s comment: the settings.json entry for users who start `claude` themselves."""
    entry = json.dumps(statusline_settings(command)["statusLine"])
    return ["# Claude Code's status line shows what the local model is doing (prompt read, cache, tok/s):",
            f'# add to ~/.claude/settings.json:  "statusLine": {entry}']


def shell_lines(settings: list[EnvSetting], *, why: bool = True) -> list[str]:
    """`ccbridge env`'s output: paste it into a shell, or `eval "$(ccbridge env)"`."""
    return [s.shell(why=why) for s in settings]


def apply(settings: list[EnvSetting], environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environ` with every setting applied (set or removed)."""
    env = dict(environ)
    for s in settings:
        if s.value is None:
            env.pop(s.name, None)
        else:
            env[s.name] = s.value
    return env
