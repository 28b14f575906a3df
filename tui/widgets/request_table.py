"""The live request table: rows keyed by request id and diffed, never rebuilt per update.

Used by the dashboard (the newest requests under the cards) and the requests
screen. Each `show()` adds the new rows, updates only the cells that changed
(a request in flight becomes done, its duration grows), drops rows that left
the window, and re-sorts newest first (the dolphie process-list pattern).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from backend.events import RequestRecord
from tui.format import REQUEST_COLUMNS, Phase, request_row

STATUS_STYLE = {"wait": "yellow", "gen": "bold cyan", "hungup": "magenta"}
STALE_SLACK = 150  # rows pushed out of the window are dropped in one rebuild once this many are stale


class OrderedCell(Text):
    """The time cell, carrying the row's sort order (newest first) for DataTable.sort.

    Cells are `Text`, not `str`: DataTable would parse each str as markup when it measures it.
    """

    def __init__(self, text: str, order: tuple[float, str]) -> None:
        super().__init__(text)
        self.order = order


def _cell(column: str, value: str) -> Text:
    if column == "status":
        style = STATUS_STYLE.get(value) or ("red" if value.isdigit() and int(value) >= 400 else "")
        if value.startswith("pre") and value.endswith("%"):
            style = "yellow"  # llama-server is still reading the prompt
        return Text(value, style=style)
    return Text(value)


class RequestTable(DataTable[Any]):
    """Requests newest first, keyed by id; `show(rows)` diffs against what is on screen."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("cursor_type", "row")
        kw.setdefault("zebra_stripes", True)
        super().__init__(**kw)
        self._cells: dict[str, tuple[str, ...]] = {}

    def on_mount(self) -> None:
        for col in REQUEST_COLUMNS:
            self.add_column(col, key=col)

    def show(self, rows: list[tuple[RequestRecord, Phase]], *, keep_stale: bool = True) -> None:
        """Draw `rows` ((record, phase), newest first). With `keep_stale`, rows that only fell out of the
        window may stay at the bottom until a rebuild is cheaper than removing them one by one."""
        wanted = {r.id: (r, request_row(r, phase)) for r, phase in rows}
        current = set(self._cells)
        stale = current - wanted.keys()
        if len(stale) > STALE_SLACK or (stale and len(stale) == len(current)):
            self.clear()  # one rebuild instead of many remove_row calls (each is O(rows))
            self._cells.clear()
        elif stale and not keep_stale:
            for gone in stale:
                self.remove_row(gone)
                del self._cells[gone]
        added = 0
        for rid, (r, cells) in wanted.items():
            old = self._cells.get(rid)
            if old is None:
                time_cell, *rest = cells
                self.add_row(OrderedCell(time_cell, (r.started_at, r.id)),
                             *(_cell(c, v) for c, v in zip(REQUEST_COLUMNS[1:], rest, strict=True)), key=rid)
                added += 1
            elif old != cells:
                for col, before, after in zip(REQUEST_COLUMNS, old, cells, strict=True):
                    if col != "time" and before != after:
                        # measuring is the costly part of an update: only a longer value can widen its column
                        self.update_cell(rid, col, _cell(col, after), update_width=len(after) > len(before))
            self._cells[rid] = cells
        if added:
            selected = self.cursor_row
            self.sort("time", key=lambda cell: cell.order, reverse=True)
            if selected > 0:  # a user reading row N keeps reading it as new rows come in on top
                self.move_cursor(row=min(selected + added, self.row_count - 1), animate=False)

    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
