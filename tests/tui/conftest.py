"""Helpers for the panel's tests: a fixed time zone, a threaded upstream, waiting on the screen."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.loop import LoopThread
from tests.support.upstreams import AnthropicUpstream


@pytest.fixture(autouse=True)
def _utc(monkeypatch):
    """Times on screen are local times: pin the zone so snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class ThreadedUpstream:
    """AnthropicUpstream on its own thread and loop (the panel's tests run their own loop)."""

    def __init__(self) -> None:
        self.upstream = AnthropicUpstream()
        self.loop = LoopThread()

    def __enter__(self) -> ThreadedUpstream:
        self.url = self.loop.run(self.upstream.start(), 10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.run(self.upstream.stop(), 10)
        self.loop.close()


@pytest.fixture
def upstream() -> Iterator[ThreadedUpstream]:
    with ThreadedUpstream() as up:
        yield up


async def wait_until(pilot, check: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """Let the app run until `check()` is truthy (the app's timers and workers keep going)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")


def screen_text(app) -> str:  # type: ignore[no-untyped-def]
    """Everything visible on the current screen, as plain text (from the SVG export)."""
    import html
    import re

    svg = app.export_screenshot()
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")
