"""The history's SQLite tables, and how a `RequestRecord` becomes a row and back.

`requests` has one column per `RequestRecord` field, typed from the field's
hint, so a new field is a new column (added to an older file on open); `bodies`
holds each request's kept bodies. Nothing here holds state: `HistoryStore`
owns the connections and the write queue.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import sqlite3
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from backend.events import RequestRecord

SCHEMA_VERSION = 1

_FIELDS = dataclasses.fields(RequestRecord)
_NAMES = tuple(f.name for f in _FIELDS)
_INDEXED = ("started_at", "session_id", "requested_model")


def _sql_type(hint: Any) -> str:
    """SQLite column type for a field's type hint (bools are INTEGER)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = args[0]
    if base is bool or base is int:
        return "INTEGER"
    if base is float:
        return "REAL"
    return "TEXT"


_HINTS = typing.get_type_hints(RequestRecord)
_TYPES = {name: _sql_type(_HINTS[name]) for name in _NAMES}
_BOOLS = frozenset(name for name in _NAMES if _HINTS[name] is bool)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


_DEFAULTS = {f.name: _default(f) for f in _FIELDS}
# Fields without a default must never be None in a record read back.
_REQUIRED_FALLBACK = {"str": "", "float": 0.0, "int": 0}


def _column_sql(name: str) -> str:
    decl = f'"{name}" {_TYPES[name]}'
    default = _DEFAULTS[name]
    if name == "id":
        return decl + " PRIMARY KEY"
    # No NOT NULL: a record with an odd None must never fail a whole batch.
    if isinstance(default, bool):
        return f"{decl} DEFAULT {int(default)}"
    if isinstance(default, int | float):
        return f"{decl} DEFAULT {default}"
    return decl


COLUMNS = ", ".join(f'"{n}"' for n in _NAMES)
SELECT = f"SELECT {COLUMNS} FROM requests"
_BODIES_SQL = ("CREATE TABLE IF NOT EXISTS bodies (id TEXT PRIMARY KEY, started_at REAL, request BLOB, "
               "response BLOB, request_bytes INTEGER, response_bytes INTEGER)")


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or add the columns an older version lacked."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = ", ".join(_column_sql(n) for n in _NAMES)
        conn.execute(f"CREATE TABLE IF NOT EXISTS requests ({columns})")
        have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        for name in _NAMES:
            if name not in have:
                conn.execute(f"ALTER TABLE requests ADD COLUMN {_column_sql(name)}")
        for name in _INDEXED:
            conn.execute(f'CREATE INDEX IF NOT EXISTS "requests_{name}" ON requests ("{name}")')
        conn.execute(_BODIES_SQL)
        conn.execute('CREATE INDEX IF NOT EXISTS "bodies_started_at" ON bodies ("started_at")')
        # A newer ccbridge's schema keeps its number: we only added what we need.
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# Rows per INSERT statement. sqlite3 lets the GIL go around every statement step, and
# executemany steps once per row: with the proxy's loop busy, each step then waited for the
# GIL and the writer fell behind at ~1,500 records/s (measured: its queue grew by 10,000
# per 25,000 requests at 2,500 requests/s). One multi-row statement steps once per chunk.
# Every chunk is a power of two rows. Each row count is its own SQL text, and sqlite3 keeps up
# to 128 prepared statements per connection (a 200-row one holds SQLite memory for every bound
# value): with any tail length (1..199) a batch of whatever size the writer found queued left one
# more cached statement, SQLite's heap reached ~26 MB, and serve's RSS grew in steps whenever the
# writer fell behind (new batch sizes). Powers of two bound the texts to 8 per table. Measured:
# SQLite's memory over 120 random batches 26 -> 3 MB; serve after a 25k warm-up + 100k requests
# +4.6 % / +22 % -> +0.5 % / +0.7 % (level 69-74 -> 58-59 MB).
_ROWS_PER_INSERT = 128  # at most (a power of two); fewer where SQLite binds fewer variables (999 before 3.32)


@functools.lru_cache(maxsize=32)
def _insert_rows_sql(table_and_columns: str, width: int, rows: int) -> str:
    one = "(" + ", ".join("?" * width) + ")"
    return f"INSERT OR REPLACE INTO {table_and_columns} VALUES " + ", ".join([one] * rows)


def insert_rows(conn: sqlite3.Connection, table_and_columns: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows of one width, a chunk per statement, each chunk a power of two rows (see _ROWS_PER_INSERT)."""
    fit = max(1, min(_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(rows[0])))
    per = 1 << (fit.bit_length() - 1)  # the largest power of two that fits
    start, total = 0, len(rows)
    while start < total:
        size = min(per, 1 << ((total - start).bit_length() - 1))
        chunk = rows[start:start + size]
        sql = _insert_rows_sql(table_and_columns, len(chunk[0]), size)
        conn.execute(sql, list(itertools.chain.from_iterable(chunk)))
        start += size


_BINDABLE = (str, int, float, type(None))
# The writer thread turns every record into a row while holding the GIL, and the proxy's loop waits for
# the GIL meanwhile: both steps run in C (one attrgetter call; one set check of the values' exact types).
_row_values = operator.attrgetter(*_NAMES)
_PLAIN_TYPES = frozenset({*_BINDABLE, bool})


def record_row(record: RequestRecord) -> tuple[Any, ...]:
    """A record as a `requests` row, in `COLUMNS` order."""
    values: tuple[Any, ...] = _row_values(record)
    if _PLAIN_TYPES.issuperset(map(type, values)):
        return values
    # A value sqlite3 cannot bind would fail the whole batch: store its text.
    return tuple(v if isinstance(v, _BINDABLE) else str(v) for v in values)


def row_record(row: Iterable[Any]) -> RequestRecord:
    """A `requests` row read back (by `SELECT`) as a record; missing values take the field's default."""
    values: dict[str, Any] = {}
    for field, value in zip(_FIELDS, row, strict=True):
        name = field.name
        if value is None:
            value = _DEFAULTS[name]
            if value is None and field.default is dataclasses.MISSING:
                value = _REQUIRED_FALLBACK.get(_HINTS[name].__name__, "")
        elif name in _BOOLS:
            value = bool(value)
        values[name] = value
    return RequestRecord(**values)
