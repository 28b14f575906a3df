"""Text widgets updated only when their text changes, and laid out only when their size can.

Under load the dashboard redraws a few times a second. `Static.update` always
asks Textual for a layout pass of the whole screen (about half of the panel's
time at 200 requests/s, measured with py-spy), though most updates change a
number inside a box whose size is set by the stylesheet. `put` skips an update
whose content is what the widget already shows, and a widget whose width and
height the stylesheet fixes (`fixed=True`) is repainted without a layout pass.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from textual.widgets import Static

_shown: WeakKeyDictionary[Static, Any] = WeakKeyDictionary()
_NOTHING = object()


def put(widget: Static, content: Any, *, fixed: bool = False) -> None:
    """Show `content` in `widget` unless it already shows it; `fixed`: the stylesheet sets the widget's
    size, so its content cannot change it (no layout pass)."""
    if _shown.get(widget, _NOTHING) != content:
        _shown[widget] = content
        widget.update(content, layout=not fixed)
