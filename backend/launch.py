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
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import httpx

from backend import paths
from backend.backend_info import BackendInfo
from backend.claude_env import apply, assumed_context, base_url, claude_settings, statusline_settings
from backend.config.model import BackendConfig, Config
from backend.llama_api import server_root
from backend.monitor.llama import probe_backend
from backend.serve_info import STARTED_BY_ENV, describe
from backend.services.process import DIE_WITH_PARENT

INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
SERVING_STATES = frozenset({"ready", "external", "unused"})
"""Service states in which requests are served."""
START_TIMEOUT = 600.0
"""Seconds to wait for a ccbridge started here: the first start creates LiteLLM's environment."""
BACKEND_LOADING_WAIT_S = 600.0
"""Seconds to wait while llama-server answers 503 (loading its model): minutes for a big model."""
BACKEND_DOWN_WAIT_S = 20.0
"""Seconds to wait while the backend does not answer at all (ccbridge may be starting it)."""
CONTEXT_VARIABLE = "CLAUDE_CODE_MAX_CONTEXT_TOKENS"


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
                                         start_new_session=True, preexec_fn=DIE_WITH_PARENT,
                                         env={**os.environ, STARTED_BY_ENV: f"ccbridge claude (pid {os.getpid()})"})

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
                 say: Callable[[str], None], line: OneLine | None = None) -> dict[str, Any]:
    """Poll the status API until every service serves; LaunchError when one failed for good,
    when `alive()` turns false, or after `timeout` seconds. What it waits for, and for how long, goes
    on `line` (one line rewritten in a terminal), else to `say` once per new state."""
    started = time.monotonic()
    deadline = started + timeout
    shown: set[str] = set()
    try:
        while True:
            status = bridge_status(url, api_key)
            if status is not None:
                waiting = _not_serving(status)
                if not waiting:
                    return status
                for svc in waiting:
                    if svc.get("state") == "failed":
                        raise LaunchError(f"{svc.get('name')} failed: {svc.get('last_error')}")
                notes = ", ".join(f"{svc.get('name')} {svc.get('state')}" for svc in waiting)
                extra = " (first run: LiteLLM's environment, about a minute)" if any(
                    svc.get("state") == "installing" for svc in waiting) else ""
                if line is not None:
                    line.show(f"ccbridge: waiting for {notes}{extra} ({time.monotonic() - started:.0f} s)", notes)
                elif notes not in shown:
                    shown.add(notes)
                    say(f"ccbridge: waiting for {notes}{extra}")
            if not alive():
                raise LaunchError("ccbridge serve exited before it was ready")
            if time.monotonic() > deadline:
                raise LaunchError(f"ccbridge at {url} was not ready after {timeout:.0f} s")
            time.sleep(0.25)
    finally:
        if line is not None:
            line.done()


@contextlib.contextmanager
def running_bridge(config: Config, say: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The ccbridge for `config`: the one already running (left running), or one started
    here (stopped on exit). Yields its status."""
    url, key = base_url(config), config.proxy.api_key
    status = bridge_status(url, key)
    if status is not None:
        say(f"ccbridge: using {describe(status, url)}")
        yield wait_serving(url, key, alive=lambda: True, timeout=START_TIMEOUT, say=say, line=OneLine())
        return
    bridge = BackgroundBridge(config, paths.run_dir() / "claude-serve.log")
    say(f"ccbridge: starting ccbridge serve at {url} (log: {bridge.log_path})")
    bridge.start()
    try:
        try:
            status = wait_serving(url, key, alive=lambda: bridge.running, timeout=START_TIMEOUT, say=say,
                                  line=OneLine())
        except LaunchError as exc:
            if bridge.running or bridge_status(url, key) is None:
                raise LaunchError(f"{exc}. Last lines of {bridge.log_path}:\n{bridge.log_tail()}") from None
            # another `ccbridge claude` started one at the same moment and won the port: use it
            say(f"ccbridge: using the ccbridge another session started at {url}")
            status = wait_serving(url, key, alive=lambda: True, timeout=START_TIMEOUT, say=say, line=OneLine())
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


class OneLine:
    """Progress on one line of a terminal (rewritten in place); one line per change elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._open = False
        self._last_key = ""
        self.shown = False
        """Anything was shown."""

    def show(self, text: str, key: str) -> None:
        """`key` is what the line is about without its clock: off a terminal, a line per new key."""
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self._open = True
        elif key != self._last_key:
            self.stream.write(text + "\n")
        self._last_key = key
        self.shown = True
        self.stream.flush()

    def done(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


def wait_backend(backend: BackendConfig, line: OneLine, *, loading_timeout: float = BACKEND_LOADING_WAIT_S,
                 down_timeout: float = BACKEND_DOWN_WAIT_S, interval: float = 1.0,
                 probe: Callable[[BackendConfig], BackendInfo] = probe_backend) -> BackendInfo:
    """Ask the backend until it says its context per slot: up to `loading_timeout` seconds while it
    loads its model (503), `down_timeout` while it does not answer at all. Returns the last answer."""
    started = time.monotonic()
    while True:
        info = probe(backend)
        if info.reachable and info.n_ctx_slot:
            if line.shown:
                line.show(f"ccbridge: {backend.name} is ready ({info.model}, context {info.n_ctx_slot} per slot)",
                          "ready")
            line.done()
            return info
        waited = time.monotonic() - started
        loading = info.health == "loading"
        if waited >= (loading_timeout if loading else down_timeout):
            line.done()
            return info
        what = "llama-server is loading its model (503)" if loading else \
            (info.error or "it does not say its context")
        line.show(f"ccbridge: waiting for backend {backend.name} at {server_root(backend.api_base)}: {what} "
                  f"({waited:.0f} s)", what)
        time.sleep(interval)


def claude_session(config: Config, claude: str, args: list[str], say: Callable[[str], None]) -> int:
    """`ccbridge claude`: the bridge up, the backend's context known (waited for while its model loads),
    Claude Code (`claude`, from `find_claude`) run with every setting and ccbridge's status line, the
    bridge down again."""
    with running_bridge(config, say):
        first = next(iter(config.backends.values()), None)
        info = wait_backend(first, OneLine()) if first is not None else None
        settings = claude_settings(config, info)
        if info is None or not info.n_ctx_slot:  # claude_settings put in an assumed window: say so
            own = os.environ.get(CONTEXT_VARIABLE)
            why = info.error if info is not None and info.error else "no backend"
            if own:
                settings = [s for s in settings if s.name != CONTEXT_VARIABLE]
                say(f"ccbridge: the backend's context is unknown ({why}); keeping your {CONTEXT_VARIABLE}={own}")
            else:
                assumed, source = assumed_context(config)
                say(f"ccbridge: the backend's context is unknown ({why}); assuming {assumed} tokens ({source}): "
                    f"{CONTEXT_VARIABLE}={assumed}. Set {CONTEXT_VARIABLE} to llama-server's context per slot "
                    "(its -c divided by -np) to change it.")
        env = apply(settings, os.environ)
        return run_claude(claude, [*statusline_args(args, say), *args], env)


def statusline_args(args: list[str], say: Callable[[str], None]) -> list[str]:
    """`--settings` with ccbridge's status line, unless the user passed their own `--settings` or their
    Claude Code settings already have a status line (kept; said once, with how to add ours), or Claude
    Code runs in print mode (`-p`: no screen to show it on)."""
    if any(a in ("--settings", "-p", "--print") or a.startswith("--settings=") for a in args):
        return []
    theirs = user_statusline(Path.cwd())
    if theirs is not None:
        marker = paths.run_dir() / "statusline-hint-shown"
        if not marker.exists():
            say(f"ccbridge: kept the statusLine of {theirs}. To see what the local model is doing there "
                f"instead, set it to: {json.dumps(statusline_settings()['statusLine'])}")
            with contextlib.suppress(OSError):
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(str(theirs))
        return []
    return ["--settings", json.dumps(statusline_settings())]


def user_statusline(cwd: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """The first of the user's Claude Code settings files that sets a statusLine, or None
    (user: $CLAUDE_CONFIG_DIR or ~/.claude; project: .claude/settings{,.local}.json up from `cwd`)."""
    env = os.environ if environ is None else environ
    user_dir = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else Path.home() / ".claude"
    candidates = [user_dir / "settings.json", user_dir / "settings.local.json"]
    for folder in (cwd, *cwd.parents):
        candidates += [folder / ".claude" / "settings.json", folder / ".claude" / "settings.local.json"]
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("statusLine"):
            return path
    return None
