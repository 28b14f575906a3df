"""`BackendMonitor` against a server replaying real llama-server answers, and inside the Bridge."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from backend.bridge import Bridge
from backend.config import load_config
from backend.config.model import BackendConfig
from backend.events import RequestFinished, RequestRecord
from backend.monitor.gpu import GpuProbe
from backend.monitor.machine_status import GpuStatus
from backend.monitor.sampler import BackendMonitor, sample_once
from tests.support.config import config_text
from tests.support.llama import free_port
from tests.support.replay_llama import ReplayLlama
from tests.support.upstreams import AnthropicUpstream

FIXTURES = Path(__file__).parent / "fixtures" / "monitor"


class NoGpu(GpuProbe):
    """The no-GPU state without touching the machine."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(nvml=None, run=lambda cmd: None)
        self.delay = delay

    def read(self, backend_pids: Any) -> GpuStatus:
        time.sleep(self.delay)  # blocking on purpose: it must stay off the event loop
        return super().read(backend_pids)


def test_a_sample_reads_every_field_the_server_has():
    async def main() -> None:
        llama = ReplayLlama()
        url = await llama.start()
        backends = {"local": BackendConfig("local", f"{url}/v1", api_key="k-secret")}
        monitor = BackendMonitor(lambda: backends, gpu=NoGpu())
        try:
            snap = await monitor.sample()
            await asyncio.sleep(0.05)
            snap = await monitor.sample()
        finally:
            await monitor.stop()
            await llama.stop()
        b = snap.backend("local")
        assert b is not None and b.health == "ok" and b.health_since is not None
        assert b.model == "/tmp/mon/tiny.gguf" and b.build == "b1-0c1e570"
        assert (b.n_ctx_slot, b.n_ctx_train, b.total_slots) == (32768, 131072, 2)
        assert b.n_params == 117696 and b.size_bytes == 470784
        assert b.busy_slots == 0 and len(b.slots) == 2
        assert b.metrics is not None and b.metrics.prompt_tokens_total == 45052
        assert b.gen_tps == 0.0 and b.prompt_tps == 0.0  # idle
        assert b.endpoints == {"health": "ok", "slots": "ok", "metrics": "ok", "props": "ok", "models": "ok"}
        assert b.process is not None and not b.process.is_llama_server  # the test process itself listens
        assert set(llama.auth) == {"Bearer k-secret"}
        # /props and /v1/models are asked once, not every round
        assert llama.hits["/props"] == 1 and llama.hits["/slots"] == 2
        assert snap.gpu.no_telemetry and snap.host.cpu_count
        data = json.loads(json.dumps(snap.to_dict()))
        assert data["backends"][0]["metrics"]["prompt_tokens_cached_total"] == 0
        assert data["gpu"]["no_telemetry"] is True
        keys = {s["key"] for s in data["history"]}
        assert {"backend:local:gen_tps", "backend:local:busy_slots", "host:cpu_percent"} <= keys
        assert len(snap.series("backend:local:gen_tps").t) == 2

    asyncio.run(main())


def test_without_metrics_and_slots_fields_degrade_and_advice_says_why():
    async def main() -> None:
        llama = ReplayLlama(slots=False, metrics=False)
        url = await llama.start()
        try:
            snap = await sample_once({"local": BackendConfig("local", f"{url}/v1")}, gpu=NoGpu(), settle=0)
        finally:
            await llama.stop()
        b = snap.backends[0]
        assert b.endpoints["slots"] == "disabled" and b.endpoints["metrics"] == "disabled"
        assert b.metrics is None and b.slots == () and b.busy_slots is None
        assert b.gen_tps is None and b.prompt_tps is None
        assert b.n_ctx_slot == 8192 and b.total_slots == 1 and b.n_params == 117696  # /props, /v1/models
        codes = [a.code for a in snap.advice]
        assert codes == ["ctx_too_small", "no_metrics", "no_slots"]

    asyncio.run(main())


def test_health_follows_the_server_and_since_moves_with_it():
    async def main() -> None:
        llama = ReplayLlama(health_status=503)
        url = await llama.start()
        backends = {"local": BackendConfig("local", f"{url}/v1")}
        monitor = BackendMonitor(lambda: backends, gpu=NoGpu())
        try:
            first = (await monitor.sample()).backends[0]
            assert first.health == "loading" and first.health_detail == "Loading model"
            llama.health_status = 200
            await asyncio.sleep(0.02)
            ok = (await monitor.sample()).backends[0]
            assert ok.health == "ok" and ok.health_since is not None and ok.health_since > first.health_since
            await llama.stop()
            down = (await monitor.sample()).backends[0]
            assert down.health == "unreachable" and down.endpoints["metrics"] == "unreachable"
            assert down.model == "/tmp/mon/tiny.gguf"  # last known facts stay
            assert any(a.code == "unreachable" for a in monitor.snapshot().advice)
        finally:
            await monitor.stop()
            await llama.stop()

    asyncio.run(main())


def test_blocking_probes_never_block_the_event_loop():
    async def main() -> None:
        llama = ReplayLlama()
        url = await llama.start()
        backends = {"local": BackendConfig("local", f"{url}/v1")}
        monitor = BackendMonitor(lambda: backends, gpu=NoGpu(delay=0.6), interval=0.1)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        try:
            await monitor.start()
            await asyncio.sleep(1.5)
            snap = monitor.snapshot()
            assert snap.sampling and snap.taken_at is not None
        finally:
            await monitor.stop()
            tick.cancel()
            await llama.stop()
        assert max(gaps) < 0.3, max(gaps)
        assert monitor.snapshot().sampling is False

    asyncio.run(main())


def test_records_reach_the_cache_report_at_once():
    async def main() -> None:
        monitor = BackendMonitor(lambda: {}, gpu=NoGpu())
        try:
            await monitor.sample()
            for i, (prompt_n, cache_n) in enumerate(((15000, 0), (300, 15100))):
                monitor.add_record(RequestRecord(
                    id=f"r{i}", started_at=1000.0 + i, method="POST", path="/v1/messages", session_id="s1",
                    routed_backend="local", backend_prompt_n=prompt_n, backend_cache_n=cache_n))
            monitor.add_record(RequestRecord(
                id="bad", started_at=time.time(), method="POST", path="/v1/messages", routed_backend="local",
                status=400, error="prompt is too long: 40000 tokens > 32768 maximum"))
            snap = monitor.snapshot()
        finally:
            await monitor.stop()
        (row,) = snap.cache.by_session
        assert row.last_share is not None and row.last_share > 0.95
        assert [a.code for a in snap.advice] == ["request_context_exceeded"]

    asyncio.run(main())


def test_a_broken_round_keeps_the_previous_data():
    async def main() -> None:
        calls = {"n": 0}

        def backends():
            calls["n"] += 1
            if calls["n"] > 1:
                raise RuntimeError("config vanished")
            return {}

        monitor = BackendMonitor(backends, gpu=NoGpu())
        try:
            good = await monitor.sample()
            bad = await monitor.sample()
        finally:
            await monitor.stop()
        assert good.last_error is None
        assert bad.last_error and "config vanished" in bad.last_error and bad.taken_at == good.taken_at

    asyncio.run(main())


def test_bridge_status_carries_the_monitor(tmp_path):
    async def main() -> None:
        llama = ReplayLlama()
        llama_url = await llama.start()
        upstream = AnthropicUpstream()
        up_url = await upstream.start()
        path = tmp_path / "ccbridge.yaml"
        path.write_text(config_text(proxy={"host": "127.0.0.1", "port": free_port()}, litellm={"url": up_url},
                                    backends={"local": {"api_base": f"{llama_url}/v1", "model": "auto"}}))
        config = load_config(path)
        bridge = Bridge(config, run_dir=tmp_path / "run")
        await bridge.start()
        try:
            for _ in range(100):
                if bridge.monitor.snapshot().taken_at is not None:
                    break
                await asyncio.sleep(0.05)
            bridge.bus.publish(RequestFinished(RequestRecord(
                id="r1", started_at=time.time(), method="POST", path="/v1/messages", session_id="sess",
                routed_backend="local", backend_prompt_n=10, backend_cache_n=90)))
            async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=10, trust_env=False) as client:
                status = (await client.get("/ccbridge/api/status")).json()
        finally:
            await bridge.stop()
            await upstream.stop()
            await llama.stop()
        monitor = status["monitor"]
        assert monitor["backends"][0]["model"] == "/tmp/mon/tiny.gguf"
        assert monitor["backends"][0]["health"] == "ok"
        assert monitor["cache"]["by_session"][0]["share"] == 0.9
        assert monitor["gpu"]["no_telemetry"] is True

    asyncio.run(main())


def test_seeded_history_survives_a_restart():
    async def main() -> None:
        monitor = BackendMonitor(lambda: {}, gpu=NoGpu())
        monitor.seed([RequestRecord(id=f"r{i}", started_at=2000.0 - i, method="POST", path="/v1/messages",
                                    session_id="s", routed_backend="local", backend_prompt_n=p, backend_cache_n=c)
                      for i, (p, c) in enumerate(((100, 9900), (10000, 0)))])  # newest first, as recent() gives
        try:
            snap = monitor.snapshot()
        finally:
            await monitor.stop()
        (row,) = snap.cache.by_session
        assert row.requests == 2 and row.later_share == 0.99

    asyncio.run(main())


def test_to_dict_is_plain_json_and_computed_once_per_snapshot():
    from dataclasses import asdict

    from backend.monitor.machine_status import GpuDevice
    from backend.monitor.snapshot import MonitorSnapshot, Series

    snap = MonitorSnapshot(1.0, 2.0, gpu=GpuStatus(vendor="nvidia", available=True, devices=(
        GpuDevice(0, "x", mem_used_bytes=1, mem_total_bytes=4),)), history=(Series("k", "%", (1.0, 2.0), (None, 3.0)),))
    first = snap.to_dict()
    expected = json.loads(json.dumps(asdict(snap)))
    expected["gpu"]["devices"][0]["mem_fraction"] = 0.25
    expected["gpu"]["no_telemetry"] = False
    assert json.loads(json.dumps(first)) == expected
    again = snap.to_dict()
    assert again == first and again is not first and again["history"] is first["history"]


def test_a_failing_props_keeps_what_it_said_before_and_is_asked_again():
    async def main() -> None:
        llama = ReplayLlama()
        url = await llama.start()
        backends = {"local": BackendConfig("local", f"{url}/v1")}
        monitor = BackendMonitor(lambda: backends, gpu=NoGpu(), props_every=0)
        try:
            await monitor.sample()
            llama.props_fail = True
            b = (await monitor.sample()).backends[0]
            assert b.endpoints["props"] == "error"
            assert b.build == "b1-0c1e570" and b.total_slots == 2 and b.n_params == 117696
        finally:
            await monitor.stop()
            await llama.stop()

    asyncio.run(main())
