"""The live request table and its detail view."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Static

from backend.events import RequestRecord
from tui.format import REQUEST_COLUMNS, curl_command, detail_lines, request_row
from tui.screens.base import PanelScreen


def matches(r: RequestRecord, words: list[str]) -> bool:
    """Every word must appear in the model names, the status or the session id."""
    hay = " ".join(str(x) for x in (r.requested_model, r.routed_model, r.routed_backend, r.status,
                                     r.session_id, "hung" if r.client_hung_up else "",
                                     "error" if r.error else "")).lower()
    return all(w in hay for w in words)


TABLE_ROWS = 200  # rows in the table; the panel keeps ROW_WINDOW records, SQLite keeps the rest
TABLE_SLACK = 150  # rows pushed out of the window are dropped in one rebuild once this many are stale


class OrderedCell(Text):
    """The time cell, carrying the row's sort order (newest first) for DataTable.sort.

    Cells are `Text`, not `str`: DataTable would parse each str as markup when it measures it.
    """

    def __init__(self, text: str, order: tuple[float, str]) -> None:
        super().__init__(text)
        self.order = order


class RequestsScreen(PanelScreen):
    """Newest first; a window of the newest rows (history stays in SQLite)."""

    BINDINGS = [
        Binding("enter", "open_detail", "Detail", id="requests.detail"),
        Binding("slash", "filter", "Filter", id="requests.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="requests.clear_filter"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="filter: model, status or session (Enter applies, Esc clears)", id="filter")
        yield DataTable(id="requests", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in REQUEST_COLUMNS:
            table.add_column(col, key=col)
        self.refresh_view([])
        table.focus()

    @property
    def words(self) -> list[str]:
        return self.query_one("#filter", Input).value.lower().split()

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        """Diff by request id: add the new rows, drop those out of the window, re-sort (no rebuild)."""
        table = self.query_one(DataTable)
        words = self.words
        wanted: dict[str, RequestRecord] = {}
        for r in self.panel.state.records:  # newest first
            if matches(r, words):
                wanted[r.id] = r
                if len(wanted) == TABLE_ROWS:
                    break
        current = {str(k.value) for k in table.rows}
        if current == wanted.keys():
            return
        stale = current - wanted.keys()
        if len(stale) > TABLE_SLACK or (stale and len(stale) == len(current)):
            table.clear()  # one rebuild instead of many remove_row calls (each is O(rows))
            current = set()
        elif stale and not finished:
            for gone in stale:  # a filter change: few rows go
                table.remove_row(gone)
            current -= stale
        added = [r for rid, r in wanted.items() if rid not in current]
        for r in added:
            time_cell, *rest = request_row(r)
            table.add_row(OrderedCell(time_cell, (r.started_at, r.id)), *map(Text, rest), key=r.id)
        if added:
            selected = table.cursor_row
            table.sort("time", key=lambda cell: cell.order, reverse=True)
            if selected > 0:  # a user reading row N keeps reading it as new rows come in on top
                table.move_cursor(row=min(selected + len(added), table.row_count - 1), animate=False)

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self.refresh_view([])

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(DataTable).focus()

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self._open(str(event.row_key.value))

    def action_open_detail(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self._open(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def _open(self, request_id: str) -> None:
        record = next((r for r in self.panel.state.records if r.id == request_id), None)
        if record is None:
            record = self.panel.bridge.backend.record(request_id)
        if record is not None:
            self.app.push_screen(RequestDetail(record, self.panel.proxy_url()))


class RequestDetail(ModalScreen[None]):
    """Everything ccbridge knows about one request; `c` copies a curl line (no key in it)."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Close", id="detail.close"),
        Binding("c", "copy_curl", "Copy as curl", id="detail.copy_curl"),
    ]

    def __init__(self, record: RequestRecord, proxy_url: str) -> None:
        super().__init__()
        self.record = record
        self.curl = curl_command(record, proxy_url)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", justify="right", no_wrap=True)
            grid.add_column(overflow="fold")
            for label, value in detail_lines(self.record):
                grid.add_row(label, Text(value, style="red" if label == "error" and value != "-" else ""))
            yield Static(grid, id="detail-fields")
            yield Static(
                "[b]headers, bodies[/b]  not stored by ccbridge (records keep counts and timings only; "
                "secrets such as x-api-key are never stored)", id="detail-note")
            yield Static(f"[b]curl[/b]  {_escape(self.curl)}", id="detail-curl")
        yield Footer(compact=True)

    def action_copy_curl(self) -> None:
        self.app.copy_to_clipboard(self.curl)
        self.notify("curl command copied (the key is $ANTHROPIC_API_KEY)")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
