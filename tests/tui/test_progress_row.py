"""A request on the live log: llama-server reading its prompt (share done, from cache, time left), then
generating, then done with the share of its prompt served from cache."""

from __future__ import annotations

import asyncio

from backend.events import RequestFinished, RequestProgress, RequestRecord, RequestStarted
from tests.tui.conftest import wait_until
from tests.tui.fixed import NOW, fixed_app


def _cells(app, rid: str) -> list[str]:
    from tui.widgets.request_table import RequestTable

    return list(app.screen.query_one("#live", RequestTable).row_cells(rid) or ())


def test_prefill_then_generating_then_done_on_the_first_screen():
    app = fixed_app(records=[])

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            backend = app.bridge.control
            backend.emit(RequestStarted("r1", NOW - 3, "POST", "/v1/messages", "claude-opus-4-8", "local", "s1"))
            backend.emit(RequestProgress("r1", "prefill", NOW, prompt_total=21_000, prompt_done=9_450,
                                         prompt_cached=4_200, eta_s=8.4))
            await wait_until(pilot, lambda: "pre45%" in _cells(app, "r1"), 3, "prefill row")
            cells = _cells(app, "r1")
            assert "21.0k" in cells and "20%" in cells and "~8s" in cells  # prompt size, from cache, time left
            backend.emit(RequestProgress("r1", "generating", NOW + 1))
            await wait_until(pilot, lambda: "gen" in _cells(app, "r1"), 3, "generating row")
            backend.emit(RequestFinished(RequestRecord(
                id="r1", started_at=NOW - 3, method="POST", path="/v1/messages", requested_model="claude-opus-4-8",
                routed_backend="local", status=200, input_tokens=600, cache_read_tokens=20_400, output_tokens=30,
                cache_share=20_400 / 21_000, ttft_ms=2900.0, duration_ms=3100.0)))
            await wait_until(pilot, lambda: "200" in _cells(app, "r1"), 3, "done row")
            cells = _cells(app, "r1")
            assert "21.0k" in cells and "97%" in cells
            assert not app.state.progress

    asyncio.run(drive())
