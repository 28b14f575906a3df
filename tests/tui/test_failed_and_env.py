"""The panel shows a service that failed for good, with the reason, and restarts it on `r`;
its env card holds what `ccbridge env` prints."""

from __future__ import annotations

import asyncio

from backend.backend_info import BackendInfo
from backend.claude_env import claude_settings, shell_lines
from backend.config import parse_config
from tests.tui.conftest import screen_text, wait_until
from tests.tui.fixed import FIXED_CONFIG, fixed_app, fixed_status

REASON = ("port 4000 is already in use by nginx (pid 777). Stop it, or set litellm.port in ccbridge.yaml to a "
          "free port. ccbridge stopped retrying: fix that, then restart litellm (panel: Services, r; or POST "
          "/ccbridge/api/services/litellm/restart).")


def _failed_status() -> dict:
    status = fixed_status()
    litellm = status["services"][1]
    litellm.update(state="failed", pid=None, last_error=REASON, log_tail=[])
    return status


def test_failed_litellm_shows_its_reason_and_r_restarts_it():
    app = fixed_app(status=_failed_status())

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            text = screen_text(app)
            assert "│failed" in text and "error: port 4000" in text  # the card starts the reason ...
            await pilot.press("4")
            await pilot.pause()
            assert "last error: port 4000 is already in use by nginx" in screen_text(app)  # ... here in full
            await pilot.press("r")
            await wait_until(pilot, lambda: ("restart", "litellm") in app.bridge.control.calls, 5, "restart")

    asyncio.run(drive())


def test_env_card_holds_what_ccbridge_env_prints():
    app = fixed_app(records=[])  # before the first request the card shows the lines in full

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            text = screen_text(app)
            assert "export ANTHROPIC_AUTH_TOKEN=ccbridge-local" in text and "unset ANTHROPIC_API_KEY" in text
            assert "ANTHROPIC_API_KEY=" not in text
            # serve computes them (status()["claude_env"]): the monitor saw 65536 tokens per slot on `local`,
            # the same sizing `ccbridge env` would print
            info = BackendInfo("local", "http://127.0.0.1:8080/v1", True, n_ctx_slot=65536)
            assert app.env_lines() == shell_lines(claude_settings(parse_config(FIXED_CONFIG), info), why=False)
            assert "export CLAUDE_CODE_MAX_CONTEXT_TOKENS=65536" in app.env_lines()

    asyncio.run(drive())
