"""The panel application: screens, global keys, and the timers that feed them.

Thin on purpose: data arrives through `tui.bridge.PanelBridge` (drained a few
times a second), the status is polled in a worker, and each screen draws itself.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from backend.backend_probe import BackendInfo
from backend.claude_env import claude_settings, shell_lines
from tui.bridge import PanelBridge, PanelState
from tui.commands import PanelCommands
from tui.screens.aliases import AliasesScreen
from tui.screens.base import PanelScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.gpu import GpuScreen
from tui.screens.help import HelpScreen
from tui.screens.requests import RequestsScreen
from tui.screens.services import ServicesScreen

FLUSH_SECONDS = 0.25  # coalescing: at most four screen updates per second
STATUS_SECONDS = 1.0
SWITCH_INTERVAL = 0.001


class PanelApp(App[None]):
    """ccbridge's control panel over a running backend."""

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

    def __init__(self, bridge: PanelBridge | None, *, state: PanelState | None = None, start_backend: bool = True,
                 setup_path: Path | None = None, setup_options: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.bridge = bridge  # type: ignore[assignment]
        self.state = state or PanelState()
        self.start_backend = start_backend
        self.setup_path = setup_path
        self.setup_options = setup_options or {}
        self.backend_error: str | None = None
        self.backend_up = not start_backend

    def on_mount(self) -> None:
        # The proxy shares this process's GIL: hand it over every 1 ms (default 5 ms) so a
        # frame being drawn delays a proxied request by at most about that much.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self.bridge is None and self.setup_path is not None:
            from tui.screens.setup import SetupScreen

            self.push_screen(SetupScreen(self.setup_path, **self.setup_options), self._setup_done)
            return
        self._begin()

    def _setup_done(self, path: Path | None) -> None:
        if path is None:
            self.exit()
            return
        from backend.config import load_config
        from backend.runner import BridgeThread

        self.bridge = PanelBridge(BridgeThread(load_config(path)))
        self._begin()

    def _begin(self) -> None:
        self.switch_mode("dashboard")
        self.set_interval(FLUSH_SECONDS, self.flush_events)
        self.set_interval(STATUS_SECONDS, self.poll_status)
        if self.start_backend:
            self.notify("starting the proxy and LiteLLM ...")
            self._start_backend()
        else:
            self.poll_status()

    @work(thread=True, exclusive=True, group="backend-start")
    def _start_backend(self) -> None:
        self.bridge.backend.start()
        history = self.bridge.backend.recent(500)
        self.call_from_thread(self._started, history)

    def _started(self, history: list[Any]) -> None:
        self.backend_up = True
        self.state.seed(history)
        self.poll_status()

    # -- data ------------------------------------------------------------------
    def flush_events(self) -> None:
        events = self.bridge.drain() if self.bridge else []
        finished = self.state.apply(events) if events else []
        if events:
            self.refresh_screens(finished)

    def refresh_screens(self, finished: list[Any] | None = None) -> None:
        screen = self.screen
        if isinstance(screen, PanelScreen) and screen.is_mounted:
            screen.redraw(finished)

    def poll_status(self) -> None:
        if self.bridge is not None and self.backend_up:
            self._poll_status()

    @work(thread=True, exclusive=True, group="status")
    def _poll_status(self) -> None:
        status = self.bridge.backend.status()
        self.call_from_thread(self._status, status)

    def _status(self, status: dict[str, Any]) -> None:
        self.state.status = status
        self.refresh_screens()

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
        return str(self.state.status.get("proxy_url") or "http://127.0.0.1:8082")

    def env_lines(self, *, hide_key: bool = False) -> list[str]:
        """What `ccbridge env` prints (without its comments), sized from the monitor's last look at
        the first backend, so nothing is asked of the backend from here. `hide_key`: for the screen."""
        config = getattr(self.bridge.backend, "config", None) if self.bridge is not None else None
        if config is None:
            return [f"export ANTHROPIC_BASE_URL={self.proxy_url()}", "(`ccbridge env` prints the rest)"]
        lines = shell_lines(claude_settings(config, self._first_backend_info(config)), why=False)
        key = config.proxy.api_key
        return [line.replace(key, "<proxy.api_key>") for line in lines] if key and hide_key else lines

    def _first_backend_info(self, config: Any) -> BackendInfo | None:
        first = next(iter(config.backends.values()), None)
        for seen in (self.state.status.get("monitor") or {}).get("backends", []):
            if first is not None and seen.get("name") == first.name:
                return BackendInfo(first.name, first.api_base, seen.get("health") == "ok", seen.get("model"),
                                   seen.get("n_ctx_slot"), seen.get("n_ctx_train"), seen.get("total_slots"))
        return None

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
        self.notify("stopping LiteLLM and every child ...")
        self._stop_backend()

    @work(thread=True, exclusive=True, group="backend-stop")
    def _stop_backend(self) -> None:
        if self.bridge is not None:
            self.bridge.backend.stop()
        self.call_from_thread(self.exit)
