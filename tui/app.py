"""The panel application: screens, global keys, and the timers that feed them.

Thin on purpose. The panel is a client of a `ccbridge serve` (started here in
the background, or already running, here or through a tunnel): every call goes
through the control interface (`backend.control.BridgeControl`, over HTTP in
real use). Events arrive through `tui.bridge.PanelBridge` and are drained a
few times a second; the status is polled one call at a time (the next poll is
armed when the last one ended); each screen draws itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from backend.api.link import ServeLink
from backend.control import BridgeControl, ControlUnavailable
from backend.events import RequestRecord
from backend.serve_info import describe
from tui.bridge import ROW_WINDOW, PanelBridge, PanelState
from tui.commands import PanelCommands
from tui.connection import link_for_config, yield_cpu_to_serve
from tui.format import progress_text
from tui.screens.aliases import AliasesScreen
from tui.screens.base import Panel, PanelScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.gpu import GpuScreen
from tui.screens.help import HelpScreen
from tui.screens.requests import RequestDetail, RequestsScreen
from tui.screens.services import ServicesScreen

FLUSH_SECONDS = 0.25  # coalescing: at most four screen updates per second
STATUS_SECONDS = 1.0


class PanelApp(App[None]):
    """ccbridge's control panel over a running bridge."""

    TITLE = "ccbridge"
    CSS_PATH = Path(__file__).parent / "panel.tcss"
    COMMANDS = App.COMMANDS | {PanelCommands}
    MODES = {
        "dashboard": DashboardScreen,
        "requests": RequestsScreen,
        "aliases": AliasesScreen,
        "services": ServicesScreen,
        "gpu": GpuScreen,
    }
    BINDINGS = [
        Binding("1", "show('dashboard')", "Home", id="panel.dashboard"),
        Binding("2", "show('requests')", "Reqs", id="panel.requests"),
        Binding("3", "show('aliases')", "Alias", id="panel.aliases"),
        Binding("4", "show('services')", "Svc", id="panel.services"),
        Binding("5", "show('gpu')", "GPU", id="panel.gpu"),
        Binding("question_mark", "help", "Help", id="panel.help"),
        Binding("q", "quit", "Quit", id="panel.quit"),
    ]

    def __init__(self, bridge: PanelBridge | None, *, state: PanelState | None = None, link: ServeLink | None = None,
                 setup_path: Path | None = None, setup_options: dict[str, Any] | None = None,
                 yield_cpu: bool = False, **kw: Any) -> None:
        """`bridge` over a control interface that is ready; or `link` to a serve to find or start first;
        or neither with `setup_path`: the first-run screen writes that config, then a link is made for it.
        `yield_cpu`: once serve is found or started, the panel lowers its own priority (as `ccbridge` runs it;
        see `tui.connection.yield_cpu_to_serve`)."""
        super().__init__(**kw)
        self.yield_cpu = yield_cpu
        self.bridge = bridge  # type: ignore[assignment]
        self.state = state or PanelState()
        self.link = link
        self.setup_path = setup_path
        self.setup_options = setup_options or {}
        self.backend_error: str | None = None
        self.backend_up = link is None and bridge is not None
        self.clean_exit = False  # q was pressed (not a crash): what was started here is stopped
        self.polls_started = 0
        self._logs_seeded = False
        self._polling = False
        self._poll_again = False
        self._status_timer: Timer | None = None

    def on_mount(self) -> None:
        if self.bridge is None and self.link is None and self.setup_path is not None:
            from tui.screens.setup import SetupScreen

            self.push_screen(SetupScreen(self.setup_path, **self.setup_options), self._setup_done)
            return
        self._begin()

    def _setup_done(self, path: Path | None) -> None:
        if path is None:
            self.clean_exit = True
            self.exit()
            return
        self.link = link_for_config(path)
        self._begin()

    def _begin(self) -> None:
        self.switch_mode("dashboard")
        self.set_interval(FLUSH_SECONDS, self.flush_events)
        if self.link is not None:
            if self.bridge is None:
                self.bridge = PanelBridge(self.link.client)
            self.notify(f"connecting to ccbridge at {self.link.url} ...")
            self._connect()
        elif self.bridge is not None:
            self.bridge.start()
            self.poll_status()

    @work(exclusive=True, group="backend-start")
    async def _connect(self) -> None:
        assert self.link is not None
        try:
            how = await self.link.connect()
        except ControlUnavailable as exc:
            self.backend_error = str(exc)
            self.refresh_screens()
            self.notify(str(exc), severity="error", timeout=20, markup=False)
            return
        assert self.bridge is not None
        self.bridge.start()
        if how == "started":
            self.notify(f"started ccbridge serve (pid {self.link.process.pid if self.link.process else '?'}); "
                        "q stops it", markup=False)
        else:
            seen = getattr(self.link, "found", None)  # the serve's status when it was found running
            found = describe(seen, self.link.url) if seen else f"the serve at {self.link.url}"
            self.notify(f"attached to {found}; q leaves it running", markup=False, timeout=10)
        self.backend_up = True
        if self.yield_cpu:
            yield_cpu_to_serve()  # serve runs in its own process now: it and the model go first for a core
        await self._reseed()
        self.poll_status()

    async def _seed_logs(self) -> None:
        """Each service's log so far (the events bring only the lines from now on)."""
        for svc in self.state.status.get("services", []):
            try:
                lines = await self.control.log_tail(str(svc["name"]), 2000)
            except (ControlUnavailable, KeyError):
                continue
            self.state.seed_log(str(svc["name"]), lines)

    async def _reseed(self) -> None:
        self.state.seed(await self.control.recent(ROW_WINDOW))
        self.refresh_screens()

    @property
    def control(self) -> BridgeControl:
        """The control interface of the serve this panel shows."""
        if self.bridge is None:
            raise RuntimeError("the panel is not connected yet")
        return self.bridge.control

    # -- data ------------------------------------------------------------------
    def flush_events(self) -> None:
        events = self.bridge.drain() if self.bridge else []
        finished = self.state.apply(events) if events else []
        if self.state.reconnected:
            self.state.reconnected = False
            self.run_worker(self._reseed(), exclusive=True, group="reseed")
        if events or self.state.in_flight:  # in-flight rows show their time so far
            self.refresh_screens(finished)

    def refresh_screens(self, finished: list[RequestRecord] | None = None) -> None:
        if not self.screen_stack:  # shutting down
            return
        screen = self.screen
        if isinstance(screen, PanelScreen) and screen.is_mounted:
            screen.redraw(finished)

    def poll_status(self) -> None:
        """Poll now (or right after the poll under way). One poll at a time: each arms the next when it
        ends (dolphie's pattern), so a stalled loop or a slow serve never piles polls up."""
        if self.bridge is None or not self.backend_up:
            return
        if self._polling:
            self._poll_again = True
            return
        if self._status_timer is not None:
            self._status_timer.stop()
            self._status_timer = None
        self._polling = True
        self.polls_started += 1
        self._poll_status()

    @work(group="status")
    async def _poll_status(self) -> None:
        try:
            status = await self.control.status()
        except ControlUnavailable as exc:
            self.backend_error = f"{exc} (retrying)"
            self.refresh_screens()
        else:
            self.backend_error = None
            self.state.status = status
            if not self._logs_seeded:
                self._logs_seeded = True
                await self._seed_logs()
            self.refresh_screens()
        finally:
            self._polling = False
            if self._poll_again:
                self._poll_again = False
                self.call_later(self.poll_status)
            else:
                self._status_timer = self.set_timer(STATUS_SECONDS, self.poll_status)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """One place for worker failures: say what failed, keep the panel up."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            if event.worker.group == "backend-start":
                self.backend_error = str(error)
                self.refresh_screens()
            self.notify(f"{event.worker.group or event.worker.name}: {error}", severity="error", timeout=10,
                        markup=False)

    # -- what screens ask for --------------------------------------------------
    def proxy_url(self) -> str:
        return str(self.state.status.get("proxy_url") or (self.link.url if self.link else "http://127.0.0.1:8082"))

    def env_lines(self) -> list[str]:
        """What `ccbridge env` prints (without its comments), as serve computes it from its
        monitor; before the first status arrives, the one line that matters most."""
        lines = self.state.status.get("claude_env")
        if isinstance(lines, list) and lines:
            return [str(line) for line in lines]
        return [f"export ANTHROPIC_BASE_URL={self.proxy_url()}", "(`ccbridge env` prints the rest)"]

    @work(exclusive=True, group="request-detail")
    async def open_request(self, request_id: str) -> None:
        """The detail view of one request (from the window, else from the history)."""
        record = next((r for r in self.state.records if r.id == request_id), None)
        if record is None and request_id in self.state.in_flight:
            self.notify(progress_text(self.state.progress.get(request_id)) + "; its record is complete once it ends",
                        markup=False)
            return
        if record is None:
            record = await self.control.record(request_id)
        if record is not None:
            bodies = await self.control.bodies(request_id)
            self.push_screen(RequestDetail(record, self.proxy_url(), bodies))

    # -- actions ---------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_copy_env(self) -> None:
        self.copy_to_clipboard("\n".join(self.env_lines()))
        self.notify("env lines copied")

    async def action_on_screen(self, mode: str, action: str) -> None:
        self.action_show(mode)
        await self.screen.run_action(action)

    def action_restart_service(self, name: str) -> None:
        self.action_show("services")
        screen = self.screen
        if isinstance(screen, ServicesScreen):
            screen.selected = name
            screen.action_restart()

    async def action_quit(self) -> None:
        if self.link is not None and self.link.started_here:
            self.notify("stopping ccbridge serve (LiteLLM and every child) ...")
        self.clean_exit = True
        self._stop_backend()

    @work(exclusive=True, group="backend-stop")
    async def _stop_backend(self) -> None:
        if self.bridge is not None:
            self.bridge.stop()
        if self.link is not None:
            await self.link.close(stop_started=True)
        self.exit()


def as_panel(app: PanelApp) -> Panel:
    """The app is what screens ask for: mypy checks it here, where both are known."""
    return app
