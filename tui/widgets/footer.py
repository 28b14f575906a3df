"""Textual's footer, rebuilt only when the keys it shows change.

Textual's `Footer` removes and mounts all its keys on every bindings signal:
each screen switch fires two or three, and each rebuild restyles every key
(about 10 ms a rebuild on a loaded machine, in the way of the next key press).
The keys a main screen shows rarely change, so this one compares first.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class SteadyFooter(Footer):
    """A `Footer` that skips the rebuild when the shown keys are what it already shows."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._shown: tuple[object, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            shown = tuple((binding.key, binding.action, binding.description, enabled, tooltip)
                          for _node, binding, enabled, tooltip in screen.active_bindings.values()
                          if binding.show or binding.action == "command_palette")
            if shown == self._shown and self._bindings_ready:
                return
            self._shown = shown
        super().bindings_changed(screen)
