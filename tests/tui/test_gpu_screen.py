"""The llama-server screen at a glance (slots, memory, cache as tables and bars; advice as cards), and the
dashboard card that no longer cuts its advice mid-sentence."""

from __future__ import annotations

import asyncio

from tests.tui.fixed import fixed_app, fixed_monitor
from tui.screens.gpu import dashboard_card, monitor_view, plain


def test_the_card_keeps_what_is_wrong_whole_and_points_to_the_fix():
    monitor = fixed_monitor()
    monitor["advice"][0]["text"] = ("context per slot is 65536 tokens: enough to start, but Claude Code on its own "
                                    "will not compact before a 100k window")
    monitor["advice"].append({"level": "warn", "code": "no_metrics", "text": "no /metrics: x", "fix": "y"})
    assert dashboard_card(monitor).splitlines()[-1] == \
        "warn: context per slot is 65536 tokens (+1 more) · fix: press 5"
    app = fixed_app()

    async def drive() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            card = app.screen.query_one("#card-model").render().plain  # type: ignore[attr-defined]
            assert card.rstrip().endswith("warn: context per slot is 65536 tokens · fix: press 5"), card

    asyncio.run(drive())


def test_slots_memory_and_cache_are_tables_with_bars():
    text = plain(monitor_view(fixed_monitor()), 80)
    slot = next(line for line in text.splitlines() if line.startswith("0 "))
    assert "generating" in slot and "████░░░░░░░░ 23k/64k" in slot and "312" in slot
    gpu = next(line for line in text.splitlines() if line.startswith("GPU 0"))
    assert "██████████░░░░░░░░  77%" not in gpu and "████████░░  77%   18.4/24.0 GiB" in gpu, gpu
    assert any(line.startswith("local ") and "96%" in line for line in text.splitlines())  # the cache table
    assert "╭─ warn · ctx_below_compact" in text and "│ fix: restart llama-server with -c 131072" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    no_gpu = fixed_monitor()
    no_gpu["gpu"] = {"devices": [], "note": "no NVIDIA GPU here"}
    del no_gpu["backends"][0]["slots"]
    text = plain(monitor_view(no_gpu), 80)
    assert "host RAM" in text and "no NVIDIA GPU here" in text and "per-slot detail needs GET /slots" in text


def test_attaching_says_which_serve_who_started_it_and_when():
    from tests.tui.fixed import FixedLink
    from tui.app import PanelApp

    app = PanelApp(None, link=FixedLink())  # type: ignore[arg-type]

    async def drive() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            said = [str(n.message) for n in app._notifications]
            assert any(m.startswith("attached to ccbridge serve 0.1.0 at http://127.0.0.1:8082 (pid 4242, config "
                                    "/home/u/.config/ccbridge/ccbridge.yaml), started by the panel (pid 4100) at ")
                       and "q leaves it running" in m for m in said), said

    asyncio.run(drive())


def test_the_model_scorecard_is_on_the_screen_and_asked_for_once_when_missing():
    app = fixed_app()
    app.state.status.pop("scorecards")  # the status FixedBackend serves: no card yet

    async def drive() -> None:
        async with app.run_test(size=(140, 60)) as pilot:
            await pilot.press("5")
            for _ in range(50):
                await pilot.pause(0.05)
                text = plain(app.screen.body, 140)  # type: ignore[attr-defined]
                if "writes its calls as JSON text" in text:
                    break
            assert "tool calls" in text and "writes its calls as JSON text" in text, text
            assert "fix: use -c 65536 or more per slot" in text
            await pilot.press("m")  # asked again by hand
            await pilot.pause(0.2)
        probes = [c for c in app.bridge.control.calls if c[0] == "probe_models"]  # type: ignore[attr-defined]
        assert len(probes) == 2, probes  # once on the first look (no card yet), once for `m`

    asyncio.run(drive())
