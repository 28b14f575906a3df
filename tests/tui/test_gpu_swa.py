"""The sliding-window advice in the panel: shown on the GPU screen and the dashboard card, applied with `w`."""

from __future__ import annotations

import asyncio
import copy

from tests.tui.conftest import wait_until
from tests.tui.fixed import NOW, fixed_app, fixed_status
from tui.screens.gpu import plain

SWA = {"window": 512, "swa_layers": 15, "n_layers": 18, "pattern_source": "llama.cpp default for gemma3",
       "full": False, "full_source": "process", "n_ctx": 8192, "slots": 1, "cache_types": "f16/f16",
       "swa_cells": 1024, "kv_bytes": 39 * 2**20, "base_bytes": 24 * 2**20, "swa_bytes": 15 * 2**20,
       "swa_full_bytes": 120 * 2**20, "extra_bytes": 105 * 2**20}
ADVICE = {"level": "warn", "code": "swa_no_full", "backend": "local",
          "text": "model gemma-3-270m uses sliding-window attention: new sessions re-read the whole prompt",
          "fix": "add --swa-full to backends.local.command and restart service llama:local (in the panel, w on "
                 "the GPU screen (5) does both); it adds 105.0 MiB of KV memory"}


def swa_status(managed: bool) -> dict:
    status = copy.deepcopy(fixed_status())
    monitor = status["monitor"]
    monitor["backends"][0]["swa"] = SWA
    monitor["advice"] = [ADVICE]
    monitor["cache"]["by_session"] = [{"key": "bbbb2222-0000", "later_share": None, "first_share": 0.0,
                                       "reason": "a new session's first turn served 0% ... sliding-window"}]
    if managed:
        status["services"].append({"name": "llama:local", "state": "ready", "pid": 5151, "port": 8080,
                                   "url": "http://127.0.0.1:8080", "restarts": 0, "started_at": NOW - 60})
    return status


def test_the_gpu_screen_and_card_show_it_and_w_applies_it_through_the_facade():
    app = fixed_app(status=swa_status(managed=True))

    async def drive():
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.pause()
            card = app.screen.query_one("#card-model").render().plain  # type: ignore[attr-defined]
            assert "warn: model gemma-3-270m uses sliding-window" in card
            await pilot.press("5")
            await pilot.pause()
            text = plain(app.screen.body, 100)  # type: ignore[attr-defined]
            assert "sliding window 512 tokens on 15/18 layers  --swa-full off  KV 39 MiB without, 144 MiB with" \
                in text
            session = next(line for line in text.splitlines() if line.startswith("session bbbb2222"))
            assert "0%" in session, text  # the cache table's row, with the reason under the table
            assert "session bbbb2222 missed: a new session's first turn served 0%" in text
            assert "fix: add --swa-full to backends.local.command" in text
            await pilot.press("w")
            await wait_until(pilot, lambda: ("enable_swa_full", "local") in app.bridge.control.calls, 5)

    asyncio.run(drive())


def test_w_does_nothing_to_a_server_ccbridge_does_not_run():
    app = fixed_app(status=swa_status(managed=False))

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5", "w")
            await pilot.pause(0.3)
            assert not [c for c in app.bridge.control.calls if c[0] == "enable_swa_full"]
            assert any("not run by ccbridge" in str(n.message) for n in app._notifications)

    asyncio.run(drive())
