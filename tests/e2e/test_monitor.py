"""The backend monitor against the real tiny llama-server, and the cache share on the real chain."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from backend.bridge import Bridge
from backend.config import load_config
from backend.config.model import BackendConfig
from backend.monitor.advice import advise
from backend.monitor.machine_status import GpuStatus
from backend.monitor.sampler import BackendMonitor, sample_once
from backend.monitor.snapshot import CacheReport
from tests.support.config import loopback, write_config
from tests.support.llama import LlamaServer, free_port, llama_server_binary
from tests.support.serve import REPO, ServeProcess, write_chain_config
from tests.support.upstreams import AnthropicUpstream

pytestmark = pytest.mark.e2e


def config_for(server) -> dict[str, BackendConfig]:
    return {"local": BackendConfig("local", server.api_base)}


def test_every_field_from_a_server_with_slots_and_metrics(llama_server):
    snap = asyncio.run(sample_once(config_for(llama_server)))
    b = snap.backends[0]
    assert b.health == "ok" and b.health_since is not None
    assert b.endpoints == {"health": "ok", "slots": "ok", "metrics": "ok", "props": "ok", "models": "ok"}
    assert b.model and b.model.endswith("tiny-llama.gguf") and b.model_path == b.model
    assert b.build and b.build.startswith("b")
    assert (b.n_ctx_slot, b.n_ctx_train, b.total_slots) == (65536, 131072, 1)
    assert b.n_params and b.size_bytes and b.n_vocab and b.ftype
    assert b.busy_slots == 0 and len(b.slots) == 1 and b.slots[0].n_ctx == 65536
    m = b.metrics
    assert m is not None
    for name in ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total",
                 "prompt_seconds_total", "n_decode_total", "requests_processing", "requests_deferred",
                 "prompt_tps_avg", "gen_tps_avg"):
        assert getattr(m, name) is not None, name
    p = b.process
    assert p is not None and p.pid == llama_server.pid and p.is_llama_server
    assert p.rss_bytes and p.threads and p.uptime_s is not None and p.cpu_percent is not None
    assert p.flags.ctx == 65536 and p.flags.parallel == 1 and p.flags.metrics and p.flags.slots
    assert p.flags.model == str(llama_server.model_path)
    assert b.n_layers == 2  # read from the GGUF file
    assert snap.gpu.no_telemetry and snap.gpu.note and "no GPU telemetry here" in snap.gpu.note
    # 65536 per slot: enough to start, short of the 100k Claude Code 2.1.330 compacts at
    assert [a.code for a in snap.advice] == ["ctx_below_compact"]
    assert snap.to_dict()["backends"][0]["process"]["flags"]["metrics"] is True


def test_without_metrics_and_with_no_slots_missing_fields_degrade(start_llama_server):
    server = start_llama_server(ctx=8192, parallel=2, extra_args=("--no-slots",))
    snap = asyncio.run(sample_once(config_for(server)))
    b = snap.backends[0]
    assert b.health == "ok"
    assert b.endpoints["slots"] == "disabled" and b.endpoints["metrics"] == "disabled"
    assert b.metrics is None and b.slots == () and b.busy_slots is None and b.gen_tps is None
    assert (b.n_ctx_slot, b.total_slots, b.n_ctx_train) == (4096, 2, 131072)  # still from /props, /v1/models
    assert b.process is not None and b.process.flags.slots is False and b.process.flags.metrics is False
    codes = [a.code for a in snap.advice]
    assert codes == ["ctx_too_small", "no_metrics", "no_slots"]
    too_small = snap.advice[0]
    assert "4096" in too_small.text and "-np 2" in too_small.text and "-c 131072" in too_small.fix


def test_a_busy_slot_and_its_live_generation_speed(start_llama_server):
    server = start_llama_server(ctx=8192, parallel=1, extra_args=("--ignore-eos",))  # /slots on by default

    def long_request() -> None:
        httpx.post(f"{server.api_base}/chat/completions", timeout=120, trust_env=False,
                   json={"messages": [{"role": "user", "content": "go"}], "max_tokens": 6000})

    async def watch() -> list:
        monitor = BackendMonitor(lambda: config_for(server), interval=0.2)
        seen = []
        try:
            await monitor.sample()
            worker = threading.Thread(target=long_request, daemon=True)
            worker.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                b = (await monitor.sample()).backends[0]
                seen.append(b)
                if b.busy_slots == 1 and b.gen_tps and b.slots[0].phase == "generating":
                    break
                await asyncio.sleep(0.2)
            worker.join(120)
            after = (await monitor.sample()).backends[0]
            seen.append(after)
        finally:
            await monitor.stop()
        return seen

    seen = asyncio.run(watch())
    busy = [b for b in seen if b.busy_slots == 1 and b.gen_tps]
    assert busy, [(b.busy_slots, b.gen_tps, [s.phase for s in b.slots]) for b in seen]
    b = busy[-1]
    assert b.slots[0].busy and b.slots[0].decoded and b.slots[0].progress == 1.0
    assert b.gen_tps > 10
    assert seen[-1].busy_slots == 0 and seen[-1].gen_tps == 0.0


def test_the_second_turn_of_a_conversation_comes_mostly_from_cache(tiny_model, tmp_path):
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    session = "5b0c3f4e-1111-4222-8333-944455556666"
    system = "You are Claude Code, a careful engineer working in a repository. " * 60
    turn1 = [{"role": "user", "content": "List the files in this project and say what each does."}]
    turn2 = turn1 + [{"role": "assistant", "content": "There are three files."},
                     {"role": "user", "content": "Now explain the second one."}]
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--slots", "--metrics")) as llama:
        with ServeProcess(write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base), env) as serve:
            headers = {"x-api-key": "k", "anthropic-version": "2023-06-01", "X-Claude-Code-Session-Id": session,
                       "User-Agent": "claude-cli/2.1.330 (external, sdk-cli)"}
            for messages in (turn1, turn2):
                resp = httpx.post(f"{serve.url}/v1/messages", timeout=120, trust_env=False, headers=headers, json={
                    "model": "claude-opus-4-8", "max_tokens": 16, "system": system, "messages": messages})
                assert resp.status_code == 200, resp.text

            def row():
                rows = serve.status()["monitor"]["cache"]["by_session"]
                return next((r for r in rows if r["session_id"] == session and r["requests"] == 2), None)

            deadline = time.monotonic() + 15
            found = row()
            while found is None and time.monotonic() < deadline:
                time.sleep(0.2)
                found = row()
            assert found is not None, serve.status()["monitor"]["cache"]
            assert found["prompt_tokens"] > 1000
            assert found["later_share"] > 0.8 and found["last_share"] > 0.8, found
            assert found["low_turns"] == 0 and found["reason"] is None
            time.sleep(2.5)  # one more sample of /metrics
            monitor = serve.status()["monitor"]
            backend = monitor["backends"][0]
            assert backend["metrics"]["prompt_tokens_cached_total"] > 0
            assert backend["process"]["pid"] == llama.pid
            assert monitor["gpu"]["no_telemetry"] is True
            by_backend = monitor["cache"]["by_backend"][0]
            assert by_backend["key"] == "local" and by_backend["later_share"] > 0.8


def test_a_restart_with_another_context_is_picked_up(tiny_model):
    port = free_port()
    backends = {"local": BackendConfig("local", f"http://127.0.0.1:{port}/v1")}

    async def sample(monitor: BackendMonitor):
        return (await monitor.sample()).backends[0]

    monitor = BackendMonitor(lambda: backends, props_every=3600)
    loop = asyncio.new_event_loop()
    try:
        with LlamaServer(tiny_model, ctx=16384, port=port):
            first = loop.run_until_complete(sample(monitor))
        down = loop.run_until_complete(sample(monitor))
        with LlamaServer(tiny_model, ctx=131072, port=port) as again:
            pid = again.pid
            up = loop.run_until_complete(sample(monitor))
            settled = loop.run_until_complete(sample(monitor))
    finally:
        loop.run_until_complete(monitor.stop())
        loop.close()
    assert first.n_ctx_slot == 16384 and first.health == "ok"
    assert down.health == "unreachable" and down.process is None
    assert up.health == "ok" and up.process is not None and up.process.pid == pid
    assert settled.n_ctx_slot == 131072 and settled.process.flags.ctx == 131072
    assert not any(a.code.startswith("ctx_") for a in advise_for(settled))


def advise_for(b):
    return advise([b], GpuStatus(), CacheReport())


def test_a_backend_command_is_started_supervised_and_restarted(tiny_model, tmp_path):
    """Optional `command:`: ccbridge runs llama-server, the monitor sees it, a crash or a restart brings it back."""
    port = free_port()
    command = shlex.join([str(llama_server_binary()), "-m", str(tiny_model), "-c", "32768", "-np", "1",
                          "-t", "1", "-tb", "1", "--metrics"])

    async def main() -> None:
        upstream = AnthropicUpstream()
        up_url = await upstream.start()
        path = tmp_path / "ccbridge.yaml"
        write_config(path, proxy=loopback(), litellm={"url": up_url},
                     backends={"local": {"api_base": f"http://127.0.0.1:{port}/v1", "command": command}})
        bridge = Bridge(load_config(path), run_dir=tmp_path / "run")
        await bridge.start()
        try:
            service = bridge.llamas.get("llama:local")
            assert service is not None and await service.wait_ready(60), service.status()
            first = service.pid
            snap = await bridge.monitor.sample()
            b = snap.backends[0]
            assert b.health == "ok" and b.process is not None and b.process.pid == first
            assert b.process.flags.ctx == 32768 and b.process.flags.port == port
            names = [s["name"] for s in (await bridge.status())["services"]]
            assert names == ["proxy", "litellm", "llama:local"]

            await bridge.restart_service("llama:local")  # e.g. after changing -c
            assert await service.wait_ready(60), service.status()
            second = service.pid
            assert second != first and not psutil.pid_exists(first)

            os.kill(second, signal.SIGKILL)  # a crash: the supervisor starts it again
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (service.pid in (None, second) or service.state != "ready"):
                await asyncio.sleep(0.1)
            assert service.state == "ready" and service.pid not in (None, second), service.status()
            assert service.restarts >= 2 and service.last_error and "exited" in service.last_error
            third = service.pid
        finally:
            await bridge.stop()
            await upstream.stop()
        assert service.state == "stopped" and not psutil.pid_exists(third)

    asyncio.run(main())


def test_doctor_prints_the_server_its_process_the_gpu_state_and_advice(llama_server, tmp_path):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    result = subprocess.run([sys.executable, "-m", "backend", "doctor", "--config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out  # a 65536 context only warns
    assert "ok    backend 'local' serves" in out and "context 65536/slot" in out
    assert "llama-server build b" in out and "trained context 131072" in out and "/slots on, /metrics on" in out
    assert f"process: pid {llama_server.pid} llama-server" in out and "-c 65536" in out and "--metrics" in out
    assert "info  no GPU telemetry here" in out and "info  host:" in out
    assert "warn  backend 'local': context per slot is 65536 tokens" in out and "CLAUDE_CODE_MAX_OUTPUT_TOKENS=" in out


@pytest.mark.parametrize("cache_ram", [None, "0"])
def test_two_sessions_sharing_one_slot(tiny_model, tmp_path, cache_ram):
    """-np 1 and two interleaved sessions: this build's host-memory prompt cache (--cache-ram, on by
    default) brings the evicted prompt back; with it off the miss is shown with its reason and fix."""
    extra = ("--slots", "--metrics", *(("--cache-ram", cache_ram) if cache_ram else ()))
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}

    def conversation(tag: str) -> tuple[str, list, list]:
        system = f"You are agent {tag}, a careful engineer working in repository {tag}. " * 60
        first = [{"role": "user", "content": f"List the files of {tag}."}]
        return system, first, first + [{"role": "assistant", "content": "Three files."},
                                       {"role": "user", "content": "Explain the second."}]

    with LlamaServer(tiny_model, ctx=65536, parallel=1, extra_args=extra) as llama:
        with ServeProcess(write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base), env) as serve:
            def send(session: str, system: str, messages: list) -> None:
                resp = httpx.post(f"{serve.url}/v1/messages", timeout=120, trust_env=False, json={
                    "model": "claude-opus-4-8", "max_tokens": 8, "system": system, "messages": messages},
                    headers={"x-api-key": "k", "anthropic-version": "2023-06-01",
                             "X-Claude-Code-Session-Id": session})
                assert resp.status_code == 200, resp.text

            sys_a, a1, a2 = conversation("alpha")
            sys_b, b1, _ = conversation("beta")
            send("session-A", sys_a, a1)
            send("session-B", sys_b, b1)  # takes the only slot
            send("session-A", sys_a, a2)
            deadline = time.monotonic() + 15
            row = None
            while time.monotonic() < deadline:
                rows = serve.status()["monitor"]["cache"]["by_session"]
                row = next((r for r in rows if r["key"] == "session-A" and r["requests"] == 2), None)
                if row is not None:
                    break
                time.sleep(0.2)
            assert row is not None
    if cache_ram is None:
        assert row["last_share"] > 0.8 and row["low_turns"] == 0, row
    else:
        assert row["last_share"] < 0.2 and row["low_turns"] == 1, row
        assert "session-B" in row["reason"] and "-np 1" in row["reason"]
        assert "-np 2" in row["fix"] and "--cache-ram 0" in row["fix"]


def test_a_request_that_failed_on_context_size_is_linked_to_the_backend_numbers(tiny_model, tmp_path):
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    with LlamaServer(tiny_model, ctx=2048, parallel=2) as llama:
        with ServeProcess(write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base), env) as serve:
            resp = httpx.post(f"{serve.url}/v1/messages", timeout=60, trust_env=False, json={
                "model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "word " * 800}]})
            assert resp.status_code == 400, resp.text
            advice = None
            deadline = time.monotonic() + 10
            while advice is None and time.monotonic() < deadline:
                items = serve.status()["monitor"]["advice"]
                advice = next((a for a in items if a["code"] == "request_context_exceeded"), None)
                time.sleep(0.2)
    assert advice is not None and advice["level"] == "error" and advice["backend"] == "local"
    assert "1024 tokens per slot" in advice["text"] and "2 slot(s)" in advice["text"]
    assert "-c 2048" in advice["text"] and "trained for 131072" in advice["text"]
    assert "-c 131072" in advice["fix"] and "-np 2" in advice["fix"]
