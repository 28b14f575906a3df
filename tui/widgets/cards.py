"""A card per service: state, address, uptime, restarts, last error."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from tui.format import duration, service_address
from tui.widgets.steady import put

STATE_STYLE = {
    "ready": "bold green", "running": "bold green", "external": "green", "unused": "dim",
    "starting": "bold yellow", "restarting": "bold yellow", "installing": "bold yellow",
    "stopping": "yellow", "stopped": "dim", "failed": "bold red", "crashed": "bold red",
}


class ServiceCard(Static):
    """One service; `show(status, now)` redraws it from a status dict."""

    DEFAULT_CSS = """
    ServiceCard { border: round $primary-darken-1; height: 7; width: 1fr; padding: 0 1; }
    """

    def __init__(self, name: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.service_name = name
        self.border_title = name

    def show(self, svc: dict[str, Any] | None, now: float, state: str | None = None) -> None:
        if svc is None:
            put(self, Text("not running", style="dim"), fixed=True)
            return
        state = state or str(svc.get("state", "?"))
        text = Text()
        text.append(state, style=STATE_STYLE.get(state, "bold"))
        if svc.get("pid"):
            text.append(f"  pid {svc['pid']}", style="dim")
        text.append(f"\n{service_address(svc)}")
        since = svc.get("started_at")
        up = duration(now - since) if since and state in ("ready", "running", "restarting") else "-"
        text.append(f"\nup {up}  restarts {svc.get('restarts', 0)}")
        if svc.get("in_flight") is not None:
            text.append(f"  in flight {svc['in_flight']}")
        err = svc.get("last_error")
        if state == "restarting":
            text.append("\nrestarting: the old one serves until the new one is healthy", style="yellow")
            put(self, text, fixed=True)
            return
        text.append("\n")
        text.append(f"error: {err}" if err else "no errors", style="red" if err else "dim")
        self.set_class(state in ("failed", "crashed"), "-failed")
        put(self, text, fixed=True)  # the card's size is the stylesheet's (height 7, 1fr)
