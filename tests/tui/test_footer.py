"""The panel's footer: the keys of the screen shown, not rebuilt when a screen switch leaves them as they were."""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from tests.tui.conftest import screen_text
from tests.tui.fixed import fixed_app
from tui.widgets.footer import SteadyFooter


def test_the_footer_is_not_rebuilt_by_a_screen_switch_but_is_when_its_keys_change():
    app = fixed_app()

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            await pilot.pause(0.3)
            footer = app.screen.query_one(SteadyFooter)
            keys = list(footer.children)
            assert keys and "Export" in screen_text(app)
            await pilot.press("1", "2")
            await pilot.pause(0.3)
            assert list(footer.children) == keys  # the same widgets: not removed and mounted again

    asyncio.run(drive())

    class Extra(Static, can_focus=True):
        BINDINGS = [Binding("x", "app.bell", "Extra key")]

    class FooterApp(App[None]):
        def compose(self) -> ComposeResult:
            yield Extra("extra", id="extra")
            yield Input(id="input")
            yield SteadyFooter()

    async def keys_change() -> None:
        app = FooterApp()
        async with app.run_test(size=(80, 10)) as pilot:
            app.query_one("#extra").focus()
            await pilot.pause(0.2)
            assert "Extra key" in screen_text(app)
            app.query_one("#input").focus()
            await pilot.pause(0.2)
            assert "Extra key" not in screen_text(app)

    asyncio.run(keys_change())
