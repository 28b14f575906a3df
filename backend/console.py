"""Lines for a terminal or a pipe, written off the event loop.

`ccbridge serve` prints one line per request. A `print` on the proxy's event
loop blocks every request when stdout is a pipe nobody reads (a stalled
`ccbridge serve | less`, a full log pipe); `ConsoleWriter` hands lines to a
thread instead, which writes what has gathered a few times a second (one
system call per batch, not per request). Bounded: while the reader is stalled
the oldest lines are dropped and counted, and the count is written once it
reads again.
"""

from __future__ import annotations

import collections
import sys
import threading
from typing import TextIO

from backend.redaction import redact

FLUSH_EVERY = 0.2  # seconds between writes while lines come in


class ConsoleWriter:
    """A thread that writes lines to `stream`; `write` never blocks (a deque append)."""

    def __init__(self, stream: TextIO | None = None, max_lines: int = 10_000) -> None:
        self._stream = stream or sys.stdout
        self._lines: collections.deque[str] = collections.deque()
        self._max = max_lines
        self._dropped = 0
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ccbridge-console", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        if len(self._lines) >= self._max:  # the reader is stalled: drop the oldest (count is approximate)
            self._lines.popleft()
            self._dropped += 1
        self._lines.append(line)

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_EVERY)
            batch = []
            while self._lines:
                batch.append(self._lines.popleft())
            dropped, self._dropped = self._dropped, 0
            if batch or dropped:
                try:
                    if dropped:
                        self._stream.write(f"ccbridge: {dropped} log line(s) dropped while output was stalled\n")
                    self._stream.write("".join(redact(line) + "\n" for line in batch))  # off the loop
                    self._stream.flush()
                except (OSError, ValueError):
                    pass  # stdout closed (a pipe whose reader left): serving goes on without it
            if self._closed and not self._lines:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (waiting at most `timeout` seconds), then stop."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
