"""One-line descriptions of monitor readings, for `ccbridge doctor` and logs (plain text, no styling)."""

from __future__ import annotations

from backend.monitor.backend_status import BackendStatus, ProcessStatus, SwaStatus
from backend.monitor.machine_status import GpuStatus, HostStatus


def human_bytes(n: int | float | None) -> str:
    """1536 -> '1.5 KiB'; None -> '?'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_count(n: int | None) -> str:
    """117696 -> '118K', 7_241_732_096 -> '7.2B'; None -> '?'."""
    if n is None:
        return "?"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}" if n < div * 100 else f"{n / div:.0f}{suffix}"
    return str(n)


def human_duration(seconds: float | None) -> str:
    """3725 -> '1h 2m'; None -> '?'."""
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def describe_server(b: BackendStatus) -> str:
    """Build, trained context, size, slots and which optional endpoints answer."""
    parts = []
    if b.build:
        parts.append(f"llama-server build {b.build}")
    if b.n_ctx_train:
        parts.append(f"trained context {b.n_ctx_train}")
    if b.n_params:
        parts.append(f"{human_count(b.n_params)} params")
    if b.size_bytes:
        parts.append(human_bytes(b.size_bytes))
    if b.ftype:
        parts.append(b.ftype)
    if b.busy_slots is not None and b.total_slots:
        parts.append(f"{b.busy_slots}/{b.total_slots} slot(s) busy")
    ends = []
    for name in ("slots", "metrics"):
        state = b.endpoints.get(name)
        if state:
            ends.append(f"/{name} {'on' if state == 'ok' else state}")
    if ends:
        parts.append(", ".join(ends))
    return "; ".join(parts)


def describe_process(p: ProcessStatus) -> str:
    """pid, CPU, memory, threads, uptime and the flags that matter for Claude Code."""
    f = p.flags
    flags = []
    for label, value in (("-m", f.model), ("-c", f.ctx), ("-ngl", f.n_gpu_layers_text), ("-np", f.parallel),
                         ("-fa", f.flash_attn)):
        if value is not None:
            flags.append(f"{label} {value}")
    if f.metrics:
        flags.append("--metrics")
    if not f.slots:
        flags.append("--no-slots")
    if f.jinja is not None:
        flags.append("--jinja" if f.jinja else "--no-jinja")
    if f.swa_full:
        flags.append("--swa-full")
    cpu = f"{p.cpu_percent:.0f}% CPU" if p.cpu_percent is not None else "CPU ?"
    return (f"pid {p.pid} {p.name or '?'}: {cpu}, {human_bytes(p.rss_bytes)} resident, "
            f"{p.threads if p.threads is not None else '?'} threads, up {human_duration(p.uptime_s)}; "
            f"flags: {' '.join(flags) or '(defaults)'}")


def describe_swa(swa: SwaStatus) -> str:
    """Window, layers, --swa-full and the KV cache without and with it."""
    full = {True: "on", False: "off", None: "unknown (flags not readable)"}[swa.full]
    text = (f"sliding-window attention: {swa.window}-token window on {swa.swa_layers} of {swa.n_layers} layers; "
            f"--swa-full {full}")
    if swa.base_bytes is not None and swa.swa_bytes is not None and swa.swa_full_bytes is not None:
        text += (f"; KV cache {human_bytes(swa.base_bytes + swa.swa_bytes)} without it, "
                 f"{human_bytes(swa.base_bytes + swa.swa_full_bytes)} with it (-c {swa.n_ctx}, {swa.slots} slot(s), "
                 f"{swa.cache_types})")
    return text


def describe_gpu(gpu: GpuStatus, host: HostStatus | None = None) -> list[str]:
    """One line per GPU, or the no-GPU note plus the machine's CPU and memory."""
    if not gpu.available:
        lines = [gpu.note or "no GPU telemetry here"]
        if host is not None and host.mem_total_bytes:
            lines.append(f"host: {host.cpu_count or '?'} CPUs, memory {human_bytes(host.mem_used_bytes)} / "
                         f"{human_bytes(host.mem_total_bytes)} used ({host.platform or '?'})")
        return lines
    lines = []
    for d in gpu.devices:
        util = f"{d.util_percent:.0f}%" if d.util_percent is not None else "?"
        temp = f", {d.temperature_c:.0f} C" if d.temperature_c is not None else ""
        power = ""
        if d.power_w is not None:
            power = f", {d.power_w:.0f} W" + (f" / {d.power_limit_w:.0f} W" if d.power_limit_w else "")
        mine = f", llama-server {human_bytes(d.backend_mem_bytes)}" if d.backend_mem_bytes is not None else ""
        lines.append(f"GPU {d.index} {d.name or '?'} ({gpu.source}): {util} busy, memory "
                     f"{human_bytes(d.mem_used_bytes)} / {human_bytes(d.mem_total_bytes)}{mine}{temp}{power}")
    return lines
