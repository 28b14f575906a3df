"""A failing event listener is logged (rate-limited) and counted, and never costs a history row."""

from __future__ import annotations

import asyncio
import logging

import backend.events as events_module
from backend.events import EventBus, LogLine
from tests.support.front import messages_body, run_with_bridge


def test_a_failing_listener_is_counted_logged_once_per_interval_and_the_others_still_hear(caplog, monkeypatch):
    bus = EventBus()
    heard: list[object] = []

    def broken(event: object) -> None:
        raise ValueError("fold broke")

    bus.subscribe(broken)
    bus.subscribe(heard.append)
    caplog.set_level(logging.ERROR, logger="backend.events")
    for i in range(500):
        bus.publish(LogLine("proxy", f"line {i}", 0.0))
    assert len(heard) == 500 and bus.listener_errors == 500
    logged = [r for r in caplog.records if r.name == "backend.events"]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # 500 failures, one line
    assert "broken failed on LogLine: ValueError: fold broke" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # with its traceback
    monkeypatch.setattr(events_module, "LISTENER_ERROR_EVERY", 0.0)
    bus.publish(LogLine("proxy", "again", 0.0))
    logged = [r for r in caplog.records if r.name == "backend.events"]
    assert len(logged) == 2 and "499 more from it not logged" in logged[1].getMessage()
    assert bus.listener_errors == 501


def test_history_keeps_a_record_when_the_metrics_fold_raises(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="backend.events")

    async def body(bridge, up, client):
        def broken(event: object) -> None:
            raise RuntimeError("metrics fold broke")

        bridge.metrics.on_event = broken  # every event now fails in the bridge's fold
        resp = await client.post("/v1/messages", json=messages_body())
        assert resp.status_code == 200, resp.text
        await asyncio.to_thread(bridge.history.flush)
        assert [r.status for r in bridge.history.recent(10)] == [200]  # the row was written anyway
        status = (await client.get("/ccbridge/api/status")).json()
        proxy = next(s for s in status["services"] if s["name"] == "proxy")
        assert proxy["listener_errors"] >= 2  # RequestStarted and RequestFinished at least
        metrics = (await client.get("/metrics")).text
        line = next(x for x in metrics.splitlines() if x.startswith("ccbridge_listener_errors_total "))
        assert float(line.split()[1]) >= 2

    run_with_bridge(tmp_path, body)
    assert any("metrics fold broke" in r.getMessage() for r in caplog.records if r.name == "backend.events")
