"""`ccbridge export`: the history as JSON lines or CSV, filtered like the API."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import pytest

from backend.events import RequestRecord
from backend.export import COLUMNS, parse_since, write_records
from backend.store import HistoryStore
from tests.support.config import config_text
from tests.support.serve import REPO

NOW = time.time()


def _records() -> list[RequestRecord]:
    base = {"method": "POST", "path": "/v1/messages"}
    return [
        RequestRecord(id="old", started_at=NOW - 3 * 86400, requested_model="claude-opus-4-8", status=200,
                      session_id="s1", output_tokens=5, **base),
        RequestRecord(id="ok", started_at=NOW - 600, requested_model="claude-opus-4-8", status=200, session_id="s1",
                      input_tokens=15317, output_tokens=212, ttft_ms=640.0, stream=True, **base),
        RequestRecord(id="bad", started_at=NOW - 300, requested_model="gpt-4o", status=404, session_id="s2",
                      error='no alias matches model "gpt-4o", try: aliases', **base),
        RequestRecord(id="cut", started_at=NOW - 60, requested_model="claude-haiku-4-5", status=200, session_id="s2",
                      client_hung_up=True, **base),
    ]


def test_jsonl_and_csv_carry_every_field():
    records = _records()
    out = io.StringIO()
    assert write_records(records, "jsonl", out) == 4
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [RequestRecord(**line) for line in lines] == records
    out = io.StringIO()
    write_records(records, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == COLUMNS
    assert rows[2]["error"] == 'no alias matches model "gpt-4o", try: aliases'  # quoting survives
    assert rows[1]["ttft_ms"] == "640.0" and rows[1]["stream"] == "True" and rows[0]["ttft_ms"] == ""
    with pytest.raises(ValueError, match="unknown export format 'xml'"):
        write_records(records, "xml", io.StringIO())


def test_since_takes_durations_dates_and_unix_times():
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_since("1.5d", now=200_000.0) == 200_000.0 - 1.5 * 86400
    assert parse_since("1795000000") == 1795000000.0
    assert parse_since("2026-11-26T14:00") == parse_since("2026-11-26 14:00:00")
    with pytest.raises(ValueError, match="use a duration"):
        parse_since("yesterday")


def _config_with_history(tmp_path) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    db = tmp_path / "history.sqlite3"
    with HistoryStore(db) as store:
        for r in _records():
            store.add(r)
        store.flush()
    config = tmp_path / "ccbridge.yaml"
    config.write_text(config_text(history={"path": db}))
    return str(config), str(db)


def _export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backend", "export", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_the_command_filters_and_writes_oldest_first(tmp_path):
    config, _ = _config_with_history(tmp_path)
    everything = _export("--config", config)
    assert everything.returncode == 0, everything.stderr
    assert [json.loads(x)["id"] for x in everything.stdout.splitlines()] == ["old", "ok", "bad", "cut"]

    recent = _export("--config", config, "--since", "1h", "--session", "s2")
    assert [json.loads(x)["id"] for x in recent.stdout.splitlines()] == ["bad", "cut"]
    errors = _export("--config", config, "--status", "error")
    assert [json.loads(x)["id"] for x in errors.stdout.splitlines()] == ["bad"]
    model = _export("--config", config, "--model", "claude-opus-4-8", "--status", "200")
    assert [json.loads(x)["id"] for x in model.stdout.splitlines()] == ["old", "ok"]

    target = tmp_path / "out.csv"
    written = _export("--config", config, "--since", "2h", "-o", str(target))
    assert written.returncode == 0 and "exported 3 requests" in written.stderr
    assert [row["id"] for row in csv.DictReader(target.open())] == ["ok", "bad", "cut"]
    forced = _export("--config", config, "--format", "jsonl", "-o", str(tmp_path / "x.csv"))
    assert json.loads((tmp_path / "x.csv").read_text().splitlines()[0])["id"] == "old" and forced.returncode == 0


def test_the_command_says_what_is_wrong(tmp_path):
    config, db = _config_with_history(tmp_path)
    bad = _export("--config", config, "--since", "last week")
    assert bad.returncode == 2 and "use a duration" in bad.stderr
    bad = _export("--config", config, "--status", "oops")
    assert bad.returncode == 2 and "--status takes an HTTP status" in bad.stderr
    missing = tmp_path / "empty.yaml"
    missing.write_text(open(config).read().replace(db, str(tmp_path / "none.sqlite3")))
    none = _export("--config", str(missing))
    assert none.returncode == 2 and "no request history" in none.stderr
