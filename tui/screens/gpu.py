"""llama-server and GPU: filled from `status()["monitor"]` when the backend provides it, with each
group alias's backends (`status()["groups"]`: health, share of requests, sessions, cache) on top.

`w` applies the monitor's sliding-window advice to a llama-server ccbridge runs:
through the backend façade (`enable_swa_full`), never by touching the service.
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from backend.events import RequestRecord
from tui.screens.base import PanelScreen

NOT_AVAILABLE = "llama-server and GPU status: not available yet"


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


def gpu_lines(gpu: dict) -> list[str]:
    """One line per GPU (utilisation, memory, temperature, power, clocks, llama-server's share)."""
    devices = gpu.get("devices") or []
    if not devices:
        return [f"  {gpu.get('note') or 'no GPU telemetry here'}"]
    lines = []
    for dev in devices:
        lines.append(f"  {dev.get('index', '?')} {dev.get('name') or ''}: util {_val(dev.get('util_percent'), '%')}  "
                     f"memory {_gib(dev.get('mem_used_bytes'))} of {_gib(dev.get('mem_total_bytes'))} "
                     f"({_pct(dev.get('mem_fraction'))})")
        lines.append(f"    {_val(dev.get('temperature_c'), ' C')}  power {_val(dev.get('power_w'), ' W')} of "
                     f"{_val(dev.get('power_limit_w'), ' W')}  clock {_val(dev.get('clock_graphics_mhz'), ' MHz')}")
        for proc in dev.get("processes") or []:
            if proc.get("is_backend"):
                lines.append(f"    llama-server '{proc.get('backend')}' (pid {proc.get('pid')}) uses "
                             f"{_gib(proc.get('used_memory_bytes'))}")
    return lines


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


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


def monitor_text(monitor: dict | None) -> str:
    """A plain summary of the monitor section: servers, slots, speed, process, GPU, cache, advice."""
    if not monitor:
        return NOT_AVAILABLE
    lines: list[str] = ["llama-server"]
    for b in monitor.get("backends") or []:
        lines.append(f"  {b.get('name', '?')}: {b.get('health', '?')}  {b.get('api_base', '')}")
        lines.append(f"    model {b.get('model_alias') or b.get('model') or '-'}  build {b.get('build') or '-'}")
        lines.append(f"    context per slot {b.get('n_ctx_slot') or '-'} (trained {b.get('n_ctx_train') or '-'})  "
                     f"slots busy {_count(b.get('busy_slots'))}/{b.get('total_slots') or '-'}")
        lines.append(f"    generation {_val(b.get('gen_tps'), ' tok/s', '{:.1f}')}  "
                     f"prompt {_val(b.get('prompt_tps'), ' tok/s')}")
        proc = b.get("process") or {}
        if proc.get("pid"):
            flags = proc.get("flags") or {}
            shown = " ".join(f"{k}={v}" for k, v in flags.items() if v not in (None, False, "") and k != "model")
            lines.append(f"    process pid {proc['pid']}  cpu {_val(proc.get('cpu_percent'), '%')}  "
                         f"rss {_gib(proc.get('rss_bytes'))}  threads {proc.get('threads', '-')}")
            if shown:
                lines.append(f"    flags {shown}")
        swa = swa_line(b.get("swa"))
        if swa:
            lines.append(swa)
    gpu = monitor.get("gpu") or {}
    lines.append("GPU")
    lines.extend(gpu_lines(gpu))
    host = monitor.get("host") or {}
    if host:
        used, total = host.get("mem_used_bytes"), host.get("mem_total_bytes")
        mem = f"{used / 2**30:.1f} of {total / 2**30:.1f} GiB" if used and total else "-"
        lines.append(f"host  cpu {host.get('cpu_percent', '-')}% of {host.get('cpu_count', '-')} cores, memory {mem}")
    cache = monitor.get("cache") or {}
    for c in cache.get("by_backend") or []:
        lines.append(f"prompt cache  {c.get('key')}: {_pct(c.get('share'))} of {c.get('prompt_tokens', 0):,} "
                     f"tokens from cache ({c.get('requests', 0)} requests)")
    for c in (cache.get("by_session") or [])[:5]:
        why = f"  ({c['reason']})" if c.get("reason") else ""
        first = f", first turn {_pct(c['first_share'])}" if c.get("first_share") is not None else ""
        lines.append(f"  session {str(c.get('key'))[:8]}: later turns {_pct(c.get('later_share'))}{first} "
                     f"from cache{why}")
    for a in monitor.get("advice") or []:
        lines.append(f"{a.get('level', 'note')}: {a.get('text', '')}")
        if a.get("fix"):
            lines.append(f"  fix: {a['fix']}")
    return "\n".join(lines)


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
    lines.append(f"{advice[0]['level']}: {advice[0].get('text', '')}" if advice else "no advice")
    return "\n".join(lines)


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

    BINDINGS = [Binding("w", "swa_full", "--swa-full", id="gpu.swa_full")]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(NOT_AVAILABLE, id="gpu-body", markup=False)
        yield Footer(compact=True)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        status = self.panel.state.status
        text = monitor_text(status.get("monitor"))
        groups = group_lines(status.get("groups"))
        self.query_one("#gpu-body", Static).update("\n".join([*groups, text]) if groups else text)

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
