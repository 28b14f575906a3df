"""Request records as JSON lines or CSV: `ccbridge export` and the panel's `e` on the requests screen.

One column per `RequestRecord` field, in the record's order, so a file
exported today and one exported after a field was added line up by name.
Records hold counts and timings only: no bodies, no headers, no keys.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

from backend.events import RequestRecord

FORMATS = ("jsonl", "csv")
COLUMNS = tuple(f.name for f in dataclasses.fields(RequestRecord))
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def write_records(records: Iterable[RequestRecord], fmt: str, out: TextIO) -> int:
    """Write records to `out` in `fmt` ("jsonl" or "csv"); return how many."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (use {' or '.join(FORMATS)})")
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow(["" if v is None else v for v in dataclasses.astuple(r)])
            count += 1
        return count
    for r in records:
        out.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def parse_since(text: str, now: float | None = None) -> float:
    """`2h`, `30m`, `7d` (that long ago), a unix time, or an ISO date/time (local time) -> unix seconds."""
    value = text.strip()
    now = time.time() if now is None else now
    match = _RELATIVE.match(value.lower())
    if match:
        return now - float(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: use a duration (30m, 2h, 7d), a date (2026-11-26), "
                         "a date and time (2026-11-26T14:00) or a unix time") from None
