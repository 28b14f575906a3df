"""What every main screen shares: the header, the footer and a redraw hook, and what screens may ask of the panel."""

from __future__ import annotations

from typing import Protocol, cast

from textual.css.query import NoMatches
from textual.screen import Screen

from backend.control import BridgeControl
from backend.events import RequestRecord
from tui.bridge import PanelState


class Panel(Protocol):
    """What screens ask of the app (the app implements it; screens never import the app's class)."""

    state: PanelState
    backend_error: str | None

    @property
    def control(self) -> BridgeControl:
        """The control interface of the serve the panel shows."""
        ...

    def env_lines(self) -> list[str]:
        """What `ccbridge env` prints, as serve computes it."""
        ...

    def open_request(self, request_id: str) -> object:
        """Show one request's detail (in a worker)."""
        ...

    def poll_status(self) -> None:
        """Ask serve for its status now."""
        ...

    def refresh_screens(self, finished: list[RequestRecord] | None = None) -> None:
        """Redraw the screen shown."""
        ...


class PanelScreen(Screen[None]):
    """A main screen: redrawn from `app.state` when data arrives and when shown again."""

    @property
    def panel(self) -> Panel:
        return cast("Panel", self.app)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        """Redraw from the panel state; `finished` are the records new since the last call."""

    def redraw(self, finished: list[RequestRecord] | None = None) -> None:
        """`refresh_view`, skipped while the screen is still being composed."""
        try:
            self.refresh_view(finished or [])
        except NoMatches:
            pass

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self.redraw)
