"""The live request table: a line-API widget whose rows are drawn once and kept until they change.

Used by the dashboard (the newest requests under the cards) and the requests
screen. Under load the panel flushes a few times a second; a `DataTable`
re-rendered every visible row on each flush (it re-sorts, which drops all its
caches), so a key pressed during a flush waited for the whole table. Here:

- `show(rows)` diffs by request id: unchanged finished records are not even
  formatted again; a row whose cells changed loses its cached lines and only
  its line is refreshed; new or dropped rows re-order the table and refresh
  the visible lines, which are cache hits but for the new ones.
- `render_line` looks a row's `Strip` up by (request id, stripe, cursor): a
  row is drawn once per look (even or odd stripe, under the cursor or not),
  built from plain segments (no Rich layout per cell).
- The whole cache goes only when what every line shares changes: a column
  widening for a longer value, the width, the horizontal scroll, the focus or
  the theme.

The cursor follows the request a user is reading (rows arriving on top push it
down, the view scrolls with it); on the newest row it stays on the newest row,
and a view scrolled down with the wheel keeps showing the rows it showed.
"""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backend.events import RequestRecord
from tui.format import REQUEST_COLUMNS, Phase, request_row

STATUS_STYLE = {"wait": "yellow", "gen": "bold cyan", "hungup": "magenta"}
STALE_SLACK = 150  # rows pushed out of the window may linger at the bottom until this many are stale
PADDING = 1  # cells of space either side of a column
CURSOR = 2  # a line's look: bit 0 the stripe (odd row), bit 1 under the cursor


def status_style(value: str) -> str:
    """The colour of a status cell: waiting, generating, reading the prompt, hung up, an HTTP error."""
    if value.startswith("pre") and value.endswith("%"):
        return "yellow"  # llama-server is still reading the prompt
    return STATUS_STYLE.get(value) or ("red" if value.isdigit() and int(value) >= 400 else "")


class RequestTable(ScrollView, can_focus=True):
    """Requests newest first, keyed by id; `show(rows)` diffs against what is on screen."""

    ALLOW_SELECT = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False, id="request_table.select"),
        Binding("up", "cursor_up", "Cursor up", show=False, id="request_table.up"),
        Binding("down", "cursor_down", "Cursor down", show=False, id="request_table.down"),
        Binding("pageup", "cursor_page_up", "Page up", show=False, id="request_table.page_up"),
        Binding("pagedown", "cursor_page_down", "Page down", show=False, id="request_table.page_down"),
        Binding("home,ctrl+home", "cursor_first", "Newest", show=False, id="request_table.first"),
        Binding("end,ctrl+end", "cursor_last", "Oldest", show=False, id="request_table.last"),
        Binding("left", "scroll_left", "Scroll left", show=False, id="request_table.left"),
        Binding("right", "scroll_right", "Scroll right", show=False, id="request_table.right"),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "request-table--header",
        "request-table--cursor",
        "request-table--even-row",
        "request-table--odd-row",
    }

    # DataTable's look (textual/widgets/_data_table.py), so the table reads as it did
    DEFAULT_CSS = """
    RequestTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;

        &:focus {
            background-tint: $foreground 5%;
            & > .request-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .request-table--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark {
            & > .request-table--even-row {
                background: $surface-darken-1 40%;
            }
        }
        & > .request-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .request-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .request-table--odd-row {
        }
        & > .request-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .request-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class RowSelected(Message):
        """Enter, or a click on the highlighted row: the user wants this request."""

        def __init__(self, table: RequestTable, request_id: str, row: int) -> None:
            super().__init__()
            self.table = table
            self.request_id = request_id
            self.row = row

        @property
        def control(self) -> RequestTable:
            return self.table

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.cursor_row = 0
        self.renders = 0
        """Rows drawn into strips since mount (cache misses): what a flush costs, for tests and benches."""
        self._order: list[str] = []  # request ids, newest first
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple[str, ...]] = {}
        self._keys: dict[str, tuple[float, str]] = {}  # sort order: (started_at, id), newest first
        self._source: dict[str, tuple[RequestRecord, Phase]] = {}  # what each row was formatted from
        self._widths = [cell_len(label) for label in REQUEST_COLUMNS]
        self._lines: dict[str, dict[int, Strip]] = {}  # request id -> look -> its line, cut to the view
        self._header: Strip | None = None
        self._looks: dict[int, tuple[Style, Style]] = {}  # look -> (style under the cells, style over them)
        self._geometry: tuple[object, ...] = ()  # what the cached lines were drawn for

    # -- what screens and tests read ------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._order)

    def row_ids(self) -> list[str]:
        """The request ids in table order, newest first."""
        return list(self._order)

    def row_cells(self, request_id: str) -> tuple[str, ...] | None:
        """The cells the row of `request_id` shows (under REQUEST_COLUMNS), or None when it has no row."""
        return self._cells.get(request_id)

    def selected_id(self) -> str | None:
        return self._order[self.cursor_row] if self._order else None

    # -- data --------------------------------------------------------------------------
    def show(self, rows: list[tuple[RequestRecord, Phase]], *, keep_stale: bool = True) -> None:
        """Draw `rows` ((record, phase), newest first). With `keep_stale`, rows that only fell out of the
        window stay at the bottom until STALE_SLACK of them have (or all rows were replaced)."""
        wanted: dict[str, tuple[RequestRecord, Phase]] = {r.id: (r, phase) for r, phase in rows}
        stale = self._cells.keys() - wanted.keys()
        drop = stale if (not keep_stale or len(stale) > STALE_SLACK or len(stale) == len(self._cells)) else ()
        reorder = bool(drop)
        for rid in drop:
            del self._cells[rid], self._keys[rid], self._source[rid]
            self._forget(rid)
        changed: list[str] = []
        widened = False
        for rid, (r, phase) in wanted.items():
            before = self._source.get(rid)
            if before is not None and before[0] is r and before[1] == phase:
                continue  # a finished record that did not change: not even formatted again
            self._source[rid] = (r, phase)
            cells = request_row(r, phase)
            key = (r.started_at, rid)
            old = self._cells.get(rid)
            if old == cells and self._keys[rid] == key:
                continue
            if old is None or self._keys[rid] != key:
                reorder = True
            else:
                changed.append(rid)
            self._cells[rid] = cells
            self._keys[rid] = key
            self._forget(rid)
            for i, value in enumerate(cells):
                if (width := cell_len(value)) > self._widths[i]:
                    self._widths[i] = width
                    widened = True
        if widened:  # every line's cells move: draw all again (rare: widths only grow)
            self._clear_lines()
            self._resize()
        if reorder:
            self._reorder()
        elif not widened:
            for rid in changed:
                self._refresh_row(self._index[rid])
        if widened or reorder:
            self.refresh()

    def _reorder(self) -> None:
        # A user reading row N keeps reading it as new rows come in on top: the row under the cursor, or
        # with the cursor on the newest row, the top row of a view scrolled down. On the newest row with
        # the view at the top, the table shows the newest requests as they come.
        top = round(self.scroll_y)
        anchor = self.cursor_row if self.cursor_row > 0 else top if top > 0 else None
        anchor_id = self._order[anchor] if anchor is not None and anchor < len(self._order) else None
        self._order = sorted(self._cells, key=self._keys.__getitem__, reverse=True)
        self._index = {rid: i for i, rid in enumerate(self._order)}
        self._resize()
        if anchor is not None and anchor_id in self._index:
            shift = self._index[anchor_id] - anchor
            if self.cursor_row > 0:
                self.cursor_row += shift
            if shift:
                self.scroll_to(y=self.scroll_y + shift, animate=False, force=True)
        self.cursor_row = min(self.cursor_row, max(0, len(self._order) - 1))

    def _resize(self) -> None:
        size = Size(sum(self._widths) + 2 * PADDING * len(self._widths), len(self._order) + 1)  # + the header
        if size != self.virtual_size:
            self.virtual_size = size

    # -- drawing -----------------------------------------------------------------------
    def _forget(self, rid: str) -> None:
        self._lines.pop(rid, None)

    def _clear_lines(self) -> None:
        self._lines.clear()
        self._header = None

    def notify_style_update(self) -> None:
        # Textual calls this on every screen switch, mostly with the same styles: the lines go only if
        # the looks they were drawn with changed (render_lines compares them)
        super().notify_style_update()
        self._looks.clear()
        self.refresh()

    def _refresh_row(self, row: int) -> None:
        self.refresh_line(row + 1)  # line 0 is the header

    def render_lines(self, crop: Region) -> list[Strip]:
        geometry = (self.size.width, self.scroll_offset.x, *(self._look(look) for look in range(2 * CURSOR)),
                    self.get_component_rich_style("request-table--header"))
        if geometry != self._geometry:  # what every cached line was cut or styled for
            self._geometry = geometry
            self._clear_lines()
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            if self._header is None:
                style = self.get_component_rich_style("request-table--header")
                self._header = self._draw(REQUEST_COLUMNS, style, Style.null(), scroll_x, width, header=True)
            return self._header
        row = scroll_y + y - 1
        if row >= len(self._order):
            return Strip.blank(width, self.rich_style)
        rid = self._order[row]
        look = (row % 2) | (CURSOR if row == self.cursor_row else 0)
        lines = self._lines.setdefault(rid, {})
        line = lines.get(look)
        if line is None:
            self.renders += 1
            under, over = self._look(look)
            line = lines[look] = self._draw(self._cells[rid], under, over, scroll_x, width)
        return line

    def _look(self, look: int) -> tuple[Style, Style]:
        """The style under a row's cells and the one over them (the cursor's colour wins over a status's)."""
        if look not in self._looks:
            under = self.get_component_rich_style("request-table--odd-row" if look & 1 else "request-table--even-row")
            over = Style.null()
            if look & CURSOR:
                cursor = self.get_component_rich_style("request-table--cursor")
                under += cursor
                over = Style.from_color(color=cursor.color)
            self._looks[look] = (under, over)
        return self._looks[look]

    def _draw(self, cells: tuple[str, ...], under: Style, over: Style, scroll_x: int, width: int,
              header: bool = False) -> Strip:
        plain = under + over
        pad = " " * PADDING
        segments: list[Segment] = []
        for column, value, column_width in zip(REQUEST_COLUMNS, cells, self._widths, strict=True):
            colour = "" if header or column != "status" else status_style(value)
            segments.append(Segment(pad, plain))
            segments.append(Segment(value, under + Style.parse(colour) + over if colour else plain))
            segments.append(Segment(" " * (column_width - cell_len(value)) + pad, plain))
        return Strip(segments).crop_extend(scroll_x, scroll_x + width, under).simplify()

    # -- the cursor --------------------------------------------------------------------
    def _visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _scroll_cursor_into_view(self) -> None:
        top = round(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, force=True)
        elif self.cursor_row >= top + self._visible_rows():
            self.scroll_to(y=self.cursor_row - self._visible_rows() + 1, animate=False, force=True)

    def move_cursor(self, row: int) -> None:
        """Put the cursor on `row` (clamped to the table) and scroll it into view."""
        if not self._order:
            return
        row = max(0, min(row, len(self._order) - 1))
        if row != self.cursor_row:
            self._refresh_row(self.cursor_row)
            self.cursor_row = row
            self._refresh_row(row)
        self._scroll_cursor_into_view()

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_cursor_page_up(self) -> None:
        page = self._visible_rows()
        self.scroll_to(y=self.scroll_y - page, animate=False, force=True)
        self.move_cursor(self.cursor_row - page)

    def action_cursor_page_down(self) -> None:
        page = self._visible_rows()
        self.scroll_to(y=self.scroll_y + page, animate=False, force=True)
        self.move_cursor(self.cursor_row + page)

    def action_cursor_first(self) -> None:
        self.move_cursor(0)

    def action_cursor_last(self) -> None:
        self.move_cursor(len(self._order) - 1)

    def action_select_cursor(self) -> None:
        if self._order:
            self.post_message(self.RowSelected(self, self._order[self.cursor_row], self.cursor_row))

    def on_click(self, event: events.Click) -> None:
        """A click highlights its row; a click on the highlighted row selects it (as DataTable did)."""
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        row = round(self.scroll_y) + offset.y - 1
        if row >= len(self._order):
            return
        event.stop()
        if row == self.cursor_row:
            self.action_select_cursor()
        else:
            self.move_cursor(row)
