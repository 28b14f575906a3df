"""The alias table: add, edit, delete, reorder; each row checked before it is saved."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Header, Input, Label, Static

from backend.config import ConfigError
from backend.config.aliases import parse_alias_target, validate_pattern
from backend.events import RequestRecord
from tui.screens.base import PanelScreen


def check_rule(pattern: str, target: str, backends: list[str]) -> str | None:
    """Why this rule cannot be saved, or None."""
    problem = validate_pattern(pattern)
    if problem:
        return f"pattern: {problem}"
    try:
        parse_alias_target(target, backends)
    except ValueError as exc:
        return f"target: {exc}"
    return None


class AliasEditor(ModalScreen[tuple[str, str] | None]):
    """One rule; the reason it is wrong shows under the fields as you type."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="alias_editor.cancel")]

    def __init__(self, pattern: str, target: str, backends: list[str]) -> None:
        super().__init__()
        self.pattern, self.target, self.backends = pattern, target, backends

    def compose(self) -> ComposeResult:
        with Vertical(id="alias-editor", classes="dialog"):
            yield Label("Claude model name pattern (* and ? are wildcards)")
            yield Input(self.pattern, id="pattern")
            yield Label(f"target: a backend ({', '.join(self.backends)}), backend/model, or [a, b] (a group)")
            yield Input(self.target, id="target")
            yield Static("", id="problem", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self._check()

    @on(Input.Changed)
    def _check(self) -> bool:
        problem = check_rule(self.query_one("#pattern", Input).value,
                             self.query_one("#target", Input).value, self.backends)
        self.query_one("#problem", Static).update(problem or "")
        self.query_one("#ok", Button).disabled = problem is not None
        return problem is None

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        if self._check():
            self.dismiss((self.query_one("#pattern", Input).value, self.query_one("#target", Input).value))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


class AliasesScreen(PanelScreen):
    """Edits are kept here until saved (ctrl+s); saving applies them to the next request."""

    BINDINGS = [
        Binding("a", "add", "Add", id="aliases.add"),
        Binding("e,enter", "edit", "Edit", id="aliases.edit"),
        Binding("x,delete", "delete", "Delete", id="aliases.delete"),
        Binding("shift+up,K", "move(-1)", "Up", id="aliases.move_up"),
        Binding("shift+down,J", "move(1)", "Down", id="aliases.move_down"),
        Binding("m", "map_unknown", "Map unknown", id="aliases.map_unknown"),
        Binding("ctrl+s", "save", "Save", id="aliases.save"),
        Binding("u", "revert", "Revert", show=False, id="aliases.revert"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rules: list[tuple[str, str]] = []
        self.dirty = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="alias-state")
        yield DataTable(id="aliases", cursor_type="row")
        yield Label("Models Claude Code asked for that matched nothing (m maps the selected one):", id="unknown-label")
        yield DataTable(id="unknown", cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#aliases", DataTable).add_columns("#", "pattern", "target")
        self.query_one("#unknown", DataTable).add_columns("model", "times", "last asked")
        self.refresh_view([])
        self.query_one("#aliases", DataTable).focus()

    @property
    def backends(self) -> list[str]:
        return [b["name"] for b in self.panel.state.status.get("backends", [])]

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        status = self.panel.state.status
        if not self.dirty:
            self.rules = [(a["pattern"], a["target"]) for a in status.get("aliases", [])]
        self._draw()
        unknown = self.query_one("#unknown", DataTable)
        models = status.get("unknown_models", [])
        if [str(k.value) for k in unknown.rows] != [m["model"] for m in models]:
            from tui.format import hms

            unknown.clear()
            for m in models:
                unknown.add_row(m["model"], str(m.get("count", "")), hms(m.get("last_seen")), key=m["model"])

    def _draw(self, cursor: int | None = None) -> None:
        table = self.query_one("#aliases", DataTable)
        rows = [(str(i + 1), p, t) for i, (p, t) in enumerate(self.rules)]
        if [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)] != rows:
            keep = table.cursor_row if cursor is None else cursor
            table.clear()
            for row in rows:
                table.add_row(*row)
            if rows:
                table.move_cursor(row=max(0, min(keep, len(rows) - 1)), animate=False)
        self.query_one("#alias-state", Static).update(
            "[b yellow]unsaved changes[/]: ctrl+s saves and applies to the next request, u reverts"
            if self.dirty else "saved in ccbridge.yaml; exact names win, patterns in order, \"*\" last")

    def _changed(self, cursor: int | None = None) -> None:
        self.dirty = True
        self._draw(cursor)

    @property
    def _row(self) -> int:
        return self.query_one("#aliases", DataTable).cursor_row

    def action_add(self, pattern: str = "", target: str | None = None) -> None:
        default = target if target is not None else (self.backends[0] if self.backends else "")

        def done(rule: tuple[str, str] | None) -> None:
            if rule:
                self.rules.insert(0, rule)  # first: a new rule should win over older patterns
                self._changed(0)

        self.app.push_screen(AliasEditor(pattern, default, self.backends), done)

    def action_edit(self) -> None:
        if not self.rules:
            return
        row = self._row

        def done(rule: tuple[str, str] | None) -> None:
            if rule:
                self.rules[row] = rule
                self._changed(row)

        self.app.push_screen(AliasEditor(*self.rules[row], self.backends), done)

    def action_delete(self) -> None:
        if self.rules:
            del self.rules[self._row]
            self._changed()

    def action_move(self, step: int) -> None:
        row = self._row
        new = row + step
        if self.rules and 0 <= new < len(self.rules):
            self.rules[row], self.rules[new] = self.rules[new], self.rules[row]
            self._changed(new)

    def action_map_unknown(self) -> None:
        unknown = self.query_one("#unknown", DataTable)
        if unknown.row_count:
            model = str(unknown.coordinate_to_cell_key(unknown.cursor_coordinate).row_key.value)
            self.action_add(model)

    def action_revert(self) -> None:
        self.dirty = False
        self.refresh_view([])

    def action_save(self) -> None:
        for pattern, target in self.rules:
            problem = check_rule(pattern, target, self.backends)
            if problem:
                self.notify(f"{pattern!r}: {problem}", severity="error", title="not saved", markup=False)
                return
        self._save(list(self.rules))

    @work(exclusive=True, group="aliases")
    async def _save(self, rules: list[tuple[str, str]]) -> None:
        try:
            await self.panel.control.save_aliases(rules)
        except ConfigError as exc:
            self.notify(str(exc), severity="error", title="not saved", markup=False)
            return
        self.dirty = False
        self.notify("aliases saved; the next request uses them")
        self.panel.poll_status()
