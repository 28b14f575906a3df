"""Each service's live log, with follow and search; restart, stop and start."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, Input, ListItem, ListView, Log, Static

from backend.events import RequestRecord
from tui.screens.base import PanelScreen
from tui.widgets.cards import STATE_STYLE

LOG_SOURCE = {"proxy": "proxy"}  # the proxy's own events; every other service logs under its name


class ServicesScreen(PanelScreen):
    """A list of services on the left, the selected one's log on the right."""

    BINDINGS = [
        Binding("r", "restart", "Restart", id="services.restart"),
        Binding("R", "restart_all", "Restart all", id="services.restart_all"),
        Binding("s", "stop_start", "Stop/start", id="services.stop_start"),
        Binding("f", "follow", "Follow", id="services.follow"),
        Binding("slash", "search", "Search", id="services.search"),
        Binding("escape", "clear_search", "Clear search", show=False, id="services.clear_search"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.selected = "litellm"
        self.follow = True
        self._shown: tuple[str, str, int] | None = None
        self._labels: dict[str, Static] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            yield ListView(id="service-list")
            yield Log(id="service-log", highlight=False, max_lines=2000)
        yield Input(placeholder="search the log (Enter applies, Esc clears)", id="log-search")
        yield Static(id="service-state", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.refresh_view([])
        self.query_one("#service-list", ListView).focus()

    def _names(self) -> list[str]:
        return [s["name"] for s in self.panel.state.status.get("services", [])]

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        names = self._names()
        lv = self.query_one("#service-list", ListView)
        if list(self._labels) != names:
            self._labels = {n: Static(n) for n in names}
            lv.clear()
            lv.extend(ListItem(label, name=n) for n, label in self._labels.items())
            if self.selected in names:
                lv.index = names.index(self.selected)
        for name, label in self._labels.items():
            svc = self.panel.state.service(name) or {}
            state = self.panel.state.shown_state(svc) if svc else "?"
            label.update(Text.assemble(name, "\n", (state, STATE_STYLE.get(state, "bold"))))
        self._show_log()

    def _lines(self) -> list[str]:
        state = self.panel.state
        lines = list(state.logs.get(self.selected, ()))
        if not lines:
            svc = state.service(self.selected) or {}
            lines = list(svc.get("log_tail") or [])
        words = self.query_one("#log-search", Input).value.lower().split()
        if words:
            lines = [x for x in lines if all(w in x.lower() for w in words)]
        return lines

    def _show_log(self) -> None:
        log = self.query_one("#service-log", Log)
        lines = self._lines()
        query = self.query_one("#log-search", Input).value
        key = (self.selected, query, self.panel.state.log_counts.get(self.selected, 0))
        self._show_state()
        if self._shown == key:
            return
        old = self._shown
        self._shown = key
        if old and old[:2] == key[:2] and not query.strip() and 0 < key[2] - old[2] < len(lines):
            log.write_lines(lines[old[2] - key[2]:], scroll_end=self.follow)  # only the new lines
        else:
            log.clear()
            log.write_lines(lines, scroll_end=self.follow)

    def _show_state(self) -> None:
        svc = self.panel.state.service(self.selected) or {}
        shown = self.panel.state.shown_state(svc) if svc else "?"
        self.query_one("#service-state", Static).update(
            f"{self.selected}: {shown}   follow {'on' if self.follow else 'off'}"
            + (f"   last error: {svc['last_error']}" if svc.get("last_error") else ""))

    @on(ListView.Highlighted, "#service-list")
    def _highlighted(self, event: ListView.Highlighted) -> None:
        if event.item is not None and event.item.name:
            self.selected = event.item.name
            self._show_log()

    def _controllable(self, name: str) -> bool:
        svc = self.panel.state.service(name) or {}
        if name == "proxy" or svc.get("state") in ("external", "unused"):
            self.notify(f"{name} is not a service ccbridge runs here", severity="warning", markup=False)
            return False
        return True

    def action_restart(self) -> None:
        if self._controllable(self.selected):
            self._control(self.selected, "restart")

    def action_restart_all(self) -> None:
        for name in self._names():
            svc = self.panel.state.service(name) or {}
            if name != "proxy" and svc.get("state") not in ("external", "unused"):
                self._control(name, "restart")

    def action_stop_start(self) -> None:
        if self._controllable(self.selected):
            svc = self.panel.state.service(self.selected) or {}
            self._control(self.selected, "start" if svc.get("state") in ("stopped", "failed", "crashed") else "stop")

    def _control(self, name: str, verb: str) -> None:
        self.panel.state.activity[name] = {"restart": "restarting", "stop": "stopping", "start": "starting"}[verb]
        self.panel.refresh_screens()
        self.notify(f"{verb} {name} ...")
        self._run_control(name, verb)

    @work(group="services")
    async def _run_control(self, name: str, verb: str) -> None:
        control = self.panel.control
        call = {"restart": control.restart_service, "stop": control.stop_service, "start": control.start_service}
        try:
            await call[verb](name)
            message, severity = f"{name}: {verb} done", "information"
        except Exception as exc:  # noqa: BLE001 - shown to the user, the panel goes on
            message, severity = f"{name}: {verb} failed: {exc}", "error"
        self.panel.state.activity.pop(name, None)
        self.notify(message, severity=severity, markup=False)  # type: ignore[arg-type]
        self.panel.poll_status()

    def action_follow(self) -> None:
        self.follow = not self.follow
        self._shown = None
        self._show_log()

    def action_search(self) -> None:
        self.query_one("#log-search", Input).focus()

    def action_clear_search(self) -> None:
        self.query_one("#log-search", Input).value = ""
        self.query_one("#service-list", ListView).focus()

    @on(Input.Changed, "#log-search")
    def _search(self) -> None:
        self._show_log()
