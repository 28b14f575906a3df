"""The control interface: the bridge in process and the HTTP client give the same answers.

The bridge runs for real against an instrumented Anthropic upstream
(`litellm.url` mode); `BridgeClient` talks to its API over loopback.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from backend.api.client import BridgeClient
from backend.config import ConfigError
from backend.control import BridgeControl, ControlUnavailable, ControlUnreachable, ServiceNotFound, StreamOpened
from backend.events import RequestFinished, RequestStarted
from tests.support.front import SECRET, messages_body, run_with_bridge
from tests.support.llama import free_port
from tests.support.upstreams import AnthropicUpstream


async def _until(check, timeout: float = 10.0, what: str = ""):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def test_bridge_and_http_client_give_the_same_answers(tmp_path):
    async def body(bridge, up, http):
        client = BridgeClient(bridge.proxy_url)
        assert isinstance(bridge, BridgeControl) and isinstance(client, BridgeControl)
        seen: list[object] = []
        client.subscribe(seen.append)
        await _until(lambda: client.connected, what="event stream")
        assert isinstance(seen[0], StreamOpened) and seen[0].in_flight == () and not seen[0].reconnected
        try:
            resp = await http.post("/v1/messages", json=messages_body(stream=True),
                                   headers={"x-claude-code-session-id": "sess-1"})
            assert resp.status_code == 200
            finished = await _until(lambda: [e for e in seen if isinstance(e, RequestFinished)], what="event")
            started = [e for e in seen if isinstance(e, RequestStarted)]
            assert started[0].id == finished[0].record.id and started[0].session_id == "sess-1"
            record = finished[0].record
            assert record.output_tokens == 4 and record.status == 200

            local, remote = await bridge.recent(5), await client.recent(5)
            assert local == remote == [record]
            assert await client.recent(5, session_id="other") == []
            assert await client.recent(5, since=record.started_at + 1) == []
            assert await client.record(record.id) == record
            assert await client.record("no-such-id") is None
            assert await client.in_flight() == [] == await bridge.in_flight()

            local_status, remote_status = await bridge.status(), await client.status()
            assert remote_status["metrics"]["requests_total"] == local_status["metrics"]["requests_total"] == 1
            assert remote_status["metrics"]["ttft_p50_ms"] == record.ttft_ms
            assert remote_status["services"][0]["in_flight"] == 0

            assert await client.aliases() == await bridge.aliases()
            saved = await client.save_aliases([("claude-x-*", "local/x"), ("*", "local")])
            assert saved == [("claude-x-*", "local/x"), ("*", "local")] == await bridge.aliases()
            assert "claude-x-*" in bridge.config.source.read_text()
            with pytest.raises(ConfigError, match="nowhere"):
                await client.save_aliases([("*", "nowhere")])
            assert await bridge.aliases() == saved  # nothing written on a refused save

            with pytest.raises(ServiceNotFound, match="LiteLLM is not managed"):
                await client.restart_service("litellm")
            with pytest.raises(ServiceNotFound, match="no service named 'nope'"):
                await client.stop_service("nope")
            assert await client.log_tail("proxy") == await bridge.log_tail("proxy")
        finally:
            await client.aclose()

    run_with_bridge(tmp_path, body)


def test_a_stream_opened_during_a_request_lists_it_in_flight(tmp_path):
    up = AnthropicUpstream(hold=1.5)

    async def body(bridge, up, http):
        request = asyncio.create_task(http.post("/v1/messages", json=messages_body()))
        await _until(lambda: bridge.metrics.snapshot().in_flight == 1, what="in flight")
        client = BridgeClient(bridge.proxy_url)
        seen: list[object] = []
        client.subscribe(seen.append)
        try:
            opened = await _until(lambda: [e for e in seen if isinstance(e, StreamOpened)], what="hello")
            assert [e.requested_model for e in opened[0].in_flight] == ["claude-opus-4-8"]
            assert [e.id for e in await client.in_flight()] == [opened[0].in_flight[0].id]
            assert (await request).status_code == 200
            await _until(lambda: any(isinstance(e, RequestFinished) for e in seen), what="finished")
        finally:
            await client.aclose()

    run_with_bridge(tmp_path, body, upstream=up)


def test_the_api_and_metrics_need_the_key_and_the_client_says_so(tmp_path):
    async def body(bridge, up, http):
        without = BridgeClient(bridge.proxy_url)
        with_key = BridgeClient(bridge.proxy_url, SECRET)
        try:
            with pytest.raises(ControlUnavailable, match="needs its api_key") as refused:
                await without.status()
            assert SECRET not in str(refused.value)
            status = await with_key.status()
            assert status["api_key_set"] is True and SECRET not in str(status)
            assert (await http.get("/metrics")).status_code == 401
            metrics = await http.get("/metrics", headers={"authorization": f"Bearer {SECRET}"})
            assert metrics.status_code == 200 and "ccbridge_requests_total" in metrics.text
            assert SECRET not in metrics.text
        finally:
            await without.aclose()
            await with_key.aclose()

    run_with_bridge(tmp_path, body, proxy={"api_key": SECRET},
                    litellm={"api_key": "upstream-key"})


def test_nothing_listening_is_unreachable_with_what_to_do():
    async def main() -> None:
        client = BridgeClient(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(ControlUnreachable, match="Is `ccbridge serve` running"):
                await client.status()
        finally:
            await client.aclose()

    asyncio.run(main())


def test_admin_reads_and_alias_saves_leave_the_event_loop_free(tmp_path, monkeypatch):
    """A slow disk (SQLite read, fsynced config write) must not hold up proxied requests."""
    from backend.config.writer import ConfigDocument

    # The slow disk holds each call until the test lets it go: a proxied request must be answered meanwhile.
    entered, release = threading.Event(), threading.Event()

    def held(call):  # type: ignore[no-untyped-def]
        def slow(*a, **kw):  # type: ignore[no-untyped-def]
            entered.set()
            assert release.wait(30), "never released"
            return call(*a, **kw)
        return slow

    monkeypatch.setattr(ConfigDocument, "save", held(ConfigDocument.save))

    async def body(bridge, up, http):
        bridge.history.recent = held(bridge.history.recent)
        async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=10, trust_env=False) as other:
            for slow in (http.get("/ccbridge/api/requests"),
                         http.put("/ccbridge/api/aliases", json={"aliases": [["*", "local"]]})):
                entered.clear()
                release.clear()
                task = asyncio.create_task(slow)
                assert await asyncio.to_thread(entered.wait, 10)  # the slow call is under way, on the disk
                assert (await other.post("/v1/messages", json=messages_body())).status_code == 200
                assert not task.done()  # answered while the slow call was still held
                release.set()
                assert (await task).status_code == 200

    run_with_bridge(tmp_path, body)


def test_serve_prints_the_same_numbers_the_api_shows(tmp_path):
    from backend.cli import _summaries

    class Lines(list):
        def write(self, line: str) -> None:
            self.append(line)

    class Watched:
        """The bridge as `_summaries` sees it, counting its ticks (it reads `metrics` once a tick)."""

        def __init__(self, bridge: object) -> None:
            self.bridge, self.reads = bridge, 0

        @property
        def metrics(self):  # type: ignore[no-untyped-def]
            self.reads += 1
            return self.bridge.metrics  # type: ignore[attr-defined]

    async def ticks(watched: Watched, n: int) -> None:
        start = watched.reads
        deadline = time.monotonic() + 10
        while watched.reads < start + n:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)

    async def body(bridge, up, http):
        lines = Lines()
        watched = Watched(bridge)
        task = asyncio.create_task(_summaries(watched, lines, every=0.05))
        try:
            await ticks(watched, 3)  # it looked at least twice
            assert not lines  # quiet while nothing happens
            assert (await http.post("/v1/messages", json=messages_body(stream=True))).status_code == 200
            deadline = time.monotonic() + 10
            while not lines:
                assert time.monotonic() < deadline, "no summary line after a request"
                await asyncio.sleep(0.01)
            await ticks(watched, 3)  # later looks, with no new request: no second line
        finally:
            task.cancel()
        out = "\n".join(lines)
        metrics = (await bridge.status())["metrics"]
        assert out.count("last minute:") == 1
        assert f"last minute: {metrics['requests_per_min']} requests" in out
        assert f"TTFT p50 {metrics['ttft_p50_ms'] / 1000:.2f}s" in out and "1 since start, 0 failed" in out

    run_with_bridge(tmp_path, body)
