"""Child processes that never outlive ccbridge.

Each child gets its own process group (so a stop reaches anything it spawned)
and, on Linux, a parent-death signal (so even `kill -9` of ccbridge takes the
child down with it). Output is captured line by line into a bounded buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence

from backend.redaction import learn, redact

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once in the parent: loading a library between fork and
    exec in a process with threads (the panel's, the history writer's) can deadlock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


# For `preexec_fn`: the child gets SIGTERM when ccbridge dies (None where prctl is missing).
DIE_WITH_PARENT: Callable[[], None] | None = _die_with_parent if _PRCTL is not None else None


class LogBuffer:
    """The last N lines of a service's output, with secrets blanked out."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._lines: collections.deque[tuple[float, str]] = collections.deque(maxlen=maxlen)

    def hide(self, secrets: Iterable[str | None]) -> None:
        """Blank these secrets: they join every secret the one redactor (`backend.redaction`) knows."""
        learn(secrets)

    def redact(self, line: str) -> str:
        return redact(line)

    def add(self, line: str) -> str:
        line = self.redact(line)
        self._lines.append((time.time(), line))
        return line

    def tail(self, n: int = 20) -> list[str]:
        return [line for _, line in list(self._lines)[-n:]]


class ChildProcess:
    """One running child: start, read its output, stop it (group-wide)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self._env = env
        self._cwd = cwd
        self._on_line = on_line
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            preexec_fn=DIE_WITH_PARENT,
        )
        self.started_at = time.time()
        self._reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the stream limit: skip its rest
                continue
            if not raw:
                return
            if self._on_line is not None:
                self._on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._reader), 1.0)
        return code

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, then SIGKILL after `grace` seconds."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # the group may hold grandchildren even after the leader is gone
        _signal_group(proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.cancel()
        return proc.returncode


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
