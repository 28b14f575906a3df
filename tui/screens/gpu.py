"""llama-server and GPU: filled from `status()["monitor"]` when the backend provides it."""

from __future__ import annotations

from textual.app import ComposeResult
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
        lines.append(f"  session {str(c.get('key'))[:8]}: later turns {_pct(c.get('later_share'))} from cache{why}")
    for a in monitor.get("advice") or []:
        lines.append(f"{a.get('level', 'note')}: {a.get('text', '')}")
        if a.get("fix"):
            lines.append(f"  fix: {a['fix']}")
    return "\n".join(lines)


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


class GpuScreen(PanelScreen):
    """A place held for the llama-server/GPU view."""

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(NOT_AVAILABLE, id="gpu-body", markup=False)
        yield Footer(compact=True)

    def refresh_view(self, finished: list[RequestRecord]) -> None:
        text = monitor_text(self.panel.state.status.get("monitor"))
        self.query_one("#gpu-body", Static).update(text)
