"""Config reloads, `--swa-full` and LiteLLM's stale-process clean-up leave the event loop free.

Each measures the longest time the bridge's loop ran no callback while the work ran
(`LoopStallMeter`), against how long the same blocking work takes: run on the loop,
the stall is the whole of it.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import time
from pathlib import Path

import pytest

import backend.services.litellm_service as litellm_module
from backend.bridge import Bridge
from backend.config import ConfigDocument, load_config
from backend.config.model import LiteLLMConfig
from backend.events import EventBus
from backend.services.litellm_service import LiteLLMService
from backend.services.supervised import FAILED
from tests.support.config import write_config
from tests.support.llama import free_port
from tests.support.stall import LoopStallMeter

ALIASES = 600  # enough YAML that reading it takes a few hundred ms here


def _big_config(tmp: Path) -> Path:
    path = tmp / "ccbridge.yaml"
    command = f"{sys.executable} -c 'import time; time.sleep(60)'"  # a llama-server stand-in ccbridge runs
    return write_config(path, comment="a long alias list", proxy={"port": free_port()},
                        backends={"box-a": {"api_base": f"http://127.0.0.1:{free_port()}/v1", "route": "native",
                                            "command": command}},
                        aliases={**{f"claude-x-{i}-*": "box-a" for i in range(ALIASES)}, "*": "box-a"},
                        comments={f"aliases.claude-x-{i}-*": f"rule {i}" for i in range(ALIASES)})


def _blocking_seconds(path: Path) -> float:
    """What reading the file costs when it blocks (the smaller of two tries)."""
    took = []
    for _ in range(2):
        t0 = time.perf_counter()
        ConfigDocument.load(path).to_config()
        took.append(time.perf_counter() - t0)
    return min(took)


def test_reload_and_swa_full_do_not_stall_the_loop(tmp_path):
    path = _big_config(tmp_path)
    work = _blocking_seconds(path)
    assert work > 0.15, f"the config reads in {work:.3f} s: too fast to measure a stall against"

    async def main() -> tuple[float, float]:
        bridge = Bridge(load_config(path), run_dir=tmp_path / "run")
        await bridge.start()
        try:
            # The collector is paused while measuring: a collection stops every thread, whichever triggered
            # it, and the pytest process's heap makes one take ~100 ms; this measures what runs on the loop.
            gc.collect()
            gc.disable()
            async with LoopStallMeter() as reload_meter:
                await bridge.reload_config()
            async with LoopStallMeter() as swa_meter:
                assert await bridge.enable_swa_full("box-a") == ("llama:box-a",)
            gc.enable()
            assert "--swa-full" in (bridge.config.backends["box-a"].command or "")
            return reload_meter.longest, swa_meter.longest
        finally:
            gc.enable()
            await bridge.stop()

    reload_stall, swa_stall = asyncio.run(main())
    print(f"\nreading the config blocks {work * 1000:.0f} ms; loop stalled {reload_stall * 1000:.0f} ms during "
          f"reload_config, {swa_stall * 1000:.0f} ms during enable_swa_full")
    assert reload_stall < work / 3, (reload_stall, work)
    assert swa_stall < work / 2, (swa_stall, work)  # on the loop it would read and write: ~1.5 x `work`


def test_litellm_stale_process_cleanup_does_not_stall_the_loop(tmp_path, monkeypatch):
    scan = 0.5  # psutil's scan of every connection, and its wait for a killed process: stand-in that blocks
    scanned: list[float] = []

    def slow_port_owner(port: int) -> None:
        time.sleep(scan)
        scanned.append(scan)

    monkeypatch.setattr(litellm_module, "port_owner", slow_port_owner)
    monkeypatch.setattr(litellm_module.litellm_env, "is_ready", lambda *a, **k: True)
    monkeypatch.setattr(litellm_module.litellm_env, "litellm_executable", lambda *a, **k: Path("/bin/false"))

    async def main() -> float:
        with socket.socket() as holder:  # another program holds LiteLLM's port: the clean-up asks who
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            svc = LiteLLMService(settings=LiteLLMConfig(port=port), backends=dict, leg_url=lambda: "",
                                 leg_secret="leg-secret-0123", run_dir=tmp_path / "run", bus=EventBus(),
                                 session=None)  # type: ignore[arg-type]
            async with LoopStallMeter() as meter:
                await svc.start()
                while svc.state != FAILED:
                    await asyncio.sleep(0.01)
            await svc.stop()
            assert "already in use" in (svc.last_error or "")
            return meter.longest

    stall = asyncio.run(main())
    print(f"\nLiteLLM's clean-up blocked {scan * 1000:.0f} ms in its thread; the loop stalled {stall * 1000:.0f} ms")
    assert scanned, "the clean-up never asked who holds the port"
    assert stall < scan / 4, stall


@pytest.fixture(autouse=True)
def _quiet_litellm_install(monkeypatch):
    # never install LiteLLM from these tests
    monkeypatch.setattr(litellm_module.litellm_env, "ensure_env", lambda *a, **k: Path("/bin/false"))
