"""Run the pinned Claude Code releases (installed by
``bash scripts/install_claude_code.sh`` into the ccbridge tool cache)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from .llama import cache_dir

CLAUDE_VERSIONS = ("2.1.197", "2.1.330", "2.1.332")
INSTALL_SCRIPT = "bash scripts/install_claude_code.sh"


def claude_binary(version: str) -> Path:
    """Path of the cached ``claude`` for ``version``; RuntimeError if missing."""
    path = cache_dir() / "tools" / f"claude-code-{version}" / "node_modules" / ".bin" / "claude"
    if not (path.exists() and os.access(path, os.X_OK)):
        raise RuntimeError(f"Claude Code {version} not found at {path}: run `{INSTALL_SCRIPT}` first")
    return path


def claude_env(
    base_url: str,
    *,
    home: Path,
    api_key: str = "sk-test-local",
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment ``run_claude`` gives Claude Code: nothing from ours but PATH."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home / "tmp"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": api_key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "512",
        "API_TIMEOUT_MS": "120000",
        "DISABLE_AUTOUPDATER": "1",
    }
    if extra_env:
        env.update(extra_env)
    return env


def run_claude(
    version: str,
    base_url: str,
    prompt: str = "Hello world",
    *,
    api_key: str = "sk-test-local",
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    timeout: float = 120,
    home: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``claude -p <prompt> [args]`` against ``base_url`` with a scratch HOME.

    With ``home`` given, that HOME (and its ``work`` folder as the working directory) is used
    and kept, so that several runs share one folder and ``-c`` finds the last session.
    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    if home is not None:
        return _run_in(home, version, base_url, prompt, api_key, extra_env, args, timeout)
    with tempfile.TemporaryDirectory(prefix=f"ccbridge-claude-{version}-") as tmp:
        return _run_in(Path(tmp), version, base_url, prompt, api_key, extra_env, args, timeout)


def _run_in(home: Path, version: str, base_url: str, prompt: str, api_key: str,
            extra_env: Mapping[str, str] | None, args: Sequence[str], timeout: float,
            ) -> subprocess.CompletedProcess[str]:
    binary = claude_binary(version)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    workdir = home / "work"
    workdir.mkdir(exist_ok=True)
    env = claude_env(base_url, home=home, api_key=api_key, extra_env=extra_env)
    return subprocess.run(
        [str(binary), "-p", prompt, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=timeout,
        check=False,
    )


def trusted_home(root: Path) -> tuple[Path, Path]:
    """A scratch HOME for interactive Claude Code: (home, work folder).

    Its ~/.claude.json holds the two keys that skip the first-run screens: `hasCompletedOnboarding`
    (theme and welcome) and `projects.<folder>.hasTrustDialogAccepted` ("Is this a project you trust?").
    """
    home = root.resolve() / "home"
    work = home / "work"
    work.mkdir(parents=True)
    settings = {"hasCompletedOnboarding": True, "projects": {str(work): {"hasTrustDialogAccepted": True}}}
    (home / ".claude.json").write_text(json.dumps(settings))
    return home, work


def assert_nothing_left(config: Path, data: Path, timeout: float = 30) -> None:
    """No `ccbridge serve` for `config` and no LiteLLM of the data dir `data` still running
    (they may take a moment to stop)."""
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if f"serve --config {config}" in line or str(data / "run") in line:
                left.append(line)
        if not left:
            return
        assert time.monotonic() < deadline, left
        time.sleep(0.3)
