"""Tests for backend/store/history.py."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time

import pytest

from backend.events import RequestRecord
from backend.store import HistoryStore
from backend.store.history import SCHEMA_VERSION


def _full(id: str = "req-full", started_at: float | None = None) -> RequestRecord:  # noqa: A002
    """A record with every field set to a non-default value."""
    return RequestRecord(
        id=id,
        started_at=started_at if started_at is not None else time.time(),
        method="POST",
        path="/v1/messages?beta=true",
        session_id="sess-1",
        client_version="claude-cli/2.1.197",
        requested_model="claude-opus-4-8[1m]",
        alias_rule="claude-*",
        routed_backend="local",
        routed_model="qwen3-coder",
        status=200,
        stream=True,
        input_tokens=1,
        output_tokens=12,
        cache_read_tokens=30,
        cache_creation_tokens=4,
        ttft_ms=123.5,
        duration_ms=2000.25,
        output_tps=41.5,
        backend_prompt_tps=13800.0,
        backend_gen_tps=400.0,
        backend_prompt_n=24,
        backend_cache_n=19185,
        backend_calls=3,
        stop_reason="end_turn",
        client_hung_up=True,
        error="boom \u00e9",
    )


_T0 = time.time() - 100_000  # recent enough for the default 30-day retention


def _rec(i: int, **kw) -> RequestRecord:
    base = {"started_at": _T0 + i, "method": "POST", "path": "/v1/messages"}
    base.update(kw)
    return RequestRecord(id=f"r{i}", **base)


@pytest.fixture
def store(tmp_path):
    s = HistoryStore(tmp_path / "h.sqlite3", flush_interval=0.02, retention_days=1e6)
    yield s
    s.close()


def test_every_field_round_trips(tmp_path, store):
    record = _full()
    assert {f.name for f in dataclasses.fields(record)} == set(record.to_dict())
    store.add(record)
    assert store.get(record.id) == record  # visible before the commit
    assert store.flush()
    assert store.warning is None
    assert store.get(record.id) == record
    assert store.recent() == [record]
    # types come back exactly (bools are stored as INTEGER)
    back = store.get(record.id)
    assert back.stream is True and back.client_hung_up is True
    with sqlite3.connect(tmp_path / "h.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        assert cols == {f.name for f in dataclasses.fields(RequestRecord)}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(requests)")}
        assert {"requests_started_at", "requests_session_id", "requests_requested_model"} <= indexes


def test_defaults_round_trip(store):
    record = _rec(1)
    store.add(record)
    store.flush()
    assert store.get("r1") == record
    assert store.get("nope") is None


def test_recent_filters_and_order(store):
    records = [
        _rec(1, requested_model="claude-a", routed_model="m1", status=200, session_id="s1"),
        _rec(2, requested_model="claude-b", routed_model="m2", status=500, session_id="s1"),
        _rec(3, requested_model="claude-a", routed_model="m2", status=200, error="hung", session_id="s2"),
        _rec(4, requested_model="claude-c", routed_model="m1", status=404, session_id="s2"),
        _rec(5, requested_model="claude-a", routed_model="m1", status=200, session_id="s1"),
    ]
    for r in records[:3]:
        store.add(r)
    store.flush()
    for r in records[3:]:
        store.add(r)  # two still pending: the merge must treat them like rows

    def ids(rs):
        return [r.id for r in rs]

    for flushed in (False, True):
        if flushed:
            store.flush()
        assert ids(store.recent()) == ["r5", "r4", "r3", "r2", "r1"]
        assert ids(store.recent(2)) == ["r5", "r4"]
        assert ids(store.recent(model="claude-a")) == ["r5", "r3", "r1"]
        assert ids(store.recent(model="m2")) == ["r3", "r2"]  # routed model matches too
        assert ids(store.recent(status=200)) == ["r5", "r3", "r1"]
        assert ids(store.recent(status="error")) == ["r4", "r3", "r2"]
        assert ids(store.recent(session_id="s2")) == ["r4", "r3"]
        assert ids(store.recent(model="claude-a", status="error", session_id="s2")) == ["r3"]
        assert store.recent(0) == []
        assert store.count() == 5


def test_re_adding_an_id_replaces_it(store):
    store.add(_rec(1, status=None))
    store.flush()
    store.add(_rec(1, status=200))
    assert store.get("r1").status == 200
    assert store.count() == 1
    assert [r.status for r in store.recent()] == [200]
    store.flush()
    assert store.count() == 1
    assert store.get("r1").status == 200


def test_flush_makes_records_visible_to_a_second_store(tmp_path):
    path = tmp_path / "shared.sqlite3"
    first = HistoryStore(path, flush_interval=10.0)  # only flush() commits here
    try:
        for i in range(20):
            first.add(_rec(i))
        second = HistoryStore(path)
        try:
            assert second.count() == 0
            assert first.flush()
            assert second.count() == 20
            assert [r.id for r in second.recent(3)] == ["r19", "r18", "r17"]
        finally:
            second.close()
    finally:
        first.close()


def test_close_commits_and_later_adds_stay_readable(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, flush_interval=10.0)
    store.add(_rec(1))
    store.close()
    store.add(_rec(2))  # after close: memory only, never raises
    assert [r.id for r in store.recent()] == ["r2", "r1"]
    reopened = HistoryStore(path)
    assert [r.id for r in reopened.recent()] == ["r1"]
    reopened.close()


def test_retention_by_max_rows(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", max_rows=10, flush_interval=0.02)
    try:
        now = time.time()
        for i in range(50):
            store.add(_rec(i, started_at=now - 1000 + i))
        assert store.prune()
        assert store.count() == 10
        assert [r.id for r in store.recent(100)] == [f"r{i}" for i in range(49, 39, -1)]
    finally:
        store.close()


def test_retention_takes_the_pruned_requests_bodies_and_keeps_the_others(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", max_rows=10, flush_interval=0.02, retention_days=1.0)
    try:
        now = time.time()
        for i in range(30):
            started = now - 3 * 86400 if i < 5 else now - 1000 + i  # five past the retention age
            store.add(_rec(i, started_at=started))
            store.add_bodies(f"r{i}", started, b'{"n": %d}' % i, b"answer")
        assert store.flush(timeout=30) and store.prune()
        assert [r.id for r in store.recent(100)] == [f"r{i}" for i in range(29, 19, -1)]
        kept = {f"r{i}" for i in range(30) if store.bodies(f"r{i}") is not None}
        assert kept == {f"r{i}" for i in range(20, 30)}
    finally:
        store.close()


def test_retention_by_age(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3", retention_days=1.0, flush_interval=0.02)
    try:
        now = time.time()
        store.add(_rec(1, started_at=now - 3 * 86400))
        store.add(_rec(2, started_at=now - 60))
        assert store.prune()
        assert [r.id for r in store.recent()] == ["r2"]
    finally:
        store.close()


def test_corrupt_file_degrades_to_memory(tmp_path):
    path = tmp_path / "h.sqlite3"
    path.write_bytes(os.urandom(4096) + b"this is not sqlite" * 100)
    store = HistoryStore(path)
    try:
        assert store.warning is not None
        assert str(path) in store.warning
        assert "unusable" in store.warning and "memory only" in store.warning
        for i in range(5):
            store.add(_rec(i))
        assert store.flush()
        assert [r.id for r in store.recent(2)] == ["r4", "r3"]
        assert store.get("r0") is not None
        assert store.count() == 5
    finally:
        store.close()


class _FailingDisk:
    """Stands in for the writer's connection once the disk has gone bad."""

    in_transaction = False

    def execute(self, *args):
        raise sqlite3.OperationalError("disk I/O error")

    executemany = execute

    def close(self):
        pass


def test_file_that_breaks_after_open_degrades(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, flush_interval=0.02)
    try:
        store.add(_rec(1))
        assert store.flush()
        # Swap (never close) the connection: closing it under the writer thread would crash.
        real, store._conn = store._conn, _FailingDisk()
        store.add(_rec(2))
        assert store.flush()
        real.close()
        assert store.warning is not None
        assert "disk I/O error" in store.warning and "memory only" in store.warning
        store.add(_rec(3))
        assert store.flush()
        assert [r.id for r in store.recent()] == ["r3", "r2"]
        assert store.count() == 2
    finally:
        store.close()


def test_parent_that_is_a_file_degrades(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    store = HistoryStore(blocker / "h.sqlite3")
    assert store.warning is not None
    store.add(_rec(1))
    assert store.flush()
    assert [r.id for r in store.recent()] == ["r1"]
    store.close()


def test_memory_only_store():
    store = HistoryStore(None)
    assert store.warning is None
    for i in range(12_000):
        store.add(_rec(i))
    assert store.flush()
    assert store.count() == 10_000
    assert store.recent(1)[0].id == "r11999"
    assert store.get("r0") is None
    store.close()


def test_add_never_touches_sqlite(tmp_path):
    """add() must work while another connection holds an exclusive lock on the file."""
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path, flush_interval=0.02)
    try:
        store.add(_rec(0))
        assert store.flush()
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(1, 2001):
                store.add(_rec(i))  # would raise "database is locked" if it wrote
            # the writer cannot commit while the lock is held
            assert store.flush(timeout=0.3) is False
            assert store.warning is None
            # pending records are still served
            assert store.recent(1)[0].id == "r2000"
            assert store.count() == 2001
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert store.flush(timeout=10)
        assert store.warning is None
        other = sqlite3.connect(path)
        try:
            assert other.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 2001
        finally:
            other.close()
    finally:
        store.close()


def test_migrates_an_older_schema(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, started_at REAL, method TEXT, path TEXT, status INTEGER)")
    conn.execute("INSERT INTO requests VALUES ('old', 5.0, 'POST', '/v1/messages', 200)")
    conn.commit()
    conn.close()
    store = HistoryStore(path, flush_interval=0.02, retention_days=1e9)
    try:
        assert store.warning is None
        old = store.get("old")
        assert old == RequestRecord(id="old", started_at=5.0, method="POST", path="/v1/messages", status=200)
        store.add(_full("new"))
        assert store.flush()
        assert store.get("new") == _full("new", started_at=store.get("new").started_at)
        assert [r.id for r in store.recent()] == ["new", "old"]
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_unbindable_value_does_not_fail_the_batch(store):
    store.add(_rec(1, error={"odd": "dict"}))  # type: ignore[arg-type]
    store.add(_rec(2))
    assert store.flush()
    assert store.warning is None
    assert store.count() == 2


# -- bodies ------------------------------------------------------------------------
from backend.store.redact import Redactor  # noqa: E402


def test_bodies_are_cut_redacted_kept_apart_and_bounded(tmp_path):
    s = HistoryStore(tmp_path / "h.sqlite3", flush_interval=0.02, retention_days=1e6, body_max_bytes=1000,
                     bodies_max_bytes=5000)
    s.redact = Redactor(["proxy-key-0123456789"])
    try:
        for i in range(10):
            r = _full()
            r = dataclasses.replace(r, id=f"b{i}", started_at=1000.0 + i)
            s.add(r)
            request = b'{"note": "my key is proxy-key-0123456789 and sk-ant-api03-abcdefghijklmnopqrstuvwxyz"}'
            s.add_bodies(r.id, r.started_at, request + b" " * 1200, b"event: message_stop\n\n")
        assert s.flush()
        newest = s.bodies("b9")
        # cut at 1000 bytes, then the two secrets blanked (shorter)
        assert newest is not None and newest.request_bytes == len(request) + 1200 and len(newest.request) < 1000
        assert newest.cut and b"proxy-key-0123456789" not in newest.request and b"sk-ant-api03" not in newest.request
        assert newest.request.count(b"[redacted]") == 2
        assert newest.response == b"event: message_stop\n\n" and not newest.response_bytes > len(newest.response)
        # 5000 bytes hold five of these (982 bytes each once redacted): the oldest went first
        kept = [i for i in range(10) if s.bodies(f"b{i}") is not None]
        assert kept == [5, 6, 7, 8, 9]
        assert s.get("b0") is not None  # the record itself stays
    finally:
        s.close()


def test_bodies_without_a_database_are_kept_in_memory():
    s = HistoryStore(None, body_max_bytes=10)
    s.add_bodies("m1", 1.0, b"0123456789abcdef", b"ok")
    kept = s.bodies("m1")
    assert kept is not None and kept.request == b"0123456789" and kept.request_bytes == 16 and kept.cut


@pytest.mark.parametrize("variable_limit", [None, 999], ids=["default", "sqlite-before-3.32"])
def test_a_batch_is_written_with_a_statement_per_chunk_not_per_row(tmp_path, variable_limit):
    """sqlite3 lets the GIL go at every statement step; executemany steps once per row, so with
    the proxy's loop busy the writer fell behind (its queue grew by 10,000 records per 25,000
    requests at 2,500 requests/s). A batch must take a few statements, whatever SQLite's bound."""
    store = HistoryStore(tmp_path / "h.sqlite3", flush_interval=60, retention_days=1e6)
    try:
        conn = store._conn
        assert conn is not None
        if variable_limit is not None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        records = [_rec(i, status=200, input_tokens=i) for i in range(1_000)]
        records[500] = _full("r500", started_at=_T0 + 500)  # a record with every field set
        for i, r in enumerate(records):
            store.add(r)
            store.add_bodies(r.id, r.started_at, b'{"n": %d}' % i, b"answer")
        assert store.flush(timeout=30)
        conn.set_trace_callback(None)
        inserts = [s for s in statements if s.startswith("INSERT")]
        commits = statements.count("COMMIT")
        # chunks are powers of two rows: 128, or what the bound allows (999 // 32 columns -> 16)
        per_chunk = 128 if variable_limit is None else 16
        # each commit splits its records into full chunks and a tail of at most log2(per_chunk) smaller ones
        tails = commits * (per_chunk.bit_length() - 1)
        assert 1_000 / per_chunk <= len([s for s in inserts if "INTO requests" in s]) <= 1_000 / per_chunk + tails
        bodies_chunk = 128  # 6 columns: 128 fit either bound
        assert 1_000 / bodies_chunk <= len([s for s in inserts if "INTO bodies" in s]) <= 1_000 / bodies_chunk + tails
        assert commits < 20
        assert store.count() == 1_000
        assert store.get("r500") == records[500]
        assert store.get("r999") == records[999]
        assert store.bodies("r999").request == b'{"n": 999}'
    finally:
        store.close()


def test_any_batch_size_uses_a_few_insert_texts(tmp_path, monkeypatch):
    """Each row count is its own SQL text and sqlite3 caches up to 128 prepared statements per
    connection, each holding memory for all its bound values: chunks of any length (1..199) let
    SQLite's heap grow to ~26 MB in serve, in steps. Every chunk is a power of two rows, so however
    many records a batch has, the writer's connection prepares at most 8 texts per table."""
    from backend.store import schema

    texts: set[tuple[str, int]] = set()
    build = schema._insert_rows_sql

    def recording(table_and_columns: str, width: int, rows: int) -> str:
        texts.add((table_and_columns, rows))
        return build(table_and_columns, width, rows)

    monkeypatch.setattr(schema, "_insert_rows_sql", recording)
    conn = sqlite3.connect(tmp_path / "h.sqlite3", isolation_level=None)
    schema.ensure_schema(conn)
    written = 0
    for size in range(1, 301):
        rows = [schema.record_row(_rec(written + i)) for i in range(size)]
        schema.insert_rows(conn, f"requests ({schema.COLUMNS})", rows)
        written += size
    assert sorted(rows for _, rows in texts) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM requests").fetchone() == (written, written)
    assert conn.execute("SELECT MIN(started_at), MAX(started_at) FROM requests").fetchone() == (_T0, _T0 + written - 1)
    conn.close()
