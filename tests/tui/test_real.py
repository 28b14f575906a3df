"""Pilot tests over a real `ccbridge serve` (a child process, as in use): aliases, restart, redaction,
first run, a panel that starts its own serve, a panel crash that leaves serve serving, the api_key."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import pytest

from backend.api.link import ServeLink
from backend.config import load_config
from backend.monitor.llama import probe_backend
from tests.support.config import NOWHERE, loopback, write_config
from tests.support.llama import free_port
from tests.support.serve import ServeProcess, write_chain_config
from tests.tui.conftest import screen_text, wait_until
from tests.tui.fixed import FixedLink
from tui.app import PanelApp
from tui.connection import link_for_config
from tui.screens.aliases import AliasEditor
from tui.screens.requests import RequestDetail

PLANTED = "plantedPanelKey0123456789abcdef"  # not key-shaped: only the config redaction can hide it
PLANTED_BACKEND = "plantedPanelBackendKey4711"
PLANTED_COMMAND = "plantedPanelCommandKey0815"
# prints its command line, as a server's start-up log may: the Services screen shows that log
STAND_IN = "import sys, time; print('started:', *sys.argv, flush=True); time.sleep(60)"


def _external_config(path: Path, upstream_url: str, *, api_key: str | None = None) -> Path:
    return write_config(path, comment="the panel's test config",
                        proxy=loopback(**({"api_key": api_key} if api_key else {})), litellm={"url": upstream_url},
                        backends={"local": {"api_base": NOWHERE, "model": "auto"}},
                        comments={"litellm.url": "an in-test Anthropic upstream", "aliases.*": "catch-all"})


def _attached(serve: ServeProcess, key: str | None = None) -> PanelApp:
    return PanelApp(None, link=ServeLink(serve.url, key, spawn=False))


def _send(url: str, model: str, key: str = "anything") -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json={"model": model, "max_tokens": 16, "messages": [
        {"role": "user", "content": "hi"}]}, headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30, trust_env=False)


def test_edited_alias_routes_the_next_request(tmp_path, upstream):
    config = _external_config(tmp_path / "ccbridge.yaml", upstream.url)
    with ServeProcess(config) as serve:
        app = _attached(serve)
        asyncio.run(_edit_alias(app, config, upstream))
        assert serve.proc.poll() is None  # quitting an attached panel leaves serve running
        assert serve.status()["aliases"][0]["pattern"] == "claude-special-*"


async def _edit_alias(app: PanelApp, config: Path, upstream) -> None:  # type: ignore[no-untyped-def]
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.state.status.get("proxy_url"), 30, "backend up")
        url = app.state.status["proxy_url"]
        assert (await asyncio.to_thread(_send, url, "claude-special-1")).status_code == 200
        assert upstream.upstream.seen[-1].json()["model"] == "local"
        await pilot.press("3", "a")
        await wait_until(pilot, lambda: isinstance(app.screen, AliasEditor), 5, "editor")
        await pilot.press(*"claude-special-*", "tab", "end", *"/special-model", "enter")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "claude-special-*" in config.read_text(), 20, "saved")
        assert "# the panel's test config" in config.read_text()  # comments kept
        resp = await asyncio.to_thread(_send, url, "claude-special-1")
        assert resp.status_code == 200
        assert upstream.upstream.seen[-1].json()["model"] == "special-model"
        await pilot.press("2")
        await wait_until(pilot, lambda: "special-1>local" in screen_text(app), 5, "row")
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, 30, "quit")


def test_request_detail_never_shows_the_key(tmp_path, upstream):
    config = _external_config(tmp_path / "ccbridge.yaml", upstream.url, api_key=PLANTED)
    # a backend key, and a llama-server (a stand-in) ccbridge runs with a key on its command line
    config.write_text(config.read_text().replace("    model: auto\n", (
        f"    model: auto\n    api_key: {PLANTED_BACKEND}\n  managed:\n"
        f"    api_base: http://127.0.0.1:{free_port()}/v1\n"
        f"    command: {sys.executable} -c {STAND_IN!r} --api-key {PLANTED_COMMAND}\n"), 1))
    with ServeProcess(config, api_key=PLANTED) as serve:
        refused = _attached(serve)  # no key: the panel says what is missing

        async def without_key():
            async with refused.run_test(size=(100, 40)) as pilot:
                await wait_until(pilot, lambda: refused.backend_error, 30, "refusal")
                assert "needs its api_key" in refused.backend_error
                assert "needs its api_key" in screen_text(refused)

        asyncio.run(without_key())
        app = _attached(serve, PLANTED)
        asyncio.run(_no_key_anywhere(app))


async def _no_key_anywhere(app: PanelApp) -> None:
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.status.get("proxy_url"), 30, "backend up")
        assert (await asyncio.to_thread(_send, app.state.status["proxy_url"], "claude-opus-4-8",
                                        PLANTED)).status_code == 200
        seen = []
        for key in ("1", "2", "3", "4", "5"):
            await pilot.press(key)
            await pilot.pause(0.3)
            seen.append(screen_text(app))
        await pilot.press("2")
        await wait_until(pilot, lambda: app.state.records, 5, "record")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RequestDetail), 5, "detail")
        detail = app.screen
        seen.append(screen_text(app))
        assert "claude-opus-4-8" in seen[-1]
        # the request as it was sent, replayable; the key stays a shell variable
        assert "$ANTHROPIC_AUTH_TOKEN" in detail.curl and '"content":"hi"' in detail.curl
        assert detail.bodies is not None and b'"content":"hi"' in detail.bodies.request
        for text in [*seen, detail.curl, detail.bodies.request.decode(), detail.bodies.response.decode()]:
            for secret in (PLANTED, PLANTED_BACKEND, PLANTED_COMMAND):
                assert secret not in text
        # the Services screen with the managed server's log: it printed its command line, key included
        await pilot.press("escape", "4")
        deadline = time.monotonic() + 20
        while "started:" not in screen_text(app):
            assert time.monotonic() < deadline, screen_text(app)
            await pilot.press("down")
            await pilot.pause(0.3)
        managed = screen_text(app)
        assert "--api-key" in managed, managed
        for secret in (PLANTED, PLANTED_BACKEND, PLANTED_COMMAND):
            assert secret not in managed, managed
        await pilot.press("q")
        await wait_until(pilot, lambda: not app.is_running, 30, "quit")


def test_first_run_setup_writes_a_working_config(tmp_path, llama_server, monkeypatch):
    path = tmp_path / "config" / "ccbridge.yaml"
    started: list[object] = []

    def fake_link(config_path):  # the written config is checked below; serving it is the other tests'
        started.append(config_path)
        return FixedLink()

    monkeypatch.setattr("tui.app.link_for_config", fake_link)
    app = PanelApp(None, setup_path=path)

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            found = app.screen.query_one("#found")
            await wait_until(pilot, lambda: any(
                o.id == llama_server.api_base for o in found._options), 30, "discovery")  # noqa: SLF001
            app.screen.query_one("#address").value = llama_server.api_base
            await pilot.click("#check-button")
            await wait_until(pilot, lambda: not app.screen.query_one("#write").disabled, 10, "checked")
            await pilot.click("#write")
            await wait_until(pilot, lambda: app.current_mode == "dashboard" and started, 10, "panel")

    asyncio.run(drive())
    text = path.read_text()
    assert f"api_base: {llama_server.api_base}" in text and "# catch-all" in text
    config = load_config(path)
    info = probe_backend(config.backends["local"])
    assert info.reachable


@pytest.mark.e2e
def test_r_restarts_litellm_and_the_card_goes_restarting_then_ready(tmp_path, llama_server):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    app = PanelApp(None, link=link_for_config(config))  # the panel starts its own serve, as `ccbridge` does
    shown: list[str] = []

    def litellm_state() -> str:
        svc = app.state.service("litellm") or {}
        state = app.state.shown_state(svc) if svc else "?"
        if not shown or shown[-1] != state:
            shown.append(state)
        return state

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: litellm_state() == "ready", 180, "LiteLLM ready")
            pid = app.state.service("litellm")["pid"]
            await pilot.press("4")
            await pilot.pause(0.3)
            assert app.screen.selected == "litellm"
            await pilot.press("r")
            await wait_until(pilot, lambda: litellm_state() == "restarting", 5, "restarting")
            assert "restarting" in screen_text(app)
            await wait_until(pilot, lambda: litellm_state() == "ready" and app.state.service("litellm")["pid"] != pid,
                             180, "ready again")
            assert app.state.service("litellm")["restarts"] >= 1
            await pilot.press("1")
            await pilot.pause(0.3)
            assert "ready" in screen_text(app)
            serve = app.link.process
            assert serve is not None and serve.poll() is None
            await pilot.press("q")
            await wait_until(pilot, lambda: not app.is_running, 60, "quit")
            assert serve.poll() is not None  # q stopped the serve the panel started

    asyncio.run(drive())
    assert shown[-2:] == ["restarting", "ready"], shown


def test_a_panel_started_serve_outlives_a_panel_crash(tmp_path, upstream, monkeypatch):
    """`ccbridge` runs serve as a child: an exception in a widget ends the panel, never the bridge."""
    config = _external_config(tmp_path / "ccbridge.yaml", upstream.url)
    app = PanelApp(None, link=link_for_config(config))

    def broken(self, finished):  # type: ignore[no-untyped-def]
        if self.panel.state.records:
            raise RuntimeError("a widget bug")

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.backend_up and app.state.status.get("proxy_url"), 60, "serve up")
            monkeypatch.setattr("tui.screens.dashboard.DashboardScreen.refresh_view", broken)
            assert (await asyncio.to_thread(_send, app.proxy_url(), "claude-opus-4-8")).status_code == 200
            await wait_until(pilot, lambda: not app.is_running, 30, "the crash")

    with pytest.raises(RuntimeError, match="a widget bug"):
        asyncio.run(drive())
    serve = app.link.process
    try:
        assert serve is not None and serve.poll() is None and not app.clean_exit
        assert _send(app.link.url, "claude-opus-4-8").status_code == 200  # still serving
    finally:
        app.link.stop()
    assert serve.poll() is not None
