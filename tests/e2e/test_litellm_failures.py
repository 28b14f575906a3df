"""Failures that retrying cannot fix end in state `failed`, said once, with what to do.

Each cause on the real LiteLLM service (its cached venv, the real `litellm`
process): the lock file missing, its venv impossible to create, its port held by
another program, LiteLLM exiting the same way three times. Meanwhile requests
get the reason at once instead of a wait; a restart tries again. The last test
runs the whole story through `ccbridge serve`, its status API and a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import ClientSession

from backend.config.model import BackendConfig, LiteLLMConfig
from backend.events import EventBus, ServiceStateChanged
from backend.proxy.upstream import UpstreamUnavailable
from backend.services import litellm_env
from backend.services.litellm_service import LiteLLMService
from tests.support.llama import free_port
from tests.support.serve import REPO, wait_for, write_chain_config

pytestmark = pytest.mark.e2e


class Run:
    """A LiteLLMService on the test's loop, and every state it announced."""

    def __init__(self, service: LiteLLMService, states: list[ServiceStateChanged]) -> None:
        self.service, self.states = service, states

    def failed_events(self) -> list[ServiceStateChanged]:
        return [s for s in self.states if s.state == "failed"]

    async def until(self, state: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.service.state != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"LiteLLM is {self.service.state}, not {state}, after {timeout} s: "
                                     f"{self.service.last_error}")
            await asyncio.sleep(0.05)

    async def stopped_retrying(self, timeout: float = 10) -> None:
        """Wait until its supervision has ended: nothing can retry (or announce) after that."""
        deadline = time.monotonic() + timeout
        while self.service.supervising:
            assert time.monotonic() < deadline, "LiteLLM's supervision is still running"
            await asyncio.sleep(0.02)

    async def refused_at_once(self) -> str:
        """wait_ready raises at once (well under its 120 s hold); the message it gives."""
        t0 = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as info:
            await self.service.wait_ready(120)
        assert time.monotonic() - t0 < 1.0
        return str(info.value)


@contextlib.asynccontextmanager
async def litellm(tmp_path: Path, port: int | None = None) -> AsyncIterator[Run]:
    bus = EventBus()
    states: list[ServiceStateChanged] = []
    bus.subscribe(lambda e: states.append(e) if isinstance(e, ServiceStateChanged) else None)
    backend = BackendConfig(name="local", api_base="http://127.0.0.1:9/v1")
    async with ClientSession() as session:
        service = LiteLLMService(settings=LiteLLMConfig(port=port or free_port()), backends=lambda: {"local": backend},
                                 leg_url=lambda: "http://127.0.0.1:9", leg_secret="leg-secret-for-tests",
                                 run_dir=tmp_path / "run", bus=bus, session=session)
        try:
            yield Run(service, states)
        finally:
            await service.stop()


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_missing_lock_file_fails_at_once_and_a_restart_tries_again(tmp_path, monkeypatch):
    real_lock = litellm_env.LOCK_FILE
    monkeypatch.setattr(litellm_env, "LOCK_FILE", tmp_path / "litellm-requirements.txt")

    async def story() -> None:
        async with litellm(tmp_path) as lt:
            await lt.service.start()
            await lt.until("failed", 10)
            message = await lt.refused_at_once()
            assert "lock file" in message and "reinstall ccbridge" in message, message
            assert "stopped retrying" in message and "/ccbridge/api/services/litellm/restart" in message
            await lt.stopped_retrying()  # no retry loop: still failed, said once
            assert lt.service.state == "failed" and len(lt.failed_events()) == 1
            assert lt.service.status().last_error == lt.service.last_error

            monkeypatch.setattr(litellm_env, "LOCK_FILE", real_lock)  # reinstalled
            await lt.service.restart()
            await lt.until("ready", 180)
            await lt.service.wait_ready(1)
            assert lt.service.status().pid is not None

    run(story)


def test_venv_that_cannot_be_created_fails_with_what_to_do(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be\n")
    monkeypatch.setenv("CCBRIDGE_CACHE_DIR", str(blocker))

    async def story() -> None:
        async with litellm(tmp_path) as lt:
            await lt.service.start()
            await lt.until("failed", 10)
            message = await lt.refused_at_once()
            assert "cannot create LiteLLM's environment" in message and str(blocker) in message, message
            assert "CCBRIDGE_CACHE_DIR" in message
            await lt.stopped_retrying()
            assert len(lt.failed_events()) == 1

    run(story)
    assert blocker.is_file()  # nothing of ours was removed or written there


def test_port_held_by_another_program_fails_naming_it(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        async def story() -> None:
            async with litellm(tmp_path, port=port) as lt:
                await lt.service.start()
                await lt.until("failed", 30)
                message = await lt.refused_at_once()
                assert f"port {port} is already in use by" in message and f"pid {os.getpid()}" in message, message
                assert "litellm.port" in message
                await lt.stopped_retrying()
                assert len(lt.failed_events()) == 1

        run(story)


def test_litellm_exiting_the_same_way_three_times_stops_retrying(tmp_path, monkeypatch):
    # a stale SSL_CERT_FILE in the user's environment: the real LiteLLM dies at import, every time
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.pem"))

    async def story() -> None:
        async with litellm(tmp_path) as lt:
            await lt.service.start()
            await lt.until("failed", 240)
            message = await lt.refused_at_once()
            assert "failed the same way 3 times in a row" in message and "FileNotFoundError" in message, message
            assert [s.state for s in lt.states].count("crashed") == 2  # two retries, then it gave up
            await lt.stopped_retrying()
            assert len(lt.failed_events()) == 1 and lt.service.status().pid is None

    run(story)


def test_serve_says_it_once_answers_requests_at_once_and_restarts_on_request(llama_server, tmp_path):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    text = config.read_text()
    proxy_port, litellm_port = (int(line.split(":")[1]) for line in text.splitlines()
                                if line.strip().startswith("port:"))
    url = f"http://127.0.0.1:{proxy_port}"
    env = {**os.environ, "CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    log = tmp_path / "serve.log"
    holder = socket.socket()
    holder.bind(("127.0.0.1", litellm_port))
    holder.listen()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--config", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        def litellm_status() -> dict:
            try:
                status = httpx.get(f"{url}/ccbridge/api/status", timeout=2, trust_env=False).json()
            except (httpx.HTTPError, ValueError):
                return {}
            return next(s for s in status["services"] if s["name"] == "litellm")

        deadline = time.monotonic() + 60
        while litellm_status().get("state") != "failed":
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert f"port {litellm_port} is already in use" in litellm_status()["last_error"]

        t0 = time.monotonic()
        resp = httpx.post(f"{url}/v1/messages", json={"model": "claude-opus-4-8", "max_tokens": 8,
                                                      "messages": [{"role": "user", "content": "hi"}]},
                          timeout=30, trust_env=False)
        assert time.monotonic() - t0 < 5  # not the 120 s hold
        assert resp.status_code == 503
        body = resp.json()
        assert body["type"] == "error" and f"port {litellm_port} is already in use" in body["error"]["message"]

        # serve prints the request's line after the failure's (one writer, in order): once it is there, every
        # line about the failure is too; the supervision gave up, so no later one can come
        assert wait_for(lambda: " 503 POST /v1/messages" in log.read_text(), 10), log.read_text()
        said = [line for line in log.read_text().splitlines() if "litellm failed" in line]
        assert len(said) == 1 and "ccbridge stopped retrying" in said[0], log.read_text()

        holder.close()  # the other program is gone: a restart from the API tries again
        restart = httpx.post(f"{url}/ccbridge/api/services/litellm/restart", json={}, timeout=180, trust_env=False)
        assert restart.status_code == 200, restart.text
        deadline = time.monotonic() + 180
        while litellm_status().get("state") != "ready":
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        resp = httpx.post(f"{url}/v1/messages", json={"model": "claude-opus-4-8", "max_tokens": 8,
                                                      "messages": [{"role": "user", "content": "hi"}]},
                          timeout=60, trust_env=False)
        assert resp.status_code == 200, resp.text
    finally:
        holder.close()
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
