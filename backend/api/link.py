"""The `ccbridge serve` a panel talks to: one already answering, or one started here as a child.

`ccbridge` with no command opens the panel over a serve it starts in the
background (`python -m backend serve --config FILE`, its own session, its
output in the run dir), or over the serve already answering on the
configured port. The panel is only a client: a crash in it never drops a
request, and quitting stops only what it started. `ccbridge attach URL`
never starts anything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backend import paths
from backend.api.client import BridgeClient
from backend.control import ControlUnavailable, ControlUnreachable
from backend.serve_info import STARTED_BY_ENV

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class ServeLink:
    """Finds or starts a serve; `client` is the control interface to it."""

    def __init__(self, url: str, key: str | None = None, *, config_path: Path | None = None,
                 spawn: bool = True, log_path: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = BridgeClient(self.url, key)
        self.config_path = config_path
        self.spawn = spawn and config_path is not None
        self.log_path = log_path or paths.run_dir() / f"serve-{self.url.rsplit(':', 1)[-1]}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.found: dict[str, Any] | None = None
        """The status of the serve found already running (None when started here): who, when."""

    @property
    def started_here(self) -> bool:
        return self.process is not None

    async def connect(self, timeout: float = START_TIMEOUT_S) -> str:
        """Attach to the serve at `url`, or start one (when allowed); return "attached" or "started".

        Raises ControlUnavailable with what to do when neither works."""
        try:
            self.found = await self.client.status()
            return "attached"
        except ControlUnreachable:
            if not self.spawn:
                raise
        await asyncio.to_thread(self._start)
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise ControlUnavailable(f"ccbridge serve exited with code {code}:\n{self._log_tail()}")
            try:
                await self.client.status()
                return "started"
            except ControlUnreachable:
                if time.monotonic() > deadline:
                    await asyncio.to_thread(self.stop)
                    raise ControlUnavailable(f"ccbridge serve did not answer at {self.url} within {timeout:.0f} s:"
                                             f"\n{self._log_tail()}") from None
            await asyncio.sleep(0.1)

    def _start(self) -> None:
        assert self.config_path is not None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- ccbridge serve started by the panel at {time.ctime()}\n".encode())
            log.flush()
            # its own session: Ctrl-C in the panel's terminal, or the panel dying, never reaches it
            self.process = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", STARTED_BY_ENV: f"the panel (pid {os.getpid()})"},
            )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the serve started here (SIGTERM: it stops LiteLLM and its children); nothing when attached."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    async def close(self, *, stop_started: bool = True) -> None:
        """Close the client; stop the serve started here unless told to leave it running."""
        await self.client.aclose()
        if stop_started:
            await asyncio.to_thread(self.stop)
