"""A group alias's backends on the GPU screen (5): up or why not, share of requests, sessions, cache."""

from __future__ import annotations

import asyncio
import copy

from tests.tui.fixed import fixed_app, fixed_status
from tui.screens.gpu import group_lines, plain

GROUPS = [{"group": "box-a+box-b", "balance": "session", "requests": 16, "members": [
    {"backend": "box-a", "up": False, "reason": "cannot reach backend 'box-a' at http://10.0.0.2:8080/v1",
     "since": 0.0, "requests": 4, "share": 0.25, "failed": 0, "took_over": 0, "sessions_moved_in": 0,
     "sessions": 0, "cache_share": 0.63, "later_turns_cache_share": 0.99},
    {"backend": "box-b", "up": True, "reason": None, "since": 0.0, "requests": 12, "share": 0.75, "failed": 0,
     "took_over": 1, "sessions_moved_in": 2, "sessions": 4, "cache_share": 0.79, "later_turns_cache_share": 0.98},
]}]


def test_group_lines_say_where_requests_go_and_why_not():
    text = "\n".join(group_lines(GROUPS))
    assert "group box-a+box-b  (balance: session, 16 requests)" in text
    assert "box-a: DOWN (cannot reach backend 'box-a' at http://10.0.0.2:8080/v1)" in text
    assert "requests 12 (75%)  sessions 4  cache 79% (later turns 98%)  took over 1" in text
    assert group_lines(None) == group_lines([]) == []


def test_the_gpu_screen_shows_the_groups():
    status = copy.deepcopy(fixed_status())
    status["groups"] = GROUPS
    app = fixed_app(status=status)

    async def drive():
        async with app.run_test(size=(100, 40)) as pilot:
            await pilot.press("5")
            await pilot.pause()
            text = plain(app.screen.body, 100)  # type: ignore[attr-defined]
            assert text.startswith("group box-a+box-b") and "box-b: up" in text and "llama-server" in text

    asyncio.run(drive())
