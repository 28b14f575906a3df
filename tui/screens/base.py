"""What every main screen shares: the header, the footer and a redraw hook."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.css.query import NoMatches
from textual.screen import Screen

from backend.events import RequestRecord

if TYPE_CHECKING:
    from tui.app import PanelApp


class PanelScreen(Screen[None]):
    """A main screen: redrawn from `app.state` when data arrives and when shown again."""

    @property
    def panel(self) -> PanelApp:
        return self.app  # type: ignore[return-value]

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
