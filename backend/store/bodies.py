"""Kept request and response bodies: what a request's bodies are, and the cap on the `bodies` table.

`HistoryStore.add_bodies` cuts them to `history.body_max_kb` and queues them;
the writer redacts them and stores them beside the record (`schema.py` has the
table), dropping the oldest once all of them pass `history.bodies_max_mb`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestBodies:
    """A request's body as the client sent it and the answer it got (each perhaps cut short)."""

    id: str
    request: bytes
    response: bytes
    request_bytes: int  # the length before any cut
    response_bytes: int

    @property
    def cut(self) -> bool:
        return len(self.request) < self.request_bytes or len(self.response) < self.response_bytes


@dataclass(frozen=True, slots=True)
class QueuedBodies:
    """A request's bodies in the write queue (cut already; redacted by the writer)."""

    started_at: float
    bodies: RequestBodies

    def row(self, redact: Callable[[bytes], bytes]) -> tuple[str, float, bytes, bytes, int, int]:
        """A `bodies` row, redacted."""
        b = self.bodies
        return (b.id, self.started_at, redact(b.request), redact(b.response), b.request_bytes, b.response_bytes)


BODIES_BY_ID = "SELECT id, request, response, request_bytes, response_bytes FROM bodies WHERE id = ?"


def bodies_from_row(row: Sequence[Any]) -> RequestBodies:
    """A row of `BODIES_BY_ID` as `RequestBodies`."""
    rid, request, response, request_bytes, response_bytes = row
    return RequestBodies(rid, bytes(request or b""), bytes(response or b""), int(request_bytes or 0),
                         int(response_bytes or 0))


def trim_bodies(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Within a transaction: drop the oldest bodies until all fit `max_bytes`; the bytes kept."""
    kept = 0
    cutoff: float | None = None
    for started_at, size in conn.execute(
            "SELECT started_at, length(request) + length(response) FROM bodies ORDER BY started_at DESC"):
        if kept + (size or 0) > max_bytes:
            cutoff = started_at
            break
        kept += size or 0
    if cutoff is not None:
        conn.execute("DELETE FROM bodies WHERE started_at <= ?", (cutoff,))
    return kept
