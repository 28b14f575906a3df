"""First run: find a llama-server on this machine (or take an address), check it, write the config."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from backend.discovery import check_server, find_llama_servers, write_first_config


class SetupScreen(Screen[Path | None]):
    """Dismissed with the written config path (or None when the user quits)."""

    BINDINGS = [Binding("ctrl+r", "scan", "Scan again", id="setup.scan"),
                Binding("ctrl+w", "write", "Write config", id="setup.write")]

    def __init__(self, config_path: Path, *,
                 find: Callable[[], list[tuple[str, str]]] = find_llama_servers,
                 check: Callable[[str], tuple[bool, str]] = check_server) -> None:
        super().__init__()
        self.config_path = config_path
        self.find, self.check = find, check
        self.checked: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="setup", classes="dialog"):
            yield Static(f"No config yet. ccbridge will write [b]{self.config_path}[/b].\n"
                         "Pick a llama-server found on this machine, or type its address.")
            yield Label("found (listening ports answering GET /v1/models):")
            yield OptionList(id="found")
            yield Label("llama-server address (OpenAI base URL):")
            yield Input("http://127.0.0.1:8080/v1", id="address")
            yield Static("", id="check")
            with Horizontal(classes="buttons"):
                yield Button("Check", id="check-button")
                yield Button("Write config", variant="primary", id="write", disabled=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.action_scan()

    # Workers run on the app's loop; only the blocking probes go to a thread, so every widget
    # is touched from the UI thread (Textual's query and update are not thread-safe).
    @work(exclusive=True, group="setup-scan")
    async def action_scan(self) -> None:
        self.query_one("#check", Static).update("scanning listening ports ...")
        found = await asyncio.to_thread(self.find)
        self._found(found)

    def _found(self, found: list[tuple[str, str]]) -> None:
        options = self.query_one("#found", OptionList)
        options.clear_options()
        options.add_options([Option(f"{url}  ({model})", id=url) for url, model in found])
        if found:
            self.query_one("#address", Input).value = found[0][0]
            self._check(found[0][0])
        else:
            options.add_option(Option("none found: type the address below", disabled=True))
            self.query_one("#check", Static).update("no llama-server found; is it running?")

    @on(OptionList.OptionSelected, "#found")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.query_one("#address", Input).value = event.option.id
            self._check(event.option.id)

    @on(Button.Pressed, "#check-button")
    @on(Input.Submitted, "#address")
    def _check_typed(self) -> None:
        self._check(self.query_one("#address", Input).value.strip())

    @on(Input.Changed, "#address")
    def _typed(self) -> None:
        self.checked = None
        self.query_one("#write", Button).disabled = True

    @work(exclusive=True, group="setup-check")
    async def _check(self, address: str) -> None:
        self.query_one("#check", Static).update(f"checking {address} ...")
        ok, message = await asyncio.to_thread(self.check, address)
        self._checked(address, ok, message)

    def _checked(self, address: str, ok: bool, message: str) -> None:
        self.checked = address if ok else None
        self.query_one("#check", Static).update(
            Text.assemble(("ok" if ok else "no", "green" if ok else "red"), ": ", message))
        self.query_one("#write", Button).disabled = not ok

    @on(Button.Pressed, "#write")
    def action_write(self) -> None:
        if not self.checked:
            self.notify("check the address first", severity="warning")
            return
        try:
            write_first_config(self.config_path, self.checked)
        except OSError as exc:
            self.notify(f"cannot write {self.config_path}: {exc}", severity="error", markup=False)
            return
        self.dismiss(self.config_path)
