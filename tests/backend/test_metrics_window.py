"""The metrics fold's per-second window stays bounded, however records arrive (backend/metrics/fold.py)."""

from __future__ import annotations

from backend.events import RequestFinished, RequestRecord
from backend.metrics.fold import RequestMetrics


def _finished(i: int, started_at: float, out: int = 10) -> RequestFinished:
    return RequestFinished(RequestRecord(id=f"r{i}", started_at=started_at, method="POST", path="/v1/messages",
                                         status=200, output_tokens=out, duration_ms=100.0))


def test_the_window_keeps_only_its_seconds_even_for_a_late_old_record():
    now = [1_000_000.0]
    fold = RequestMetrics(clock=lambda: now[0], window_s=60, bucket_s=5)
    for i in range(600):  # ten minutes of one request a second
        now[0] += 1
        fold.on_event(_finished(i, now[0] - 0.1))
    assert len(fold._seconds) <= 60 + 5 + 1
    assert fold.snapshot().output_tps_series[-1] == 10.0  # one request of 10 output tokens a second
    # a record that ended long ago arrives late (a slow stream's record): it is trimmed too
    fold.on_event(_finished(999, now[0] - 3600))
    now[0] += 1
    fold.on_event(_finished(1000, now[0] - 0.1))
    assert min(fold._seconds) >= now[0] - 60 - 5 - 1
    assert len(fold._seconds) <= 60 + 5 + 1
