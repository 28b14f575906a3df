"""Request history in SQLite, written off the hot path.

`HistoryStore.add` only appends to an in-memory queue; one writer thread
commits the queue in batches. Reads open their own short-lived connection, so
they are safe from any thread, and merge the records still waiting in the queue
(a record is visible to `recent()` and `get()` the moment it is added).

When the database cannot be used (cannot be created, corrupt, read-only, disk
full) the store keeps the newest records in memory instead, sets `warning`,
and never raises into the caller.

The tables and the record-to-row mapping are in `schema.py`; what kept bodies
are, and the cap on them, in `bodies.py`.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from backend.events import RequestRecord
from backend.store.bodies import BODIES_BY_ID, QueuedBodies, RequestBodies, bodies_from_row, trim_bodies
from backend.store.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    SELECT,
    ensure_schema,
    insert_rows,
    record_row,
    row_record,
)

__all__ = ["HistoryStore", "RequestBodies", "SCHEMA_VERSION"]

log = logging.getLogger(__name__)

MEMORY_LIMIT = 10_000  # records kept when there is no usable database
BATCH_SIZE = 500  # the writer is woken early when this many are queued
_MAX_BATCH = 5_000  # records per transaction, so one commit never holds the lock long
_PRUNE_EVERY = 60.0  # seconds between retention passes
_LOCKED_BACKLOG = 100_000  # queued records we hold while another process locks the file
_READ_TIMEOUT = 2.0
_WRITE_TIMEOUT = 1.0


def _matches(record: RequestRecord, model: str | None, status: int | str | None, session_id: str | None,
             since: float | None = None) -> bool:
    """The Python twin of the WHERE clause `recent()` builds."""
    if since is not None and record.started_at < since:
        return False
    if model is not None and model not in (record.requested_model, record.routed_model):
        return False
    if session_id is not None and record.session_id != session_id:
        return False
    if status == "error":
        return (record.status is not None and record.status >= 400) or record.error is not None
    if status is not None and record.status != status:
        return False
    return True


def _is_locked(exc: sqlite3.Error) -> bool:
    """A lock held by another connection: wait and retry, the file is fine."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_MEMORY_BODIES = 200  # bodies kept when there is no usable database
_BODIES_BACKLOG = 2_000  # bodies waiting for the writer at most (up to 2 x body_max_kb each in memory)


class _Flush:
    """A marker in the write queue: set once everything before it is committed."""

    __slots__ = ("done", "prune")

    def __init__(self, prune: bool = False) -> None:
        self.done = threading.Event()
        self.prune = prune  # run retention before setting `done`


class HistoryStore:
    """Request records in one SQLite table, with a memory-only fallback.

    `path=None` keeps records in memory only (the newest 10,000). Retention:
    rows older than `retention_days` and beyond the `max_rows` newest are
    deleted by the writer thread, at most once a minute (and on `prune()`).
    In memory only the count limit applies.

    Thread safety: `add()` may be called from any thread (it is a deque
    append); reads may be called from any thread (each opens its own
    connection).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        retention_days: float = 30.0,
        max_rows: int = 200_000,
        flush_interval: float = 0.25,
        body_max_bytes: int = 256 * 1024,
        bodies_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.body_max_bytes = body_max_bytes
        self.bodies_max_bytes = bodies_max_bytes
        self.redact: Callable[[bytes], bytes] = lambda body: body  # set by the owner: blanks its secrets
        self._memory_bodies: collections.OrderedDict[str, RequestBodies] = collections.OrderedDict()
        self._bodies_total = -1  # bytes of bodies in the file, counted at the first commit of bodies
        # Bodies queued and bodies the writer is done with: each count has one writer thread (the loop,
        # the history writer), so neither loses an update; their difference is the backlog.
        self._bodies_queued = 0
        self._bodies_done = 0
        self.bodies_dropped = 0  # bodies not kept because the writer was that far behind
        self.flush_interval = flush_interval
        self.warning: str | None = None
        self._memory: collections.deque[RequestRecord] = collections.deque(maxlen=max(1, min(max_rows, MEMORY_LIMIT)))
        self._queue: collections.deque[RequestRecord | QueuedBodies | _Flush] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        self._prune_now = False
        self._last_prune = 0.0
        self._conn: sqlite3.Connection | None = None
        self._db_ok = False  # the file may be read and written
        self._thread: threading.Thread | None = None
        self._read_uri = ""
        if self.path is None:
            return
        try:
            self._read_uri = self.path.resolve().as_uri() + "?mode=rw"
            self._conn = self._open_writer(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._degrade(exc)
            return
        self._db_ok = True
        self._thread = threading.Thread(target=self._run, name="ccbridge-history", daemon=True)
        self._thread.start()

    # ---- writing ---------------------------------------------------------

    def add(self, record: RequestRecord) -> None:
        """Queue a record for writing; never blocks and never touches the database."""
        if self._thread is None:
            self._memory.append(record)
            return
        queue = self._queue
        queue.append(record)
        if len(queue) >= BATCH_SIZE:
            self._wake.set()

    def add_bodies(self, request_id: str, started_at: float, request: bytes, response: bytes) -> None:
        """Queue a request's bodies (cut to `body_max_bytes` here; redacted by the writer thread)."""
        limit = self.body_max_bytes
        item = QueuedBodies(started_at, RequestBodies(request_id, request[:limit], response[:limit],
                                                 len(request), len(response)))
        if self._thread is None:
            self._keep_in_memory(item.bodies)
            return
        if self.bodies_pending >= _BODIES_BACKLOG:
            # the writer is behind (a load spike on a busy machine): records go on, bodies wait no more
            self.bodies_dropped += 1
            return
        self._bodies_queued += 1
        self._queue.append(item)

    @property
    def bodies_pending(self) -> int:
        """Bodies queued and not yet written (bounded by _BODIES_BACKLOG)."""
        return self._bodies_queued - self._bodies_done

    def _keep_in_memory(self, bodies: RequestBodies) -> None:
        redacted = dataclasses.replace(bodies, request=self.redact(bodies.request),
                                       response=self.redact(bodies.response))
        self._memory_bodies[bodies.id] = redacted
        while len(self._memory_bodies) > _MEMORY_BODIES:
            self._memory_bodies.popitem(last=False)

    def bodies(self, request_id: str) -> RequestBodies | None:
        """The kept bodies of a request, or None (not kept, or gone with retention)."""
        if request_id in self._memory_bodies:
            return self._memory_bodies[request_id]
        for item in reversed(list(self._queue)):
            if isinstance(item, QueuedBodies) and item.bodies.id == request_id:
                b = item.bodies
                return dataclasses.replace(b, request=self.redact(b.request), response=self.redact(b.response))
        rows = self._read(BODIES_BY_ID, [request_id])
        return bodies_from_row(rows[0]) if rows else None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record added so far is committed (or kept in memory).

        Returns False if that did not happen within `timeout` seconds (for
        example while another process holds a lock on the file).
        """
        return self._mark(_Flush(), timeout)

    def prune(self, timeout: float = 5.0) -> bool:
        """Flush, then apply retention now instead of waiting for the next minute."""
        return self._mark(_Flush(prune=True), timeout)

    def _mark(self, marker: _Flush, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Commit what is queued and stop the writer; later adds stay in memory."""
        thread = self._thread
        if thread is None:
            return
        self._stop = True
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        # Anything the writer could not take (it timed out) is still readable here.
        self._drain_to_memory()
        if self._conn is not None and not thread.is_alive():
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_writer(self, path: Path) -> sqlite3.Connection:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The writer thread becomes the only user of this connection after __init__.
        conn = sqlite3.connect(path, timeout=_WRITE_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            ensure_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        """Writer thread: commit the queue every `flush_interval` seconds."""
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stop
            try:
                self._write_pending()
                self._maybe_prune()
            except Exception as exc:  # noqa: BLE001 - the writer must survive anything
                log.exception("history writer failed")
                self._degrade(exc)
            if stopping and not self._queue:
                return
            if stopping and not self._db_ok:
                self._drain_to_memory()
                return

    def _write_pending(self) -> None:
        queue = self._queue
        while queue:
            # Copy, commit, then pop: records stay visible to readers until committed.
            # (islice over a deque runs in C under the GIL: safe while add() appends.)
            items = list(itertools.islice(queue, _MAX_BATCH))
            records = [r for r in items if isinstance(r, RequestRecord)]
            bodies = [b for b in items if isinstance(b, QueuedBodies)]
            if self._db_ok and (records or bodies):
                try:
                    self._commit(records, bodies)
                except sqlite3.Error as exc:
                    if not _is_locked(exc):
                        self._degrade(exc)
                    elif len(queue) < _LOCKED_BACKLOG and not self._stop:
                        return  # another connection holds the lock: retry next round
                    else:
                        self._degrade(exc, locked=True)
            if not self._db_ok:
                self._memory.extend(records)
                for b in bodies:
                    self._keep_in_memory(b.bodies)
            if any(isinstance(i, _Flush) and i.prune for i in items):
                # Before the markers: prune() returns only once retention has run.
                self._prune_now = True
                self._maybe_prune()
            for _ in items:
                item = queue.popleft()
                if isinstance(item, _Flush):
                    item.done.set()
                elif isinstance(item, QueuedBodies):
                    self._bodies_done += 1

    def _commit(self, records: list[RequestRecord], bodies: Sequence[QueuedBodies] = ()) -> None:
        conn = self._conn
        assert conn is not None
        rows = [b.row(self.redact) for b in bodies]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if records:
                insert_rows(conn, f"requests ({COLUMNS})", [record_row(r) for r in records])
            if rows:
                insert_rows(conn, "bodies", rows)
                if self._bodies_total >= 0:
                    self._bodies_total += sum(len(r[2]) + len(r[3]) for r in rows)
                if self._bodies_total < 0 or self._bodies_total > self.bodies_max_bytes:
                    self._bodies_total = trim_bodies(conn, self.bodies_max_bytes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    def _maybe_prune(self) -> None:
        if self._db_ok and (self._prune_now or time.time() - self._last_prune >= _PRUNE_EVERY):
            self._prune_now = False
            self._last_prune = time.time()
            self._retention()

    def _retention(self) -> None:
        conn = self._conn
        assert conn is not None
        cutoff = time.time() - self.retention_days * 86400.0
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Both cuts walk the started_at indexes: no sort of the whole table and no list of
            # every id each minute.
            conn.execute("DELETE FROM requests WHERE started_at < ?", (cutoff,))
            conn.execute("DELETE FROM bodies WHERE started_at < ?", (cutoff,))
            beyond = conn.execute("SELECT started_at FROM requests ORDER BY started_at DESC LIMIT 1 OFFSET ?",
                                  (max(0, self.max_rows),)).fetchone()
            if beyond is not None:  # the newest max_rows stay: the first one past them and all older go
                conn.execute("DELETE FROM requests WHERE started_at <= ?", (beyond[0],))
                conn.execute("DELETE FROM bodies WHERE started_at <= ?", (beyond[0],))
            self._bodies_total = -1  # recounted at the next commit of bodies
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not _is_locked(exc):
                raise
            self._last_prune = 0.0  # locked: try again next round

    def _drain_to_memory(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Flush):
                item.done.set()
            elif isinstance(item, QueuedBodies):
                self._keep_in_memory(item.bodies)
            else:
                self._memory.append(item)

    def _degrade(self, exc: BaseException, *, locked: bool = False) -> None:
        """Stop using the file; keep records in memory and say why."""
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if locked:
            self.warning = (
                f"history database {self.path} stayed locked by another program ({reason}); "
                "keeping records in memory only — close that program or restart ccbridge"
            )
        else:
            self.warning = (
                f"history database {self.path} is unusable ({reason}); "
                "keeping records in memory only — fix or delete the file"
            )
        log.warning("%s", self.warning)
        self._db_ok = False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    # ---- reading ---------------------------------------------------------

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any] | None:
        """Run a query on a fresh connection; None when the file cannot be read."""
        if not self._db_ok or self.path is None:
            return None
        try:
            # mode=rw: a reader must never create an empty file where the real one went
            conn = sqlite3.connect(self._read_uri, timeout=_READ_TIMEOUT, uri=True)
        except sqlite3.Error as exc:
            log.warning("history read failed: %s", exc)
            return None
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            log.warning("history read failed: %s", exc)
            return None
        finally:
            conn.close()

    def _unsaved(self) -> list[RequestRecord]:
        """Records not (known to be) in the file: memory ones, then queued ones."""
        # list(deque) runs in C under the GIL: a safe snapshot while others append.
        queued = [r for r in list(self._queue) if isinstance(r, RequestRecord)]
        return list(self._memory) + queued

    def recent(
        self,
        limit: int = 100,
        *,
        model: str | None = None,
        status: int | str | None = None,
        session_id: str | None = None,
        since: float | None = None,
    ) -> list[RequestRecord]:
        """The newest records first, up to `limit`.

        `model` matches the requested or the routed model; `status` is an HTTP
        status, or "error" for status >= 400 or a recorded error; `since` keeps
        requests started at or after that unix time. Records added but not yet
        committed are included.
        """
        if limit <= 0:
            return []
        where: list[str] = []
        params: list[Any] = []
        if model is not None:
            where.append("(requested_model = ? OR routed_model = ?)")
            params += [model, model]
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        if since is not None:
            where.append("started_at >= ?")
            params.append(since)
        if status == "error":
            where.append("(status >= 400 OR error IS NOT NULL)")
        elif status is not None:
            where.append("status = ?")
            params.append(status)
        sql = SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC LIMIT ?"
        rows = self._read(sql, [*params, limit]) or []
        # Unsaved records are newer versions of any row with the same id.
        merged: dict[str, RequestRecord] = {}
        for row in rows:
            record = row_record(row)
            merged[record.id] = record
        for record in self._unsaved():
            if _matches(record, model, status, session_id, since):
                merged[record.id] = record
            else:
                merged.pop(record.id, None)
        out = sorted(merged.values(), key=lambda r: r.started_at, reverse=True)
        return out[:limit]

    def get(self, id: str) -> RequestRecord | None:  # noqa: A002 - mirrors the field name
        """The record with this id (the newest version of it), or None."""
        for record in reversed(self._unsaved()):
            if record.id == id:
                return record
        rows = self._read(SELECT + " WHERE id = ?", [id])
        return row_record(rows[0]) if rows else None

    def count(self) -> int:
        """How many distinct records the store holds (file, queue and memory)."""
        unsaved = {r.id for r in self._unsaved()}
        rows = self._read("SELECT COUNT(*) FROM requests")
        total = rows[0][0] if rows else 0
        if unsaved and rows is not None:
            ids = list(unsaved)
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                found = self._read(
                    f"SELECT COUNT(*) FROM requests WHERE id IN ({','.join('?' * len(part))})",
                    part,
                )
                total -= found[0][0] if found else 0
        return total + len(unsaved)
