"""The panel's hand-offs: no lost events, no piled-up polls, no widget touched off the UI thread."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

from backend.events import LogLine
from tests.tui.conftest import wait_until
from tests.tui.fixed import FixedBackend, fixed_app
from tui.app import PanelApp
from tui.bridge import PanelBridge
from tui.screens.setup import SetupScreen


def test_drain_never_loses_an_event_appended_while_it_runs():
    bridge = PanelBridge(FixedBackend(), buffer=1_000_000)
    bridge.start()
    total = 200_000
    received = 0
    done = threading.Event()

    def publish() -> None:  # the backend's side: as fast as it can
        for i in range(total):
            bridge._on_event(i)  # noqa: SLF001 - the listener the control interface calls
        done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: any gap in the hand-off shows
    try:
        thread = threading.Thread(target=publish)
        thread.start()
        while not done.is_set():
            received += len(bridge.drain())
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    received += len(bridge.drain())
    assert received == total and bridge.dropped == 0


class SlowStatus(FixedBackend):
    """A serve that takes its time to answer status (a slow tunnel, a stalled loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.most = 0

    async def status(self):  # type: ignore[no-untyped-def]
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.8)
            return await super().status()
        finally:
            self.running -= 1


def test_status_polls_run_one_at_a_time_and_rearm_after_each_ends():
    backend = SlowStatus()
    app = PanelApp(PanelBridge(backend))

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.polls_started >= 1, 5, "the first poll")
            for _ in range(20):  # screens ask for a fresh status (after a save, a restart ...)
                app.poll_status()
            time.sleep(2.5)  # the UI loop stalls: timers are late, nothing may pile up behind them
            await pilot.pause(4.0)
            assert backend.most == 1
            calls = sum(1 for c in backend.calls if c[0] == "status")
            # 0.8 s per poll plus 1 s between: at most ~4 in the time, however often it was asked
            assert 2 <= calls <= 6, calls

    asyncio.run(drive())


def test_setup_screen_touches_widgets_only_on_the_ui_thread(monkeypatch):
    touched: list[str] = []
    original = SetupScreen.query_one

    def query_one(self, *args, **kw):  # type: ignore[no-untyped-def]
        touched.append(threading.current_thread().name)
        return original(self, *args, **kw)

    monkeypatch.setattr(SetupScreen, "query_one", query_one)

    def find() -> list[tuple[str, str]]:
        time.sleep(0.2)  # a port scan takes a while: it runs on a thread
        return [("http://127.0.0.1:8080/v1", "tiny-llama.gguf")]

    def check(address: str) -> tuple[bool, str]:
        time.sleep(0.2)
        return True, "serves tiny-llama.gguf"

    app = PanelApp(None, setup_path=Path("/nonexistent/ccbridge.yaml"), setup_options={"find": find, "check": check})

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: not app.screen.query_one("#write").disabled, 10, "checked")

    asyncio.run(drive())
    main = threading.main_thread().name
    assert touched and set(touched) == {main}, set(touched)


def test_events_that_arrive_while_the_panel_draws_are_all_shown():
    app = fixed_app()

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            backend = app.bridge.control
            lines = 3000

            def publish() -> None:
                for i in range(lines):
                    backend.emit(LogLine("litellm", f"line {i}", time.time()))

            thread = threading.Thread(target=publish)
            thread.start()
            await asyncio.to_thread(thread.join)
            await wait_until(pilot, lambda: app.state.log_counts.get("litellm") == lines, 5, "every line")

    asyncio.run(drive())
