"""The request table on its own: rows drawn once and cached, only changed rows redrawn, a cursor that follows
the request a user reads, Enter and clicks selecting, the keys."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from textual.app import App, ComposeResult

from backend.events import RequestRecord
from tests.tui.fixed import NOW, fixed_app
from tui.format import REQUEST_COLUMNS, Phase
from tui.screens.requests import RequestDetail
from tui.widgets.request_table import RequestTable

Rows = list[tuple[RequestRecord, Phase]]
DUR = REQUEST_COLUMNS.index("dur")


def record(i: int, **kw: object) -> RequestRecord:
    fields: dict = dict(id=f"r{i:03d}", started_at=NOW + i, method="POST", path="/v1/messages",
                        session_id="5f1c2a9e-aaaa", requested_model="claude-opus-4-8", routed_backend="local",
                        status=200, input_tokens=1500, output_tokens=20, ttft_ms=90.0, duration_ms=400.0)
    fields.update(kw)
    return RequestRecord(**fields)


def newest_first(records: list[RequestRecord]) -> Rows:
    return [(r, "done") for r in sorted(records, key=lambda r: r.started_at, reverse=True)]


class TableApp(App[None]):
    def __init__(self, rows: Rows) -> None:
        super().__init__()
        self.rows = rows
        self.selected: list[tuple[str, int]] = []

    def compose(self) -> ComposeResult:
        yield RequestTable()

    def on_mount(self) -> None:
        self.query_one(RequestTable).show(self.rows)
        self.query_one(RequestTable).focus()

    def on_request_table_row_selected(self, event: RequestTable.RowSelected) -> None:
        self.selected.append((event.request_id, event.row))


def run(app: TableApp, drive, size: tuple[int, int] = (100, 12)) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await drive(pilot, app.query_one(RequestTable))

    asyncio.run(go())


def count_lines(table: RequestTable) -> list[int]:
    """Every y the table's render_line is asked for from now on."""
    asked: list[int] = []
    render_line = table.render_line

    def counted(y: int):  # type: ignore[no-untyped-def]
        asked.append(y)
        return render_line(y)

    table.render_line = counted  # type: ignore[method-assign]
    return asked


def test_an_update_redraws_only_that_row_and_a_repaint_draws_nothing():
    records = [record(i) for i in range(30)]
    in_flight = record(29, status=None, duration_ms=1000.0)
    rows = newest_first([*records[:29], in_flight])

    async def drive(pilot, table: RequestTable) -> None:
        drawn = table.renders
        assert drawn == 11  # the visible rows: 12 lines, the header and 11 rows
        asked = count_lines(table)
        # a flush: the same records, the one in flight has run a second longer
        table.show([(replace(in_flight, duration_ms=2000.0), "waiting"), *rows[1:]])
        await pilot.pause()
        assert table.renders == drawn + 1
        assert asked == [1]  # the screen asked for that row's line only (line 0 is the header)
        assert table.row_cells("r029")[DUR] == "2.0"
        # the same rows again: nothing to format, nothing to draw
        asked.clear()
        table.show([(replace(in_flight, duration_ms=2000.0), "waiting"), *rows[1:]])
        await pilot.pause()
        assert table.renders == drawn + 1 and asked == []
        # a full repaint (another screen was on top, say) takes every line from the cache
        table.refresh()
        await pilot.pause()
        assert table.renders == drawn + 1 and len(asked) == 12  # the header and 11 rows

    run(TableApp(rows), drive)


def test_new_rows_on_top_draw_only_the_new_rows_once_both_stripes_are_cached():
    records = [record(i) for i in range(40)]

    async def drive(pilot, table: RequestTable) -> None:
        table.show(newest_first(records[:30]))
        await pilot.pause()
        for n in (31, 32, 33, 34):  # one new request per flush: the stripes of the rows below swap each time
            table.show(newest_first(records[:n]))
            await pilot.pause()
        drawn = table.renders
        table.show(newest_first(records[:36]))  # two more: the rows below keep their stripe, all cached
        await pilot.pause()
        assert table.renders == drawn + 3  # the two new rows, and the one that was under the cursor
        assert table.row_ids()[:3] == ["r035", "r034", "r033"]

    run(TableApp(newest_first(records[:30])), drive)


def test_the_cursor_stays_on_the_request_being_read_as_rows_arrive_on_top():
    records = [record(i) for i in range(60)]

    async def drive(pilot, table: RequestTable) -> None:
        await pilot.press("down", "down", "down")
        assert table.cursor_row == 3 and table.selected_id() == "r046"
        scroll = table.scroll_y
        table.show(newest_first(records[:53]))  # three newer requests
        await pilot.pause()
        assert table.selected_id() == "r046" and table.cursor_row == 6
        assert table.scroll_y == scroll + 3  # the row stays where the user's eyes are
        # on the newest row the cursor stays on the newest row
        await pilot.press("home")
        table.show(newest_first(records[:55]))
        await pilot.pause()
        assert table.cursor_row == 0 and table.selected_id() == "r054" and table.scroll_y == 0
        # a view scrolled down with the wheel stays on the rows it shows
        table.scroll_to(y=5, animate=False)  # as the wheel does: the cursor stays where it is
        await pilot.pause()
        top = table.scroll_y
        assert top == 5
        shown = table.render_line(1).text
        table.show(newest_first(records[:57]))
        await pilot.pause()
        assert table.scroll_y == top + 2 and table.render_line(1).text == shown
        assert table.cursor_row == 0 and table.selected_id() == "r056"

    run(TableApp(newest_first(records[:50])), drive)


def test_enter_and_a_click_on_the_highlighted_row_post_the_selection():
    rows = newest_first([record(i) for i in range(20)])

    async def drive(pilot, table: RequestTable) -> None:
        await pilot.press("down", "enter")
        assert pilot.app.selected == [("r018", 1)]
        await pilot.click(RequestTable, offset=(5, 4))  # line 4: the header, then rows 0..3
        assert table.cursor_row == 3 and table.selected_id() == "r016"
        assert pilot.app.selected == [("r018", 1)]  # a first click highlights
        await pilot.click(RequestTable, offset=(30, 4))
        assert pilot.app.selected == [("r018", 1), ("r016", 3)]  # a second one selects
        await pilot.click(RequestTable, offset=(5, 0))  # the header selects nothing
        assert table.cursor_row == 3 and len(pilot.app.selected) == 2

    run(TableApp(rows), drive)


def test_page_keys_home_and_end():
    rows = newest_first([record(i) for i in range(50)])

    async def drive(pilot, table: RequestTable) -> None:
        await pilot.press("pagedown")
        assert table.cursor_row == 11 and table.scroll_y == 11  # 12 lines: the header and 11 rows
        await pilot.press("pagedown", "pageup")
        assert table.cursor_row == 11
        await pilot.press("end")
        assert table.cursor_row == 49 and table.selected_id() == "r000"
        assert table.scroll_y == table.max_scroll_y
        await pilot.press("up")
        assert table.cursor_row == 48
        await pilot.press("home")
        assert table.cursor_row == 0 and table.scroll_y == 0
        await pilot.press("up")
        assert table.cursor_row == 0

    run(TableApp(rows), drive)


def test_a_longer_value_widens_its_column_and_stale_rows_go_when_asked():
    records = [record(i) for i in range(5)]

    async def drive(pilot, table: RequestTable) -> None:
        narrow = table.virtual_size.width
        wide = record(5, output_tokens=123_456_789)  # "123457k": wider than "out"
        table.show(newest_first([*records, wide]))
        await pilot.pause()
        assert table.virtual_size.width == narrow + len("123457k") - len("out")
        header = table.render_line(0).text
        assert header.index(" ttft ") - header.index(" out ") == len(" 123457k ")
        wider = replace(records[4], input_tokens=123_456_789)  # a row already shown gets a longer value
        table.show(newest_first([*records[:4], wider, wide]))
        await pilot.pause()
        assert table.virtual_size.width == narrow + len("123457k") - len("out") + len("123457k") - len("1.5k")
        header, row = table.render_line(0).text, table.render_line(2).text
        assert row.index("123457k") == header.index(" in ") + 1
        assert header.index("cached") - header.index(" in ") == len(" 123457k  ")
        records[4] = wider
        table.show(newest_first(records[3:]))  # the window moved: old rows may stay at the bottom
        assert table.row_count == 6
        table.show(newest_first(records[3:]), keep_stale=False)  # a new filter: exactly these rows
        assert table.row_ids() == ["r004", "r003"]

    run(TableApp(newest_first(records)), drive)


def test_enter_on_the_requests_screen_opens_the_detail_of_the_highlighted_request():
    app = fixed_app()

    async def drive() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2", "down", "enter")
            await pilot.pause()
            for _ in range(20):
                if isinstance(app.screen, RequestDetail):
                    break
                await pilot.pause(0.1)
            assert isinstance(app.screen, RequestDetail) and app.screen.record.id == "req-0005"

    asyncio.run(drive())


def test_the_cursor_row_changes_look_when_the_table_loses_focus():
    rows = newest_first([record(i) for i in range(5)])

    async def drive(pilot, table: RequestTable) -> None:
        focused = table.render_line(1)
        pilot.app.set_focus(None)
        await pilot.pause()
        blurred = table.render_line(1)
        assert blurred.text == focused.text and blurred != focused
        assert table.render_line(2) != focused  # the row below never had the cursor's look
        table.focus()
        await pilot.pause()
        assert table.render_line(1) == focused

    run(TableApp(rows), drive)


def test_a_narrow_table_scrolls_sideways():
    rows = newest_first([record(i) for i in range(5)])

    async def drive(pilot, table: RequestTable) -> None:
        assert table.render_line(0).text.startswith(" time ")
        await pilot.press("right", "right")
        assert table.scroll_x == 2
        assert table.render_line(0).text.startswith("ime ") and table.render_line(1).text.startswith("1:")
        await pilot.press("left", "left")
        assert table.render_line(0).text.startswith(" time ")

    run(TableApp(rows), drive, size=(60, 12))


