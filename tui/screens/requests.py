"""The live request table and its detail view."""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Header, Input, Label, Static

from backend.events import RequestRecord
from backend.export import write_records
from backend.store.history import RequestBodies
from tui.format import Phase, body_preview, curl_command, detail_lines
from tui.screens.base import PanelScreen
from tui.widgets.footer import SteadyFooter
from tui.widgets.request_table import RequestTable


def matches(r: RequestRecord, words: list[str]) -> bool:
    """Every word must appear in the model names, the status or the session id."""
    hay = " ".join(str(x) for x in (r.requested_model, r.routed_model, r.routed_backend, r.status,
                                     r.session_id, "hung" if r.client_hung_up else "",
                                     "error" if r.error else "")).lower()
    return all(w in hay for w in words)


TABLE_ROWS = 200  # rows in the table; the panel keeps ROW_WINDOW records, SQLite keeps the rest


class RequestsScreen(PanelScreen):
    """Newest first, requests in flight included; a window of the newest rows (history stays in SQLite)."""

    BINDINGS = [
        Binding("enter", "open_detail", "Detail", id="requests.detail"),
        Binding("slash", "filter", "Filter", id="requests.filter"),
        Binding("e", "export", "Export", id="requests.export"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="requests.clear_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._refiltered = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="filter-bar"):
            yield Input(placeholder="filter: model, status or session (Enter applies, Esc clears)", id="filter")
        yield RequestTable(id="requests")
        yield SteadyFooter(compact=True)

    def on_mount(self) -> None:
        self.refresh_view([])
        self.query_one(RequestTable).focus()

    @property
    def words(self) -> list[str]:
        return self.query_one("#filter", Input).value.lower().split()

    def shown(self) -> list[tuple[RequestRecord, Phase]]:
        """The rows the filter lets through, newest first (what `e` exports)."""
        words = self.words
        return self.panel.state.live(TABLE_ROWS, (lambda r: matches(r, words)) if words else None)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        # after a filter change every row that no longer matches goes; otherwise old rows may linger a while
        self.query_one(RequestTable).show(self.shown(), keep_stale=not self._refiltered)
        self._refiltered = False

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(RequestTable).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self) -> None:
        self._refiltered = True
        self.refresh_view([])

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(RequestTable).focus()

    @on(RequestTable.RowSelected)
    def _row_selected(self, event: RequestTable.RowSelected) -> None:
        self._open(event.request_id)

    def action_open_detail(self) -> None:
        request_id = self.query_one(RequestTable).selected_id()
        if request_id:
            self._open(request_id)

    def _open(self, request_id: str) -> None:
        self.panel.open_request(request_id)

    def action_export(self) -> None:
        records = [r for r, phase in self.shown() if phase == "done"]
        if not records:
            self.notify("nothing to export: no finished request matches the filter", severity="warning")
            return

        def chosen(path: str | None) -> None:
            if path:
                self._export(records, path)

        self.app.push_screen(ExportDialog(default_export_path(), len(records)), chosen)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, records: list[RequestRecord], path: str) -> None:
        try:
            written, fmt = export_file(records, Path(path).expanduser())
        except (OSError, ValueError) as exc:
            self.app.call_from_thread(self.notify, f"not exported: {exc}", severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, f"exported {written} requests to {path} ({fmt})", markup=False)


def default_export_path() -> str:
    return f"ccbridge-requests-{time.strftime('%Y%m%d-%H%M%S')}.csv"


def export_file(records: list[RequestRecord], path: Path) -> tuple[int, str]:
    """Write `records` (oldest first) to `path`: CSV for *.csv, JSON lines otherwise."""
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    with open(path, "w", newline="", encoding="utf-8") as out:
        written = write_records(sorted(records, key=lambda r: r.started_at), fmt, out)
    return written, fmt


class ExportDialog(ModalScreen[str | None]):
    """Where to write the requests the filter shows (.csv: CSV, anything else: JSON lines)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="export.cancel")]

    def __init__(self, default: str, count: int) -> None:
        super().__init__()
        self.default, self.count = default, count

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label(f"Export the {self.count} finished requests the filter shows to (.csv or .jsonl):")
            yield Input(self.default, id="export-path")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#export-ok")
    def _ok(self) -> None:
        path = self.query_one("#export-path", Input).value.strip()
        self.dismiss(path or None)

    @on(Button.Pressed, "#export-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class RequestDetail(ModalScreen[None]):
    """Everything ccbridge knows about one request, its bodies when they were kept; `c` copies a curl
    command that sends the request again (the key stays `$ANTHROPIC_AUTH_TOKEN`)."""

    BINDINGS = [
        Binding("escape,q", "dismiss", "Close", id="detail.close"),
        Binding("c", "copy_curl", "Copy as curl", id="detail.copy_curl"),
    ]

    def __init__(self, record: RequestRecord, proxy_url: str, bodies: RequestBodies | None = None) -> None:
        super().__init__()
        self.record = record
        self.bodies = bodies
        self.curl = curl_command(record, proxy_url, bodies.request if bodies else None,
                                 cut=bool(bodies and len(bodies.request) < bodies.request_bytes))

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            grid = Table.grid(padding=(0, 2))
            grid.add_column(style="bold", justify="right", no_wrap=True)
            grid.add_column(overflow="fold")
            for label, value in detail_lines(self.record):
                grid.add_row(label, Text(value, style="red" if label == "error" and value != "-" else ""))
            yield Static(grid, id="detail-fields")
            if self.bodies is None:
                yield Static("[b]bodies[/b]  not kept for this request (history.bodies in ccbridge.yaml; headers "
                             "such as x-api-key are never stored)", id="detail-note")
            else:
                b = self.bodies
                yield Static(f"[b]request[/b] as the client sent it, {b.request_bytes:,} bytes (secrets blanked)",
                             classes="detail-head")
                yield Static(Text(body_preview(b.request, b.request_bytes)), id="detail-request")
                yield Static(f"[b]answer[/b] as the client got it, {b.response_bytes:,} bytes", classes="detail-head")
                yield Static(Text(body_preview(b.response, b.response_bytes)), id="detail-response")
            yield Static(Text.assemble(("curl  ", "bold"), self.curl[:2000] + ("..." if len(self.curl) > 2000 else "")),
                         id="detail-curl")
        yield SteadyFooter(compact=True)

    def action_copy_curl(self) -> None:
        self.app.copy_to_clipboard(self.curl)
        if self.curl.startswith("#"):
            self.notify(self.curl.lstrip("# "), severity="warning", markup=False)
        else:
            self.notify("curl command copied: it sends the request again (the key is $ANTHROPIC_AUTH_TOKEN)")
