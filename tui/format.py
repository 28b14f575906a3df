"""Plain text for records and services (no widgets: shared by screens and tests)."""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

from backend.events import RequestProgress, RequestRecord

REQUEST_COLUMNS = ("time", "sess", "model > routed", "status", "in", "cached", "out", "ttft", "dur", "tok/s")
"""`in` is the whole prompt (new and cached tokens); `cached` the share llama-server served from its cache."""


def hms(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def secs(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}s"


def num(n: float | None, fmt: str = "{:,}") -> str:
    return "-" if n is None else fmt.format(n)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def routed(r: RequestRecord, width: int | None = None) -> str:
    """`requested -> backend[/model]`; with `width`, the backend only and the name cut to fit."""
    target = r.routed_backend or "?"
    if r.routed_model and width is None:
        target += f"/{r.routed_model}"
    if not r.requested_model:
        return r.path
    asked = r.requested_model.removeprefix("claude-") if width else r.requested_model
    text = f"{asked}>{target}" if width else f"{asked} -> {target}"
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def compact(n: float | None) -> str:
    """1234 -> 1.2k: token counts in a narrow column."""
    if n is None:
        return "-"
    if n < 1000:
        return f"{n:.0f}"
    if n < 100_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1000:.0f}k"


PHASE_TEXT = {"waiting": "wait", "generating": "gen"}
"""The status cell of a request still under way: waiting for its first token, or generating."""

Phase = str | RequestProgress
"""How far a row's request is: "done", "waiting", or its latest progress event."""


def status_text(r: RequestRecord, phase: Phase = "done") -> str:
    if isinstance(phase, RequestProgress):
        if phase.phase == "prefill" and phase.prompt_total:
            return f"pre{100 * (phase.prompt_done or 0) // phase.prompt_total:.0f}%"
        return PHASE_TEXT.get(phase.phase, phase.phase[:6])
    if phase in PHASE_TEXT:
        return PHASE_TEXT[phase]
    if r.client_hung_up:
        return "hungup"
    return str(r.status) if r.status is not None else "..."


def eta_text(seconds: float | None) -> str:
    """What is left of a prompt being read: ~8s, ~3m."""
    if seconds is None:
        return "~?"
    return f"~{seconds:.0f}s" if seconds < 100 else f"~{seconds / 60:.0f}m"


def cached_text(r: RequestRecord) -> str:
    """The share of the prompt llama-server served from its cache, as a narrow cell."""
    return "-" if r.cache_share is None else f"{100 * r.cache_share:.0f}%"


def request_row(r: RequestRecord, phase: Phase = "done") -> tuple[str, ...]:
    """The cells of one request under REQUEST_COLUMNS (a request under way shows its phase and time so far;
    while llama-server reads its prompt: the prompt's size, the share served from cache, the time left)."""
    prefill = isinstance(phase, RequestProgress) and phase.phase == "prefill"
    if prefill:
        assert isinstance(phase, RequestProgress)
        tokens_in = compact(phase.prompt_total)
        cached = f"{100 * (phase.prompt_cached or 0) // phase.prompt_total:.0f}%" if phase.prompt_total else "-"
        ttft = eta_text(phase.eta_s)
    else:
        tokens_in, cached = compact(r.input_tokens if r.cache_read_tokens is None
                                    else (r.input_tokens or 0) + r.cache_read_tokens), cached_text(r)
        ttft = "-" if r.ttft_ms is None else f"{r.ttft_ms / 1000:.2f}"
    return (
        hms(r.started_at),
        (r.session_id or "-")[:6],
        routed(r, 18),
        status_text(r, phase),
        tokens_in,
        cached,
        compact(r.output_tokens),
        ttft,
        "-" if r.duration_ms is None else f"{r.duration_ms / 1000:.1f}",
        compact(r.output_tps),
    )


BODY_END = "CCBRIDGE_BODY"


def curl_command(r: RequestRecord, proxy_url: str, body: bytes | None, cut: bool = False) -> str:
    """A curl command that sends the request again, as the client sent it; the key stays a shell
    variable (`$ANTHROPIC_AUTH_TOKEN`), never a value. Without a body (not kept, or cut) it says so."""
    if body is None:
        return ("# ccbridge did not keep this request's body (history.bodies is off, or retention removed it): "
                "there is nothing to replay")
    if cut:
        return (f"# the body was cut at {len(body):,} bytes (history.body_max_kb): raise the limit to replay "
                "requests this long")
    text = body.decode("utf-8", "replace")
    if f"\n{BODY_END}\n" in f"\n{text}\n":
        return "# the body holds the here-document's end marker: save it to a file and use --data-binary @file"
    return (
        f"curl -sS{'N' if r.stream else ''} {shlex.quote(proxy_url + r.path)} "
        "-H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' "
        '-H "authorization: Bearer $ANTHROPIC_AUTH_TOKEN" '
        f"--data-binary @- <<'{BODY_END}'\n{text}\n{BODY_END}"
    )


def body_preview(body: bytes, total: int, limit: int = 20_000) -> str:
    """A body for the detail view: JSON laid out, a stream as it came; long ones shortened, with a note."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            text = json.dumps(json.loads(text), indent=1, ensure_ascii=False)
        except ValueError:
            pass  # cut or not JSON: as it is
    note = ""
    if len(text) > limit:
        text, note = text[:limit], f"\n... ({len(text) - limit:,} more characters; c copies the whole request)"
    if total > len(body):
        note += f"\n[cut: {len(body):,} of {total:,} bytes kept (history.body_max_kb)]"
    return text + note


def detail_lines(r: RequestRecord) -> list[tuple[str, str]]:
    """Label/value pairs for the detail view: everything the record knows."""
    cache = "-"
    if r.backend_cache_n is not None or r.backend_prompt_n is not None:
        cached, fresh = r.backend_cache_n or 0, r.backend_prompt_n or 0
    elif r.cache_read_tokens is not None and r.input_tokens is not None:  # the native route's usage
        cached, fresh = r.cache_read_tokens, r.input_tokens
    else:
        cached = fresh = -1
    if cached >= 0:
        total = cached + fresh
        cache = f"{cached:,} of {total:,} prompt tokens from llama-server's cache" + (
            f" ({100 * cached / total:.0f}%)" if total else "")
    hung = "no"
    if r.client_hung_up:
        hung = "yes: the client hung up and the model was stopped"
    lines = [
        ("id", r.id),
        ("started", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at))),
        ("request", f"{r.method} {r.path}" + ("  (stream)" if r.stream else "")),
        ("session", r.session_id or "-"),
        ("client", r.client_version or "-"),
        ("model asked", r.requested_model or "-"),
        ("alias rule", repr(r.alias_rule) if r.alias_rule else "-"),
        ("routed to", (r.routed_backend or "-") + (f"/{r.routed_model}" if r.routed_model else "")),
        ("status", status_text(r) + (f"  stop: {r.stop_reason}" if r.stop_reason else "")),
        ("tokens", f"in {num(r.input_tokens)}  out {num(r.output_tokens)}  cache read "
                   f"{num(r.cache_read_tokens)}  cache write {num(r.cache_creation_tokens)}"),
        ("timing", f"first token {secs(r.ttft_ms)}  total {secs(r.duration_ms)}  "
                   f"{num(r.output_tps, '{:.1f}')} tok/s"),
        ("llama-server", f"prompt {num(r.backend_prompt_tps, '{:.0f}')} tok/s  "
                         f"generation {num(r.backend_gen_tps, '{:.1f}')} tok/s"),
        ("prompt cache", cache),
        ("backend calls", f"{r.backend_calls}" + (" (LiteLLM retried; extra calls refused)"
                                                  if r.backend_calls > 1 else "")),
        ("client hung up", hung),
        ("tool calls", repair_text(r)),
        ("error", r.error or "-"),
    ]
    if r.miss_reason:  # why the prompt cache gave less than it should have (backend.proxy.misses)
        lines.insert(next(i for i, (label, _) in enumerate(lines) if label == "prompt cache") + 1,
                     ("cache miss", r.miss_reason))
    return lines


def repair_text(r: RequestRecord) -> str:
    """The detail view's tool-call repair line: what the model wrote as text, and that it went out as tool_use."""
    if not r.tool_repairs:
        return "-"
    written = " ".join((r.repaired_text or "").split())
    written = written if len(written) <= 400 else written[:400] + "…"
    return (f"{r.tool_repairs} written as text by the model, sent as tool_use block"
            f"{'s' if r.tool_repairs > 1 else ''} (repaired; see the answer below). The text was: {written}")


def service_address(svc: dict[str, Any]) -> str:
    """host:port (the scheme is always http here, and cards are narrow at 80 columns)."""
    if svc.get("url"):
        return str(svc["url"]).removeprefix("http://")
    if svc.get("port"):
        return f"127.0.0.1:{svc['port']}"
    return "-"


def progress_text(progress: RequestProgress | None) -> str:
    """A request under way, in words: how far llama-server has read its prompt, or that it generates."""
    if progress is None:
        return "under way: waiting for the model (no progress reported yet)"
    if progress.phase == "generating":
        return "under way: generating (the prompt is read)"
    total, done, cached = progress.prompt_total or 0, progress.prompt_done or 0, progress.prompt_cached or 0
    share = f" ({100 * done / total:.0f}%)" if total else ""
    return (f"under way: llama-server has read {done:,} of {total:,} prompt tokens{share}, {cached:,} of them "
            f"from its cache; {eta_text(progress.eta_s).removeprefix('~')} left at this speed")
