"""Pilot tests over fixed data: keys, screens, palette, alias editing, service control, quitting."""

from __future__ import annotations

import asyncio

from backend.events import RequestFinished, RequestRecord, RequestStarted
from tests.tui.conftest import screen_text, wait_until
from tests.tui.fixed import NOW, fixed_app
from tui.screens.aliases import AliasEditor, AliasesScreen
from tui.screens.requests import RequestDetail
from tui.widgets.request_table import RequestTable


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_every_screen_opens_at_80x24_and_q_unsubscribes_and_exits():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            for key, mode in [("2", "requests"), ("3", "aliases"), ("4", "services"), ("5", "gpu"),
                              ("1", "dashboard")]:
                await pilot.press(key)
                await pilot.pause()
                assert app.current_mode == mode
            assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:8082" in screen_text(app)
            await pilot.press("question_mark")
            await pilot.pause()
            assert "r restart selected" in screen_text(app)
            await pilot.press("escape")
            assert app.bridge.control.listeners
            await pilot.press("q")
            await wait_until(pilot, lambda: not app.is_running, 5, "exit")

    run(drive())
    assert app.clean_exit and not app.bridge.control.listeners


def test_new_requests_arrive_coalesced_newest_first_and_filter():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            table = app.screen.query_one(RequestTable)
            assert table.row_count == 5
            backend = app.bridge.control
            for i in range(50):  # one burst: the table is redrawn on the next flush, not 50 times
                backend.emit(RequestStarted(f"new-{i}", NOW, "POST", "/v1/messages", "claude-opus-4-8", "local",
                                            "s"))
                backend.emit(RequestFinished(RequestRecord(id=f"new-{i}", started_at=NOW + i, method="POST",
                                                           path="/v1/messages", requested_model="claude-opus-4-8",
                                                           routed_backend="local", status=200, output_tokens=10)))
            await wait_until(pilot, lambda: table.row_count == 55, 3, "rows")
            assert table.row_ids()[0] == "new-49"
            assert not app.state.in_flight
            await pilot.press("slash")
            await pilot.press(*"haiku")
            await pilot.pause()
            assert table.row_count == 1
            await pilot.press("escape")
            await pilot.pause()
            assert table.row_count == 55

    run(drive())


def test_alias_editor_checks_inline_and_saves_through_the_facade():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3")
            await pilot.press("a")
            await pilot.pause()
            editor = app.screen
            assert isinstance(editor, AliasEditor)
            await pilot.press(*"claude-x-*", "tab", "end", *"/m")  # target "local/m" typed after the default
            await pilot.pause()
            editor.query_one("#target").value = "nowhere"
            await pilot.pause()
            assert "unknown backend 'nowhere'" in screen_text(app)
            assert editor.query_one("#ok").disabled
            editor.query_one("#target").value = "local/special"
            await pilot.pause()
            await pilot.click("#ok")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, AliasesScreen)
            assert screen.rules[0] == ("claude-x-*", "local/special") and screen.dirty
            await pilot.press("J")  # move it below the haiku rule
            await pilot.press("ctrl+s")
            await wait_until(pilot, lambda: any(c[0] == "save_aliases" for c in app.bridge.control.calls), 5)
            saved = next(c[1] for c in app.bridge.control.calls if c[0] == "save_aliases")
            assert saved == [("claude-haiku-*", "local"), ("claude-x-*", "local/special"), ("*", "local")]

    run(drive())


def test_unknown_model_maps_with_one_key():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("3", "m")
            await pilot.pause()
            assert isinstance(app.screen, AliasEditor)
            assert app.screen.query_one("#pattern").value == "gpt-4o"

    run(drive())


def test_services_keys_restart_and_stop_through_the_facade():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            await pilot.pause()
            await pilot.press("r")
            await wait_until(pilot, lambda: ("restart", "litellm") in app.bridge.control.calls, 5)
            await pilot.press("s")
            await wait_until(pilot, lambda: ("stop_service", "litellm") in app.bridge.control.calls, 5)

    run(drive())


def test_detail_and_palette():
    app = fixed_app()

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2", "enter")
            await pilot.pause()
            assert isinstance(app.screen, RequestDetail)
            text = screen_text(app)
            assert "15,100 of 15,317 prompt tokens" in text
            # the real request is shown and replayed (the key stays a shell variable)
            shown = str(app.screen.query_one("#detail-request").render()) + str(
                app.screen.query_one("#detail-response").render())
            assert "You are Claude Code." in shown and "Hello!" in shown
            curl = app.screen.curl
            assert '$ANTHROPIC_AUTH_TOKEN' in curl and '"content": "Hello world"' in curl
            assert curl.endswith("CCBRIDGE_BODY")
            await pilot.press("escape", "ctrl+p")
            await pilot.pause()
            await pilot.press(*"Go to aliases")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.current_mode == "aliases", 5, "palette")

    run(drive())


def test_requests_screen_exports_what_the_filter_shows(tmp_path):
    app = fixed_app()
    target = tmp_path / "opus.csv"

    async def drive():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2", "slash", *"opus", "enter")
            await pilot.pause()
            await pilot.press("e")
            await wait_until(pilot, lambda: app.screen.query("#export-path"), 5, "the export dialog")
            app.screen.query_one("#export-path").value = str(target)
            await pilot.press("enter")
            await wait_until(pilot, lambda: target.exists() and target.read_text().count("\n") == 4, 5, "the file")

    run(drive())
    import csv

    rows = list(csv.DictReader(target.open()))
    assert [r["id"] for r in rows] == ["req-0003", "req-0004", "req-0006"]  # the opus rows, oldest first
    assert all(r["requested_model"] == "claude-opus-4-8" for r in rows)
