"""Advice from the monitor's readings: what is wrong for Claude Code, and the fix.

Pure functions of a snapshot's parts (no I/O): the sampler calls `advise`
after each sample, `ccbridge doctor` prints the result. Thresholds come from
FACTS: Claude Code's first turn is ~15k (2.1.197) to ~20k (2.1.330) tokens, so
a slot under 32k fails at once. Claude Code will not compact before a 100k
window on its own (its default model names assume 1M or 200k), so a slot under
~100k fails later in long sessions unless it is told the window: `ccbridge env`
and `ccbridge claude` do (model names it does not know plus
CLAUDE_CODE_MAX_CONTEXT_TOKENS, which 2.1.330 and later honour; 2.1.197 does not).
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Mapping, Sequence

from backend.backend_info import COMFORTABLE_CONTEXT, MIN_CONTEXT, BackendInfo, output_cap
from backend.events import RequestRecord
from backend.monitor.backend_status import BackendStatus, SwaStatus
from backend.monitor.machine_status import GpuStatus
from backend.monitor.snapshot import Advice, CacheReport
from backend.monitor.text import human_bytes

GPU_MEM_FULL = 0.95
"""GPU memory share above which a larger context or model will not fit."""
FAILURE_WINDOW_S = 1800.0
"""Context-size failures older than this are not advised on any more."""

_TOO_LONG = re.compile(r"(\d+) tokens > (\d+) maximum")
_EXCEEDS = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)")
_ORDER = {"error": 0, "warn": 1, "info": 2}


def context_failure(record: RequestRecord) -> tuple[int, int] | None:
    """(prompt tokens, context per slot) when a record failed on context size."""
    if not record.error:
        return None
    m = _TOO_LONG.search(record.error) or _EXCEEDS.search(record.error)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _slots_note(b: BackendStatus) -> str:
    slots = b.total_slots or (b.process.flags.parallel if b.process else None)
    if slots and slots > 1:
        return f" (-c is divided among the {slots} slots of -np {slots})"
    return ""


def _ctx_for(per_slot: int, b: BackendStatus) -> str:
    slots = b.total_slots or 1
    if slots > 1:
        return f"-c {per_slot * slots} (that is {per_slot} per slot with -np {slots}), or -c {per_slot} -np 1"
    return f"-c {per_slot}"


def context_advice(b: BackendStatus, max_tokens: int | None = None) -> Advice | None:
    """Context per slot too small for Claude Code (fails now, or later in long sessions)."""
    n = b.n_ctx_slot
    if not n:
        return None
    cap = output_cap(BackendInfo(b.name, b.api_base, True, n_ctx_slot=n, total_slots=b.total_slots), max_tokens)
    if n < MIN_CONTEXT:
        return Advice(
            "error", "ctx_too_small",
            f"context per slot is {n} tokens{_slots_note(b)}: Claude Code's first turn alone is ~15k-20k "
            "tokens, so its requests will fail",
            f"restart llama-server with a larger context: {_ctx_for(65536, b)}; 65536 per slot is the least "
            "that works, 131072 if memory allows",
            b.name)
    if n < COMFORTABLE_CONTEXT:
        return Advice(
            "warn", "ctx_below_compact",
            f"context per slot is {n} tokens{_slots_note(b)}: enough to start, but Claude Code on its own "
            "will not compact before a 100k window, so long sessions will hit the limit",
            f"run Claude Code with `ccbridge claude` or `eval \"$(ccbridge env)\"`: they tell 2.1.330 and later "
            f"the real window and cap output (CLAUDE_CODE_MAX_OUTPUT_TOKENS={cap}); for 2.1.197, or to be safe, "
            f"restart llama-server with {_ctx_for(131072, b)} if memory allows",
            b.name)
    return None


def endpoint_advice(b: BackendStatus) -> list[Advice]:
    """/metrics or /slots switched off: which flag adds what."""
    out: list[Advice] = []
    if b.endpoints.get("props") != "ok" and b.build is None:
        return out  # not a llama-server (or not yet read): its flags mean nothing here
    flags = b.process.flags if b.process and b.process.is_llama_server else None
    metrics_off = b.endpoints.get("metrics") == "disabled" or (flags is not None and not flags.metrics
                                                                 and b.endpoints.get("metrics") != "ok")
    slots_off = b.endpoints.get("slots") == "disabled" or (flags is not None and not flags.slots
                                                             and b.endpoints.get("slots") != "ok")
    if metrics_off:
        out.append(Advice(
            "info", "no_metrics",
            "llama-server runs without --metrics: no server-side prompt and generation tokens/s, no requests "
            "deferred (waiting for a slot), no server-wide cached-prompt totals",
            "restart llama-server with --metrics", b.name))
    if slots_off:
        out.append(Advice(
            "info", "no_slots",
            "llama-server runs with /slots off (--no-slots): no busy/idle per slot, no prompt progress, no "
            "live generation speed",
            "restart llama-server without --no-slots (in this build /slots is on by default; older builds "
            "need --slots)", b.name))
    return out


def offload_advice(b: BackendStatus, gpu: GpuStatus) -> Advice | None:
    """-ngl lower than the model's layer count while a GPU is there."""
    if not gpu.available or b.process is None or not b.process.is_llama_server or b.n_layers is None:
        return None
    ngl = b.process.flags.n_gpu_layers
    if ngl is None or ngl < 0 or ngl > b.n_layers:
        return None  # auto/all, or everything offloaded (layers + output layer)
    if ngl == b.n_layers:
        return None
    return Advice(
        "warn", "ngl_partial",
        f"-ngl {ngl}: only {ngl} of the model's {b.n_layers} layers are on the GPU; the rest run on the CPU, "
        "which makes every token slower",
        f"restart llama-server with -ngl {b.n_layers + 1} (or -ngl all) if GPU memory allows; otherwise a "
        "smaller quantisation or a smaller -c frees memory for more layers",
        b.name)


def gpu_advice(gpu: GpuStatus) -> list[Advice]:
    """GPU memory nearly full."""
    out = []
    for dev in gpu.devices:
        frac = dev.mem_fraction
        if frac is None or frac < GPU_MEM_FULL:
            continue
        others = [p for p in dev.processes if not p.is_backend and p.used_memory_bytes]
        who = ""
        if dev.backend_mem_bytes is not None:
            who = f"; llama-server holds {dev.backend_mem_bytes / 2**30:.1f} GiB"
        if others:
            names = ", ".join(f"{p.name or p.pid}" for p in others[:3])
            who += f"; also: {names}"
        out.append(Advice(
            "warn", "gpu_mem_full",
            f"GPU {dev.index} ({dev.name or 'unknown'}) memory is {frac:.0%} full{who}: a larger -c or a bigger "
            "model will not fit, and llama-server may fail to allocate",
            "free GPU memory (stop other programs using it), or lower -c / -ngl, or use a smaller "
            "quantisation", None))
    return out


def failure_advice(failures: Sequence[RequestRecord], backends: Mapping[str, BackendStatus],
                   now: float | None = None) -> list[Advice]:
    """The latest request that failed on context size, per backend, with the backend's numbers."""
    now = now if now is not None else time.time()
    latest: dict[str, tuple[RequestRecord, int, int]] = {}
    for rec in failures:
        parsed = context_failure(rec)
        if parsed is None or now - rec.started_at > FAILURE_WINDOW_S:
            continue
        name = rec.routed_backend or "?"
        if name not in latest or rec.started_at > latest[name][0].started_at:
            latest[name] = (rec, *parsed)
    out = []
    for name, (rec, need, have) in sorted(latest.items()):
        b = backends.get(name)
        numbers = f"{have} tokens per slot"
        if b is not None:
            parts = [f"{b.n_ctx_slot or have} tokens per slot"]
            if b.total_slots:
                parts.append(f"{b.total_slots} slot(s)")
            if b.process and b.process.flags.ctx:
                parts.append(f"-c {b.process.flags.ctx}")
            if b.n_ctx_train:
                parts.append(f"model trained for {b.n_ctx_train}")
            numbers = ", ".join(parts)
        per_slot = max(65536, 1 << max(need * 2 - 1, 1).bit_length())
        slots = b.total_slots if b and b.total_slots else 1
        at = time.strftime("%H:%M:%S", time.localtime(rec.started_at))
        out.append(Advice(
            "error", "request_context_exceeded",
            f"request {rec.id[:8]} at {at} ({rec.requested_model or 'model ?'}) needed {need} prompt tokens; "
            f"backend '{name}' has {numbers}",
            f"restart llama-server with -c {per_slot * slots}"
            + (f" (-np {slots} divides it: {per_slot} per slot)" if slots > 1 else "")
            + (f"; the model was trained for {b.n_ctx_train}, llama-server will not go beyond"
               if b and b.n_ctx_train and per_slot > b.n_ctx_train else ""),
            name))
    return out


def swa_cost(swa: SwaStatus) -> str:
    """What --swa-full costs in KV memory, from the model's dimensions; "" when not computable."""
    if swa.kv_bytes is None or swa.base_bytes is None or swa.swa_full_bytes is None or swa.extra_bytes is None:
        return ""
    full = swa.base_bytes + swa.swa_full_bytes
    now = swa.base_bytes + (swa.swa_bytes or 0)
    return (f"it adds {human_bytes(swa.extra_bytes)} of KV memory at -c {swa.n_ctx} with {swa.slots} slot(s) "
            f"and a {swa.cache_types} KV cache ({human_bytes(now)} -> {human_bytes(full)}: the "
            f"{swa.swa_layers} sliding-window layers keep every token instead of {swa.swa_cells} per slot)")


def swa_advice(b: BackendStatus, managed: bool = False, cache: CacheReport | None = None) -> Advice | None:
    """A sliding-window model served without --swa-full: new sessions and subagents re-read their whole prompt."""
    swa = b.swa
    if swa is None or swa.full is True:
        return None
    model = (b.model_alias or b.model or b.model_path or "?").rsplit("/", 1)[-1]
    keeps = f"the last {swa.swa_cells} tokens" if swa.swa_cells else "about the last window"
    flags = ("llama-server runs without --swa-full, so it keeps only" if swa.full is False else
             "llama-server's flags cannot be read here: unless it runs with --swa-full, it keeps only")
    seen = ""
    row = next((r for r in (cache.by_backend if cache else ()) if r.key == b.name), None)
    if row is not None and row.missed_first_turns:
        seen = (f" (seen here: {row.missed_first_turns} new session(s) took nothing from the previous "
                "session's cache)")
    how = (f"add --swa-full to backends.{b.name}.command and restart service llama:{b.name} (in the panel, "
           "w on the GPU screen (5) does both)" if managed else "restart llama-server with --swa-full")
    cost = swa_cost(swa)
    return Advice(
        "warn", "swa_no_full",
        f"model {model} uses sliding-window attention ({swa.swa_layers} of {swa.n_layers} layers see only the "
        f"last {swa.window} tokens) and {flags} {keeps} of those layers: a prompt that differs from the cached "
        "one before its end (a new Claude Code session, a subagent) cannot reuse the start they share and is "
        f"read again in full{seen}",
        how + (f"; {cost}" if cost else ""),
        b.name)


def cache_advice(cache: CacheReport) -> list[Advice]:
    """Later turns that missed the prompt cache, with the reason when it can be told."""
    return [Advice("warn", "cache_low",
                   f"backend '{row.key}': {row.low_turns} later turn(s) missed the prompt cache; {row.reason}",
                   row.fix or "", row.key)
            for row in cache.by_backend if row.low_turns and row.reason]


def health_advice(b: BackendStatus, managed: bool = False) -> Advice | None:
    """Unreachable, loading or failing backends (`managed`: ccbridge starts it from `command`)."""
    if b.health == "unreachable":
        fix = (f"ccbridge starts it from backends.{b.name}.command: see the llama:{b.name} service's log"
               if managed else f"start llama-server there, or fix backends.{b.name}.api_base in ccbridge.yaml")
        return Advice("error", "unreachable",
                      f"backend '{b.name}' at {b.api_base} is not reachable ({b.health_detail})", fix, b.name)
    if b.health == "loading":
        return Advice("info", "loading", f"backend '{b.name}' is loading its model",
                      "wait: requests are answered once /health says ok", b.name)
    if b.health == "error":
        return Advice("warn", "health_error",
                      f"backend '{b.name}' answers /health with an error ({b.health_detail})",
                      "look at llama-server's log", b.name)
    return None


def advise(backends: Sequence[BackendStatus], gpu: GpuStatus, cache: CacheReport,
           failures: Sequence[RequestRecord] = (), max_tokens: Mapping[str, int | None] | None = None,
           now: float | None = None, managed: Collection[str] = ()) -> tuple[Advice, ...]:
    """All advice, most severe first (`managed`: backends ccbridge runs from their `command`)."""
    max_tokens = max_tokens or {}
    out: list[Advice] = []
    for b in backends:
        items = (health_advice(b, b.name in managed), context_advice(b, max_tokens.get(b.name)),
                 offload_advice(b, gpu), swa_advice(b, b.name in managed, cache))
        for item in items:
            if item is not None:
                out.append(item)
        if b.health == "ok":
            out.extend(endpoint_advice(b))
    out.extend(gpu_advice(gpu))
    out.extend(failure_advice(failures, {b.name: b for b in backends}, now))
    out.extend(cache_advice(cache))
    return tuple(sorted(out, key=lambda a: _ORDER[a.level]))
