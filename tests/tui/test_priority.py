"""The panel steps back for serve once serve runs in its own process (tui/connection.py)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from tui.connection import PANEL_NICE, yield_cpu_to_serve


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_panel_thread_lowers_its_priority_and_only_its_own():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen: dict[str, int | None] = {}

    def panel_thread() -> None:  # Textual draws on the thread that calls it (a thread here: pytest goes on at its own)
        seen["returned"] = yield_cpu_to_serve()
        seen["now"] = os.getpriority(os.PRIO_PROCESS, 0)

    thread = threading.Thread(target=panel_thread)
    thread.start()
    thread.join()
    assert seen["returned"] == seen["now"] == min(19, before + PANEL_NICE)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the rest of the process (and what it starts) keeps its place
