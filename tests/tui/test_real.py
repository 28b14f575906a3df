"""Pilot tests over the real backend (`BridgeThread`): aliases, restart, redaction, first run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from backend.backend_probe import probe_backend
from backend.config import load_config
from backend.runner import BridgeThread
from tests.support.llama import free_port
from tests.support.serve import write_chain_config
from tests.tui.conftest import screen_text, wait_until
from tests.tui.fixed import FixedBackend
from tui.app import PanelApp
from tui.bridge import PanelBridge
from tui.screens.aliases import AliasEditor
from tui.screens.requests import RequestDetail

PLANTED = "sk-ant-planted-0123456789abcdef"


def _external_config(path: Path, upstream_url: str, *, api_key: str | None = None) -> Path:
    key = f"  api_key: {api_key}\n" if api_key else ""
    path.write_text(
        "# the panel's test config\n"
        f"proxy:\n  host: 127.0.0.1\n  port: {free_port()}\n{key}"
        f"litellm:\n  url: {upstream_url}   # an in-test Anthropic upstream\n"
        "backends:\n  local:\n    api_base: http://127.0.0.1:9/v1\n    model: auto\n"
        'aliases:\n  "*": local   # catch-all\n')
    return path


def _app(config: Path, tmp_path: Path) -> PanelApp:
    return PanelApp(PanelBridge(BridgeThread(load_config(config), run_dir=tmp_path / "run")))


def _send(url: str, model: str, key: str = "anything") -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", json={"model": model, "max_tokens": 16, "messages": [
        {"role": "user", "content": "hi"}]}, headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        timeout=30, trust_env=False)


def test_edited_alias_routes_the_next_request(tmp_path, upstream):
    config = _external_config(tmp_path / "ccbridge.yaml", upstream.url)
    app = _app(config, tmp_path)

    async def drive():
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

    asyncio.run(drive())


def test_request_detail_never_shows_the_key(tmp_path, upstream):
    config = _external_config(tmp_path / "ccbridge.yaml", upstream.url, api_key=PLANTED)
    app = _app(config, tmp_path)

    async def drive():
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
            assert "$ANTHROPIC_API_KEY" in detail.curl
            for text in [*seen, detail.curl]:
                assert PLANTED not in text
            await pilot.press("escape", "q")
            await wait_until(pilot, lambda: not app.is_running, 30, "quit")

    asyncio.run(drive())


def test_first_run_setup_writes_a_working_config(tmp_path, llama_server, monkeypatch):
    path = tmp_path / "config" / "ccbridge.yaml"
    started: list[object] = []

    def fake_thread(config, **kw):  # the written config is checked below; the backend itself is the e2e tests'
        started.append(config)
        return FixedBackend()

    monkeypatch.setattr("backend.runner.BridgeThread", fake_thread)
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
    app = _app(config, tmp_path)
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
            await pilot.press("q")
            await wait_until(pilot, lambda: not app.is_running, 60, "quit")

    asyncio.run(drive())
    assert shown[-2:] == ["restarting", "ready"], shown
