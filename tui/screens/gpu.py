"""llama-server and GPU at a glance, from `status()["monitor"]`: per backend its slots as a table with
the context each one holds as a bar, memory and use as gauges (each GPU, else the host's RAM and CPU),
the prompt cache per backend and per Claude Code session as a table, and the advice as cards with the
fix; each group alias's backends (`status()["groups"]`: health, share of requests, sessions, cache) on
top. Drawn with Rich tables in one Static: the data changes every poll, the shape does not.

`w` applies the monitor's sliding-window advice to a llama-server ccbridge runs:
through the backend façade (`enable_swa_full`), never by touching the service.
"""

from __future__ import annotations

import io
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from backend.events import RequestRecord
from tui.screens.base import PanelScreen

NOT_AVAILABLE = "llama-server and GPU status: not available yet"
HEALTH_STYLE = {"ok": "bold green", "loading": "bold yellow", "error": "bold red", "unreachable": "bold red"}
ADVICE_STYLE = {"error": "red", "warn": "yellow", "info": "blue"}
FLAG_NAMES = {"ctx": "-c", "n_gpu_layers": "-ngl", "parallel": "-np", "metrics": "--metrics", "slots": "--slots",
              "jinja": "--jinja", "flash_attn": "-fa", "threads": "-t", "cache_ram_mib": "--cache-ram",
              "swa_full": "--swa-full", "kv_unified": "-kvu", "ubatch": "-ub", "n_gpu_layers_text": "-ngl",
              "cache_type_k": "-ctk", "cache_type_v": "-ctv", "host": "--host", "port": "--port", "alias": "-a"}


def _pct(x: object) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, int | float) else "-"


def _gib(n: object) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, int | float) else "-"


def _k(n: object) -> str:
    return f"{n / 1024:.0f}k" if isinstance(n, int) and n >= 1024 else str(n or "-")


def _count(n: object) -> str:
    return str(n) if isinstance(n, int) else "-"


def _val(x: object, unit: str = "", fmt: str = "{:.0f}") -> str:
    return (fmt.format(x) + unit) if isinstance(x, int | float) else "-"


def swa_line(swa: dict | None) -> str | None:
    """The sliding-window state of a backend: window, layers, --swa-full and the KV memory either way."""
    if not swa:
        return None
    full = {True: "on", False: "off", None: "unknown"}[swa.get("full")]
    line = (f"    sliding window {swa.get('window')} tokens on {swa.get('swa_layers')}/{swa.get('n_layers')} layers"
            f"  --swa-full {full}")
    base, part, whole = swa.get("base_bytes"), swa.get("swa_bytes"), swa.get("swa_full_bytes")
    if isinstance(base, int) and isinstance(part, int) and isinstance(whole, int):
        line += f"  KV {_mib(base + part)} without, {_mib(base + whole)} with"
    return line


def _gib_pair(used: object, total: object) -> str:
    """18.4/24.0 GiB."""
    if isinstance(used, int | float) and isinstance(total, int | float):
        return f"{used / 2**30:.1f}/{total / 2**30:.1f} GiB"
    return f"{_gib(used)} of {_gib(total)}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def _bar(fraction: object, width: int = 16, *, high_is_good: bool = False) -> Text:
    """A gauge: for a use, green under 70 %, yellow under 90 %, red above (`high_is_good`, for a cache
    share: red under 30 %, yellow under 70 %, green above); grey dots when unknown."""
    if not isinstance(fraction, int | float):
        return Text("·" * width, style="dim")
    f = min(1.0, max(0.0, float(fraction)))
    full = round(f * width)
    if high_is_good:
        style = "red" if f < 0.3 else "yellow" if f < 0.7 else "green"
    else:
        style = "green" if f < 0.7 else "yellow" if f < 0.9 else "red"
    return Text("█" * full, style=style) + Text("░" * (width - full), style="dim")


def _gauge(fraction: object, label: str, width: int = 16, *, high_is_good: bool = False) -> Text:
    pct = f" {100 * fraction:3.0f}%" if isinstance(fraction, int | float) else "    -"
    return _bar(fraction, width, high_is_good=high_is_good) + Text(pct) + Text(f"  {label}" if label else "",
                                                                           style="dim")


def _grid(*columns: str, wrap_last: bool = False) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=False, header_style="bold")
    for i, name in enumerate(columns):
        last = wrap_last and i == len(columns) - 1
        table.add_column(name, no_wrap=not last, overflow="fold" if last else "ellipsis", ratio=1 if last else None)
    return table


def _slot_used(slot: dict) -> int | None:
    tokens = slot.get("prompt_tokens")
    if not isinstance(tokens, int):
        return None
    return tokens + (slot.get("decoded") or 0)


def slots_table(b: dict) -> Table:
    """One row per slot: what it does, how full its context is (a bar), prompt, cache, generated."""
    table = _grid("slot", "state", "context used", "prompt", "cached", "generated")
    slots = b.get("slots") or []
    for slot in slots:
        used, n_ctx = _slot_used(slot), slot.get("n_ctx") or b.get("n_ctx_slot")
        fraction = used / n_ctx if used is not None and isinstance(n_ctx, int) and n_ctx else None
        state = {"prompt": ("reading prompt", "yellow"), "generating": ("generating", "green")}.get(
            str(slot.get("phase")), ("idle", "dim"))
        table.add_row(str(slot.get("id", "?")), Text(*state),
                      _bar(fraction, 12) + Text(f" {_k(used)}/{_k(n_ctx)}" if used is not None else " -"),
                      _k(slot.get("prompt_tokens")), _k(slot.get("prompt_cached")), _count(slot.get("decoded")))
    if not slots:
        busy, total = b.get("busy_slots"), b.get("total_slots")
        table.add_row("-", Text(f"busy {_count(busy)}/{total or '-'}", style="dim"),
                      Text("per-slot detail needs GET /slots", style="dim"), "", "", "")
    return table


def backend_view(b: dict) -> Group:
    """A backend at a glance: health and model, speeds, its slots as a table, process, flags, SWA."""
    health = str(b.get("health", "?"))
    head = Text(f"{b.get('name', '?')}  ", style="bold") + Text(health, style=HEALTH_STYLE.get(health, "bold"))
    model = str(b.get("model_alias") or b.get("model") or "-").rsplit("/", 1)[-1]
    head += Text(f"  {model}")
    where = Text(f"{b.get('api_base', '')}  build {b.get('build') or '-'}", style="dim")
    speed = Text(f"ctx {_k(b.get('n_ctx_slot'))}/slot (trained {_k(b.get('n_ctx_train'))})   generation ") + \
        Text(_val(b.get("gen_tps"), " tok/s", "{:.1f}"), style="bold") + Text("   prompt ") + \
        Text(_val(b.get("prompt_tps"), " tok/s"), style="bold")
    parts: list[RenderableType] = [head, where, speed, slots_table(b)]
    proc = b.get("process") or {}
    if proc.get("pid"):
        flags = proc.get("flags") or {}
        chips = Text()
        for key, value in flags.items():
            if value in (None, False, "") or key == "model":
                continue
            chips += Text(f" {FLAG_NAMES.get(key, key)}{'' if value is True else ' ' + str(value)} ",
                          style="reverse dim") + Text(" ")
        parts.append(Text(f"pid {proc['pid']}  cpu {_val(proc.get('cpu_percent'), '%')}  rss "
                          f"{_gib(proc.get('rss_bytes'))}  threads {proc.get('threads', '-')}   ", style="dim")
                     + chips)
    swa = swa_line(b.get("swa"))
    if swa:
        parts.append(Text(swa.strip()))
    return Group(*parts)


def memory_table(monitor: dict) -> Group:
    """Gauges: each GPU's memory and use (llama-server's share), the host's RAM and CPU, KV memory; why
    there is no GPU row under it (a note too long for a column)."""
    table = _grid("memory", "use", "", "")
    for dev in (monitor.get("gpu") or {}).get("devices") or []:
        name = f"GPU {dev.get('index', '?')} {str(dev.get('name') or '').removeprefix('NVIDIA ')}".strip()
        table.add_row(name, _gauge(dev.get("mem_fraction"), "", 10),
                      _gib_pair(dev.get("mem_used_bytes"), dev.get("mem_total_bytes")),
                      Text(f"{_val(dev.get('temperature_c'), ' C')} {_val(dev.get('power_w'))}/"
                           f"{_val(dev.get('power_limit_w'), ' W')}", style="dim"))
        util = dev.get("util_percent")
        table.add_row("  compute", _gauge(util / 100 if isinstance(util, int | float) else None, "", 10), "", "")
        for proc in dev.get("processes") or []:
            if proc.get("is_backend"):
                table.add_row(f"  llama-server {proc.get('backend')}", "", _gib(proc.get("used_memory_bytes")),
                              Text(f"pid {proc.get('pid')}", style="dim"))
    host = monitor.get("host") or {}
    used, total = host.get("mem_used_bytes"), host.get("mem_total_bytes")
    if isinstance(used, int) and isinstance(total, int) and total:
        table.add_row("host RAM", _gauge(used / total, "", 10), _gib_pair(used, total), "")
    cpu = host.get("cpu_percent")
    if isinstance(cpu, int | float):
        table.add_row("host CPU", _gauge(cpu / 100, "", 10), f"{host.get('cpu_count', '-')} cores", "")
    for b in monitor.get("backends") or []:
        swa = b.get("swa") or {}
        if isinstance(swa.get("kv_bytes"), int):
            table.add_row(f"KV cache {b.get('name')}", "", _mib(swa["kv_bytes"]), "")
    if (monitor.get("gpu") or {}).get("devices"):
        return Group(table)
    note = (monitor.get("gpu") or {}).get("note") or "no GPU telemetry here"
    return Group(table, Text(f"GPU: {note}", style="dim"))


def cache_table(cache: dict) -> Group:
    """Per backend, then per Claude Code session: how much of the prompts came from llama-server's cache;
    under it, why a session missed (too long for a column)."""
    table = _grid("prompt cache", "req", "tokens", "from cache", "1st turn", "later turns")
    why: list[Text] = []
    for c in cache.get("by_backend") or []:
        table.add_row(str(c.get("key")), _count(c.get("requests")), _k(c.get("prompt_tokens")),
                      _gauge(c.get("share"), "", 8, high_is_good=True), "", "")
    for c in (cache.get("by_session") or [])[:8]:
        key = f"session {str(c.get('key'))[:8]}"
        table.add_row(key, _count(c.get("requests")), _k(c.get("prompt_tokens")),
                      _gauge(c.get("share"), "", 8, high_is_good=True), _pct(c.get("first_share")),
                      _pct(c.get("later_share")))
        if c.get("reason"):
            why.append(Text(f"{key} missed: ", style="bold") + Text(str(c["reason"]), style="yellow"))
    return Group(table, *why)


def advice_cards(advice: list[dict]) -> list[Panel]:
    """A card per advice: what is wrong, then the fix."""
    cards = []
    for a in advice:
        level = str(a.get("level", "info"))
        body = Text(str(a.get("text", ""))) + Text("\nfix: ", style="bold") + Text(str(a.get("fix") or "-"))
        cards.append(Panel(body, title=f"{level} · {a.get('code', '')}", title_align="left",
                           border_style=ADVICE_STYLE.get(level, "dim"), box=box.ROUNDED))
    return cards


VERDICT_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "info": "blue"}


def scorecard_table(cards: list[dict]) -> Table:
    """Per backend, what its model can do for Claude Code: a line per question, the verdict, the fix."""
    table = _grid("model", "question", "", "found · fix", wrap_last=True)
    for card in cards:
        name = str(card.get("backend", "?"))
        if card.get("waiting"):
            table.add_row(name, "-", Text("wait", style="dim"), str(card["waiting"]))
            continue
        for i, line in enumerate(card.get("lines") or []):
            level = str(line.get("level", "info"))
            found = Text(str(line.get("found", "")))
            if line.get("fix"):
                found += Text(" · fix: ", style="bold") + Text(str(line["fix"]))
            table.add_row(name if i == 0 else "", str(line.get("topic", "")),
                          Text(level, style=VERDICT_STYLE.get(level, "")), found)
    return table


def monitor_view(monitor: dict | None, groups: list[dict] | None = None,
                 cards: list[dict] | None = None) -> RenderableType:
    """The whole GPU screen: groups, each backend with its slots, memory gauges, the cache table, the model
    scorecards, advice cards."""
    parts: list[RenderableType] = [Text(line) for line in group_lines(groups)]
    if not monitor:
        return Group(*parts, Text(NOT_AVAILABLE))
    parts.append(Text("llama-server", style="bold underline"))
    for b in monitor.get("backends") or []:
        parts += [backend_view(b), Text("")]
    parts += [memory_table(monitor), Text("")]
    cache = monitor.get("cache") or {}
    if cache.get("by_backend") or cache.get("by_session"):
        parts += [cache_table(cache), Text("")]
    if cards:
        parts += [scorecard_table(cards), Text("")]
    parts += advice_cards(monitor.get("advice") or [])
    return Group(*parts)


def plain(renderable: RenderableType, width: int = 100) -> str:
    """The text a renderable shows at `width` columns (tests and `ccbridge doctor`-style dumps)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def group_lines(groups: list[dict] | None) -> list[str]:
    """Per group alias and backend: taking requests or why not, its share of the group's requests,
    the Claude Code sessions kept on it, and the share of its prompts served from llama-server's cache."""
    lines: list[str] = []
    for group in groups or []:
        lines.append(f"group {group.get('group', '?')}  (balance: {group.get('balance', '?')}, "
                     f"{group.get('requests', 0)} requests)")
        for m in group.get("members") or []:
            state = "up" if m.get("up") else f"DOWN ({m.get('reason') or 'not answering'})"
            took = f"  took over {m['took_over']}" if m.get("took_over") else ""
            lines.append(f"  {m.get('backend', '?')}: {state}")
            lines.append(f"    requests {m.get('requests', 0)} ({_pct(m.get('share'))})  sessions "
                         f"{m.get('sessions', 0)}  cache {_pct(m.get('cache_share'))} "
                         f"(later turns {_pct(m.get('later_turns_cache_share'))}){took}")
    return lines


def dashboard_card(monitor: dict | None) -> str:
    """Four lines for the dashboard: the first backend, its speed, the GPU, the top advice."""
    if not monitor:
        return NOT_AVAILABLE
    backends = monitor.get("backends") or [{}]
    b = backends[0]
    lines = [f"{b.get('health', '?')}  {str(b.get('model_alias') or b.get('model') or '-').rsplit('/', 1)[-1][:28]}",
             f"ctx {_k(b.get('n_ctx_slot'))}/slot  busy {_count(b.get('busy_slots'))}/{b.get('total_slots') or '-'}"
             f"  {_val(b.get('gen_tps'), ' tok/s', '{:.0f}')}"]
    gpu = monitor.get("gpu") or {}
    devices = gpu.get("devices") or []
    if devices:
        d = devices[0]
        lines.append(f"GPU {_val(d.get('util_percent'), '%')}  mem {_pct(d.get('mem_fraction'))}  "
                     f"{_val(d.get('temperature_c'), ' C')}")
    else:
        host = monitor.get("host") or {}
        lines.append(f"no GPU telemetry; host cpu {_val(host.get('cpu_percent'), '%')}")
    advice = [a for a in monitor.get("advice") or [] if a.get("level") in ("error", "warn")]
    if advice:  # the card is too narrow for the whole advice: what is wrong in short, the fix on screen 5
        more = f" (+{len(advice) - 1} more)" if len(advice) > 1 else ""
        lines.append(f"{advice[0]['level']}: {advice_summary(advice[0])}{more} · fix: press 5")
    else:
        lines.append("no advice")
    return "\n".join(lines)


def advice_summary(advice: dict) -> str:
    """What is wrong, in the words before the first colon of the advice ("context per slot is 65536 tokens")."""
    return str(advice.get("text") or advice.get("code") or "?").split(": ", 1)[0]


def swa_target(status: dict[str, Any]) -> tuple[str | None, str]:
    """(backend to give --swa-full, what to tell the user): a backend the monitor advised it for that
    ccbridge runs itself; None with the reason when there is none."""
    advised = [a.get("backend") for a in (status.get("monitor") or {}).get("advice") or []
               if a.get("code") == "swa_no_full" and a.get("backend")]
    if not advised:
        return None, "no backend needs --swa-full (no sliding-window model served without it)"
    services = {s.get("name") for s in status.get("services") or []}
    for name in advised:
        if f"llama:{name}" in services:
            return name, f"adding --swa-full to backends.{name}.command and restarting llama:{name} ..."
    return None, (f"backend '{advised[0]}' is not run by ccbridge: add --swa-full to the llama-server command "
                  "line you start it with")


class GpuScreen(PanelScreen):
    """llama-server, GPU, prompt cache and the monitor's advice; `w` applies --swa-full."""

    BINDINGS = [Binding("w", "swa_full", "--swa-full", id="gpu.swa_full"),
                Binding("m", "probe_models", "probe model", id="gpu.probe_models")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(NOT_AVAILABLE, id="gpu-body", markup=False)
        yield Footer(compact=True)

    body: RenderableType = NOT_AVAILABLE
    """What the screen shows now (tests read it with `plain`)."""

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        status = self.panel.state.status
        cards = status.get("scorecards")
        self.body = monitor_view(status.get("monitor"), status.get("groups"), cards)
        self.query_one("#gpu-body", Static).update(self.body)
        if not self._probe_asked and status.get("monitor") and not any(c.get("lines") for c in cards or []):
            self.action_probe_models()  # the first look at the screen asks once (serve probes only when idle)

    _probe_asked = False

    def action_probe_models(self) -> None:
        """Ask serve to probe each idle backend's model (a small request each, once per model setup)."""
        self._probe_asked = True
        self._probe_models()

    @work(group="probe-models", exclusive=True)
    async def _probe_models(self) -> None:
        try:
            await self.panel.control.probe_models()
        except Exception as exc:  # noqa: BLE001 - shown to the user, the panel goes on
            self.notify(f"model probe failed: {exc}", severity="warning", markup=False)
            return
        self.panel.poll_status()

    def action_swa_full(self) -> None:
        name, message = swa_target(self.panel.state.status)
        self.notify(message, severity="information" if name else "warning", markup=False)
        if name is not None:
            self.panel.state.activity[f"llama:{name}"] = "restarting"
            self._enable_swa_full(name)

    @work(group="swa-full")
    async def _enable_swa_full(self, backend: str) -> None:
        try:
            restarted = await self.panel.control.enable_swa_full(backend)
            message, severity = (f"--swa-full added to backends.{backend}.command; restarted: "
                                 f"{', '.join(restarted) or 'nothing (it was there already)'}"), "information"
        except Exception as exc:  # noqa: BLE001 - shown to the user, the panel goes on
            message, severity = f"--swa-full for backend '{backend}' failed: {exc}", "error"
        self._swa_done(backend, message, severity)

    def _swa_done(self, backend: str, message: str, severity: str) -> None:
        self.panel.state.activity.pop(f"llama:{backend}", None)
        self.notify(message, severity=severity, markup=False)  # type: ignore[arg-type]
        self.panel.poll_status()
