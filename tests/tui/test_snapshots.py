"""Snapshots of every screen at 80x24 with fixed data (fixed clock, fixed ids, UTC)."""

from __future__ import annotations

from pathlib import Path

from tests.tui.fixed import fixed_app
from tui.app import PanelApp

SIZE = (80, 24)


def test_dashboard(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE)


def test_dashboard_at_120x40_with_a_request_in_flight(snap_compare):
    """The size the issue was tried at: the live log fills the space under the cards; one request in
    flight while llama-server reads its prompt (45 % read, 20 % from cache, ~8 s left), one generating."""
    async def in_flight(pilot) -> None:
        from backend.events import RequestProgress, RequestStarted
        from tests.tui.conftest import wait_until
        from tests.tui.fixed import NOW

        control = pilot.app.bridge.control
        control.emit(RequestStarted("req-0007", NOW - 2, "POST", "/v1/messages", "claude-sonnet-4-6", "local",
                                    "0b9d7c11-bbbb"))
        control.emit(RequestStarted("req-0008", NOW - 1, "POST", "/v1/messages", "claude-opus-4-8", "local",
                                    "5f1c2a9e-aaaa"))
        control.emit(RequestProgress("req-0007", "generating", NOW))
        control.emit(RequestProgress("req-0008", "prefill", NOW, prompt_total=21_000, prompt_done=9_450,
                                     prompt_cached=4_200, eta_s=8.4))
        await wait_until(pilot, lambda: pilot.app.screen.query_one("#live").row_count == 7, 10, "the rows")
        await pilot.pause(1.0)  # the rows' progress cells are flushed a few times a second (0.3 s was short under load)

    assert snap_compare(fixed_app(), terminal_size=(120, 40), run_before=in_flight)


def test_requests(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["2"])


def test_request_detail(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["2", "down", "down", "enter"])


def test_aliases(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["3"])


def test_alias_editor_shows_the_reason(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, run_before=_open_editor_with("lcoal"))


def _open_editor_with(target: str):  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:
        await pilot.press("3", "a", *"claude-x-*")
        pilot.app.screen.query_one("#target").value = target
        await pilot.pause()

    return run_before


def test_services(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["4"])


def test_gpu_placeholder(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["5"])


def test_help(snap_compare):
    assert snap_compare(fixed_app(), terminal_size=SIZE, press=["question_mark"])


def _setup_app() -> PanelApp:
    return PanelApp(None, setup_path=Path("/home/you/.config/ccbridge/ccbridge.yaml"),
                    setup_options={"find": lambda: [("http://127.0.0.1:8080/v1", "tiny-llama.gguf")],
                                   "check": lambda address: (True, "serves tiny-llama.gguf")})


def test_first_run_setup(snap_compare):
    async def settle(pilot) -> None:
        await pilot.pause(0.5)

    assert snap_compare(_setup_app(), terminal_size=SIZE, run_before=settle)
