"""The first screen: service cards, throughput, latency, the lines for Claude Code."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Label, Sparkline, Static

from backend.events import RequestRecord
from tui.format import num, secs
from tui.screens.base import PanelScreen
from tui.screens.gpu import dashboard_card
from tui.widgets.cards import ServiceCard


class DashboardScreen(PanelScreen):
    """Cards per service, tokens/s over the last five minutes, and the env lines."""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="error", markup=False)
        yield Horizontal(id="cards")
        yield Static(id="stats", markup=False)
        with Vertical(id="charts"):
            yield Label("output tokens/s (5 min)", id="out-label")
            yield Sparkline([], id="out-chart")
            yield Label("prompt tokens/s (5 min)", id="in-label")
            yield Sparkline([], id="in-chart")
        env = Static(id="env", classes="env", markup=False)
        env.border_title = "for Claude Code (ctrl+p: Copy env lines)"
        yield env
        yield Footer(compact=True)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        state = self.panel.state
        now = state.clock()
        error = self.query_one("#error", Static)
        error.display = bool(self.panel.backend_error)
        error.update(f"ccbridge could not start: {self.panel.backend_error}" if self.panel.backend_error else "")
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
        self.query_one("#card-model", Static).update(dashboard_card(gpu))
        out, prompt = state.series(0), state.series(1)
        self.query_one("#out-chart", Sparkline).data = out
        self.query_one("#in-chart", Sparkline).data = prompt
        self.query_one("#out-label", Label).update(
            f"output tokens/s (5 min)   now {out[-1] if out else 0:,.1f}   peak {max(out, default=0):,.1f}")
        self.query_one("#in-label", Label).update(
            f"prompt tokens/s (5 min)   now {prompt[-1] if prompt else 0:,.1f}   peak {max(prompt, default=0):,.1f}")
        p50, p95 = state.ttft_percentiles()
        self.query_one("#stats", Static).update(
            f"requests/min {state.requests_per_minute()}   in flight {len(state.in_flight)}   "
            f"TTFT p50 {secs(p50)} p95 {secs(p95)}   total {num(state.total_requests)}")
        lines = self.panel.env_lines(hide_key=True)
        if len(lines) > 4:  # 80x24 has room for four: the ones that connect, then where the rest are
            lines = [*lines[:3], f"+ {len(lines) - 3} more: ctrl+p Copy env lines; `ccbridge claude` sets all"]
        self.query_one("#env", Static).update("\n".join(lines))
