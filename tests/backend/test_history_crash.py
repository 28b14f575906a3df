"""A process killed mid-write loses no committed record, and the file stays usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from backend.store import HistoryStore
from tests.support.serve import REPO

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from backend.events import RequestRecord
    from backend.store import HistoryStore
    store = HistoryStore(Path(sys.argv[1]), flush_interval=0.01)
    i = 0
    while True:
        for _ in range(200):
            store.add(RequestRecord(id=f"r{i}", started_at=time.time(), method="POST", path="/v1/messages",
                                    error="x" * 500))
            i += 1
        if store.flush():
            print(i, flush=True)  # everything up to i is committed
""")


def test_kill_9_mid_write_loses_no_committed_record(tmp_path):
    db = tmp_path / "history.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    committed = 0
    deadline = time.monotonic() + 20
    while committed < 3000 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)  # very likely in the middle of the next batch
    proc.wait()
    assert committed >= 3000
    store = HistoryStore(db)
    try:
        assert store.warning is None
        assert store.count() >= committed
        ids = {r.id for r in store.recent(limit=committed + 1000)}
        assert all(f"r{i}" in ids for i in range(committed))
    finally:
        store.close()
