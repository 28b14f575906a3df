"""The first screen: service cards, the live request log, throughput, latency, the lines for Claude Code."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Label, Sparkline, Static

from backend.events import RequestRecord
from tui.format import num, secs
from tui.screens.base import PanelScreen
from tui.screens.gpu import dashboard_card
from tui.widgets.cards import ServiceCard
from tui.widgets.footer import SteadyFooter
from tui.widgets.request_table import RequestTable
from tui.widgets.steady import put

LIVE_ROWS = 60  # the dashboard's log: the newest requests (the requests screen keeps more)


def stats_line(metrics: dict[str, Any]) -> str:
    """The numbers the backend folded (`backend.metrics`): the same as the status API and /metrics show."""
    return (f"req/min {metrics.get('requests_per_min', 0)}   in flight {metrics.get('in_flight', 0)}   "
            f"TTFT p50 {secs(metrics.get('ttft_p50_ms'))} p95 {secs(metrics.get('ttft_p95_ms'))}   "
            f"total {num(metrics.get('requests_total', 0))}")


def chart_label(name: str, series: list[float], minute: float | None) -> str:
    """`output 12.3 tok/s (1 min)  peak 40.0`: the chart covers five minutes, the figure the last one."""
    return f"{name} {minute or 0:,.1f} tok/s (1 min)  peak {max(series, default=0):,.1f}"


class DashboardScreen(PanelScreen):
    """Cards per service, the newest requests as they stream, tokens/s over five minutes, the env lines."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="error", markup=False)
        yield Horizontal(id="cards")
        yield Static(id="stats", markup=False)
        with Horizontal(id="charts"):
            with Vertical():
                yield Label("output tok/s", id="out-label")
                yield Sparkline([], id="out-chart")
            with Vertical():
                yield Label("prompt tok/s", id="in-label")
                yield Sparkline([], id="in-chart")
        yield RequestTable(id="live")
        env = Static(id="env", classes="env", markup=False)
        env.border_title = "for Claude Code (ctrl+p: Copy env lines)"
        yield env
        yield SteadyFooter(compact=True)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        state = self.panel.state
        now = state.clock()
        error = self.query_one("#error", Static)
        error.display = bool(self.panel.backend_error)
        put(error, f"ccbridge: {self.panel.backend_error}" if self.panel.backend_error else "")
        cards = self.query_one("#cards", Horizontal)
        services = list(state.status.get("services", []))
        gpu = state.status.get("monitor")
        names = [s["name"] for s in services]
        have = [c.service_name for c in cards.query(ServiceCard)]
        if have != names:
            cards.remove_children()
            model = Static(id="card-model", classes="model-card", markup=False)
            model.border_title = "llama-server / GPU (5)"
            cards.mount_all([*(ServiceCard(n, id=f"card-{n.replace(':', '-')}") for n in names), model])
            self.call_after_refresh(self.refresh_view, [])
            return
        for card, svc in zip(cards.query(ServiceCard), services, strict=True):
            card.show(svc, now, state.shown_state(svc))
        put(self.query_one("#card-model", Static), dashboard_card(gpu), fixed=True)
        metrics = state.metrics
        out = list(metrics.get("output_tps_series") or [])
        prompt = list(metrics.get("prompt_tps_series") or [])
        self.query_one("#out-chart", Sparkline).data = out
        self.query_one("#in-chart", Sparkline).data = prompt
        # the labels are as wide as their text (a longer one may use the gap); the stats line is one row wide
        put(self.query_one("#out-label", Label), chart_label("output", out, metrics.get("output_tps")))
        put(self.query_one("#in-label", Label), chart_label("prompt", prompt, metrics.get("prompt_tps")))
        put(self.query_one("#stats", Static), stats_line(metrics), fixed=True)
        rows = state.live(LIVE_ROWS)
        self.query_one("#live", RequestTable).show(rows)
        env = self.query_one("#env", Static)
        lines = self.panel.env_lines()
        if len(lines) > 4:  # 80x24 has room for four: the ones that connect, then where the rest are
            lines = [*lines[:3], f"+ {len(lines) - 3} more: ctrl+p Copy env lines; `ccbridge claude` sets all"]
        # Until the first request the lines are the next step; after it, one line is enough.
        put(env, "\n".join(lines) if not rows else f"{lines[0]}   (ctrl+p: Copy env lines)")
        env.set_class(bool(rows), "-compact")

    @on(RequestTable.RowSelected, "#live")
    def _open(self, event: RequestTable.RowSelected) -> None:
        self.panel.open_request(event.request_id)
