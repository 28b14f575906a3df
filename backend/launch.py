"""`ccbridge claude`: run Claude Code against ccbridge, with everything set.

It uses the ccbridge already listening on the configured port (checked to be
ccbridge through its status API), or starts `ccbridge serve` as a child in
its own session (so the terminal's Ctrl-C reaches Claude Code only), waits
until it serves, and stops it when Claude Code exits. Claude Code gets the
environment of `backend.claude_env` (what `ccbridge env` prints) and the
terminal; its exit code is passed through. Nothing is written to the user's
Claude Code settings (`~/.claude.json`): the Bearer token is what avoids the
API-key dialog.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from backend import paths
from backend.backend_probe import probe_backend
from backend.claude_env import apply, base_url, claude_settings
from backend.config.model import Config
from backend.services.process import DIE_WITH_PARENT

INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
SERVING_STATES = frozenset({"ready", "external", "unused"})
"""Service states in which requests are served."""
START_TIMEOUT = 600.0
"""Seconds to wait for a ccbridge started here: the first start creates LiteLLM's environment."""


class LaunchError(Exception):
    """`ccbridge claude` cannot go on; the message says what to do."""

    exit_code = 1


class ClaudeMissing(LaunchError):
    """No `claude` on PATH (exit code 127, as a shell gives for a command it cannot find)."""

    exit_code = 127


def find_claude(path: str | None = None) -> str:
    """The `claude` executable on PATH; LaunchError with the install command when there is none."""
    found = shutil.which("claude", path=path)
    if found is None:
        raise ClaudeMissing(f"Claude Code (`claude`) is not on PATH. Install it with `{INSTALL_HINT}` "
                          "(Node.js 18 or newer), then run `ccbridge claude` again.")
    return found


def bridge_status(url: str, api_key: str | None) -> dict[str, Any] | None:
    """ccbridge's status at `url`; None when nothing listens there; LaunchError when
    something else (or a ccbridge with another api_key) does."""
    headers = {"x-api-key": api_key} if api_key else {}
    try:
        resp = httpx.get(f"{url}/ccbridge/api/status", headers=headers, timeout=5, trust_env=False)
    except httpx.ConnectError:
        return None
    except httpx.HTTPError as exc:
        raise LaunchError(f"{url} is held by a program that does not answer like ccbridge ({exc!r}). "
                          "Stop it, or set proxy.port in ccbridge.yaml to a free port.") from None
    if resp.status_code == 401:
        raise LaunchError(f"the ccbridge at {url} wants another api_key than proxy.api_key in this config.")
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code != 200 or not isinstance(data, dict) or "services" not in data:
        raise LaunchError(f"{url} is held by a program that is not ccbridge (GET /ccbridge/api/status "
                          f"answered {resp.status_code}). Stop it, or set proxy.port in ccbridge.yaml.")
    return data


def _not_serving(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in status.get("services", []) if s.get("state") not in SERVING_STATES]


class BackgroundBridge:
    """`ccbridge serve` run as a child for the length of one Claude Code session."""

    def __init__(self, config: Config, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "backend", "serve"]
        if self.config.source is not None:
            argv += ["--config", str(self.config.source)]
        with open(self.log_path, "wb") as log:
            # own session: the terminal's Ctrl-C is Claude Code's, not the bridge's
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=DIE_WITH_PARENT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (it stops LiteLLM and its servers, then exits), SIGKILL after `grace` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_serving(url: str, api_key: str | None, *, alive: Callable[[], bool], timeout: float,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """Poll the status API until every service serves; LaunchError when one failed for good,
    when `alive()` turns false, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    while True:
        status = bridge_status(url, api_key)
        if status is not None:
            waiting = _not_serving(status)
            if not waiting:
                return status
            for svc in waiting:
                if svc.get("state") == "failed":
                    raise LaunchError(f"{svc.get('name')} failed: {svc.get('last_error')}")
                note = f"{svc.get('name')} {svc.get('state')}"
                if note not in shown:
                    shown.add(note)
                    extra = " (first run: LiteLLM's environment, about a minute)" if svc.get("state") == \
                        "installing" else ""
                    say(f"ccbridge: waiting for {note}{extra}")
        if not alive():
            raise LaunchError("ccbridge serve exited before it was ready")
        if time.monotonic() > deadline:
            raise LaunchError(f"ccbridge at {url} was not ready after {timeout:.0f} s")
        time.sleep(0.25)


@contextlib.contextmanager
def running_bridge(config: Config, say: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The ccbridge for `config`: the one already running (left running), or one started
    here (stopped on exit). Yields its status."""
    url, key = base_url(config), config.proxy.api_key
    status = bridge_status(url, key)
    if status is not None:
        say(f"ccbridge: using the ccbridge already running at {url}")
        yield wait_serving(url, key, alive=lambda: True, timeout=START_TIMEOUT, say=say)
        return
    bridge = BackgroundBridge(config, paths.run_dir() / "claude-serve.log")
    say(f"ccbridge: starting ccbridge serve at {url} (log: {bridge.log_path})")
    bridge.start()
    try:
        try:
            status = wait_serving(url, key, alive=lambda: bridge.running, timeout=START_TIMEOUT, say=say)
        except LaunchError as exc:
            if bridge.running or bridge_status(url, key) is None:
                raise LaunchError(f"{exc}. Last lines of {bridge.log_path}:\n{bridge.log_tail()}") from None
            # another `ccbridge claude` started one at the same moment and won the port: use it
            say(f"ccbridge: using the ccbridge another session started at {url}")
            status = wait_serving(url, key, alive=lambda: True, timeout=START_TIMEOUT, say=say)
        yield status
    finally:
        bridge.stop()


def run_claude(claude: str, args: list[str], env: dict[str, str]) -> int:
    """Run Claude Code in this terminal; return its exit code (128+N when a signal N ended it)."""
    proc = subprocess.Popen([claude, *args], env=env)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    # Ctrl-C reaches Claude Code from the terminal itself (same process group); a TERM or HUP
    # sent to us is passed on, so the cleanup after it still runs.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
                signal.SIGHUP: signal.signal(signal.SIGHUP, forward)}
    try:
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


def claude_session(config: Config, claude: str, args: list[str], say: Callable[[str], None]) -> int:
    """`ccbridge claude`: the bridge up, Claude Code (`claude`, from `find_claude`) run with every
    setting, the bridge down again."""
    with running_bridge(config, say):
        first = next(iter(config.backends.values()), None)
        info = probe_backend(first) if first is not None else None
        env = apply(claude_settings(config, info), os.environ)
        return run_claude(claude, args, env)
