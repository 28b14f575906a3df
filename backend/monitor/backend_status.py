"""What one llama-server is doing, as the monitor last saw it: health, slots, /metrics, its process, SWA.

Parts of a `MonitorSnapshot` (snapshot.py, which has the units). Filled by
the probes in `llama.py`, `process.py` and `kv.py`; every value a probe could
not read is None.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HealthState = Literal["ok", "loading", "error", "unreachable", "unknown"]
"""llama-server's `GET /health`: 200 ok; 503 loading the model; another answer
error; no connection unreachable; unknown before the first probe."""

EndpointState = Literal["ok", "disabled", "error", "unreachable", "unknown"]
"""One optional endpoint: ok answered; disabled answered 501/404 (flag off);
error any other failure; unreachable no connection; unknown not yet asked."""


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """One llama-server slot, from `GET /slots`.

    In the build measured here a busy slot reports how many tokens it holds
    and has processed so far, but not the size of the whole prompt it is
    working through: `progress` is therefore only known once generation has
    started (1.0), and is None during prompt processing.
    """

    id: int
    """Slot index (0 .. total_slots-1)."""
    n_ctx: int | None
    """Context size of this slot in tokens (-c divided by -np)."""
    busy: bool
    """`is_processing`: the slot is serving a request now."""
    phase: Literal["idle", "prompt", "generating"] = "idle"
    """idle; prompt: processing the prompt (nothing decoded yet); generating: decoding tokens."""
    task_id: int | None = None
    """`id_task` of the request being (or last) served."""
    prompt_tokens: int | None = None
    """`n_prompt_tokens`: prompt tokens in the slot so far (grows batch by batch while processing)."""
    prompt_processed: int | None = None
    """`n_prompt_tokens_processed`: prompt tokens evaluated so far (cached ones excluded)."""
    prompt_cached: int | None = None
    """`n_prompt_tokens_cache`: prompt tokens reused from this slot's cache."""
    progress: float | None = None
    """Prompt processing progress 0..1: 1.0 once generating, None while unknown."""
    decoded: int | None = None
    """Tokens generated so far for the current request (`next_token.n_decoded`)."""
    remaining: int | None = None
    """Tokens left before max_tokens (`next_token.n_remain`; None when unlimited)."""


@dataclass(frozen=True, slots=True)
class BackendMetrics:
    """llama-server's `GET /metrics` (Prometheus text); every value optional.

    Names differ between builds (FACTS): a metric the build does not export
    stays None. `prompt_tps`/`gen_tps` come from counter deltas between two
    samples, so another scraper (Prometheus) reading /metrics does not skew
    them; `*_avg` are llama-server's per-read gauges, which such a reader does.
    """

    prompt_tps: float | None = None
    """Prompt speed of the requests that ended since the previous sample: delta
    prompt_tokens_total / delta prompt_seconds_total; None when none ended (or no previous sample)."""
    gen_tps: float | None = None
    """Generation speed of the requests that ended since the previous sample: delta
    tokens_predicted_total / delta tokens_predicted_seconds_total (this build adds a request's
    tokens only when it ends); None when none ended."""
    prompt_tps_avg: float | None = None
    """`llamacpp:prompt_tokens_seconds`: llama-server's own prompt throughput over the requests
    since the previous GET /metrics by anyone (it resets this bucket on every read; 0 when none)."""
    gen_tps_avg: float | None = None
    """`llamacpp:predicted_tokens_seconds`: the same for generation (reset on every read)."""
    requests_processing: int | None = None
    """`llamacpp:requests_processing`: requests being served now."""
    requests_deferred: int | None = None
    """`llamacpp:requests_deferred`: requests waiting for a free slot."""
    prompt_tokens_total: int | None = None
    """`llamacpp:prompt_tokens_total`: prompt tokens processed, cached ones excluded."""
    prompt_tokens_cached_total: int | None = None
    """`llamacpp:prompt_tokens_cached_total`: prompt tokens reused from the KV cache."""
    tokens_predicted_total: int | None = None
    """`llamacpp:tokens_predicted_total`: tokens generated."""
    prompt_seconds_total: float | None = None
    """`llamacpp:prompt_seconds_total`: time spent processing prompts."""
    tokens_predicted_seconds_total: float | None = None
    """`llamacpp:tokens_predicted_seconds_total`: time spent generating."""
    n_decode_total: int | None = None
    """`llamacpp:n_decode_total`: llama_decode() calls."""
    n_tokens_max: int | None = None
    """`llamacpp:n_tokens_max`: largest sequence seen (prompt + generation)."""
    busy_slots_per_decode: float | None = None
    """`llamacpp:n_busy_slots_per_decode`: average busy slots per decode call."""
    kv_cache_usage_ratio: float | None = None
    """`llamacpp:kv_cache_usage_ratio` (older builds only) 0..1."""
    cache_share_total: float | None = None
    """prompt_tokens_cached_total / (that + prompt_tokens_total): the server-wide cache share."""
    raw: dict[str, float] = field(default_factory=dict)
    """Every `llamacpp:*` sample as read (name without the prefix), for names this code does not know."""


@dataclass(frozen=True, slots=True)
class ProcessFlags:
    """The flags llama-server was started with, read from its command line.

    None means the flag was not given (llama-server's default applies); the
    `*_default` notes in the docstrings say what that default is in the
    build this was written against (0.3.36's llama.cpp, build 0c1e570).
    """

    model: str | None = None
    """`-m/--model` path (or `-hf`/`--hf-repo` / `-mu` value when the model came from there)."""
    ctx: int | None = None
    """`-c/--ctx-size`: total context, divided among the slots (default: the model's trained context)."""
    n_gpu_layers: int | None = None
    """`-ngl/--n-gpu-layers`: layers offloaded to the GPU (`auto`/`all` read as None with `n_gpu_layers_text`)."""
    n_gpu_layers_text: str | None = None
    """The raw -ngl value as given (e.g. "99", "auto", "all")."""
    parallel: int | None = None
    """`-np/--parallel`: number of slots."""
    metrics: bool = False
    """`--metrics`: GET /metrics enabled (off by default)."""
    slots: bool = True
    """GET /slots enabled: on by default in this build; False when `--no-slots` was given."""
    jinja: bool | None = None
    """`--jinja` given (True), `--no-jinja` given (False), neither (None)."""
    flash_attn: str | None = None
    """`-fa/--flash-attn` value ("on", "off", "auto"; a bare `-fa` reads as "on")."""
    cache_ram_mib: int | None = None
    """`-cram/--cache-ram` MiB of host memory for prompts pushed out of a slot (None: the build's
    default, 8192 in 0.3.36's; 0: off, so a session that loses its slot recomputes its prompt)."""
    threads: int | None = None
    """`-t/--threads`."""
    swa_full: bool = False
    """`--swa-full` (or LLAMA_ARG_SWA_FULL): sliding-window layers keep every cell, not just the
    window, so a new prompt can reuse any shared start of the cached one (off by default)."""
    kv_unified: bool | None = None
    """`-kvu/--kv-unified` (True) or `-no-kvu/--no-kv-unified` (False); None: the build's default
    (unified when -np is not given)."""
    ubatch: int | None = None
    """`-ub/--ubatch-size` (default 512)."""
    cache_type_k: str | None = None
    """`-ctk/--cache-type-k` (default f16)."""
    cache_type_v: str | None = None
    """`-ctv/--cache-type-v` (default f16)."""
    host: str | None = None
    """`--host`."""
    port: int | None = None
    """`--port`."""
    alias: str | None = None
    """`-a/--alias`."""


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """The llama-server process on this machine, found by its listening port."""

    pid: int
    """Process id."""
    name: str | None
    """Executable name (e.g. "llama-server")."""
    is_llama_server: bool
    """The executable looks like llama-server (its flags are only meaningful then)."""
    cmdline: tuple[str, ...]
    """Full command line as the OS reports it (API keys masked)."""
    cpu_percent: float | None
    """CPU use since the previous sample, percent of one core (can exceed 100)."""
    rss_bytes: int | None
    """Resident memory."""
    threads: int | None
    """Number of OS threads."""
    started_at: float | None
    """Process start time (unix seconds)."""
    uptime_s: float | None
    """Seconds since start, at sampling time."""
    flags: ProcessFlags
    """Parsed start flags."""


@dataclass(frozen=True, slots=True)
class SwaStatus:
    """Sliding-window attention: the model's window and layers (from its GGUF), whether llama-server
    keeps the full cache of those layers (--swa-full), and the KV memory either way.

    Without --swa-full llama-server keeps only about the last window of a sliding-window layer, so a
    prompt that differs from the cached one before its end (a new Claude Code session, a subagent)
    cannot reuse the shared start and is read again in full. Byte figures follow `backend.monitor.kv`
    and are None when a dimension, the context or a cache type is unknown.
    """

    window: int
    """`<arch>.attention.sliding_window`: tokens a sliding-window layer attends to."""
    swa_layers: int
    """Layers that use the window."""
    n_layers: int
    """All layers."""
    pattern_source: str | None
    """Where the layer pattern came from: "gguf" or "llama.cpp default for <arch>"."""
    full: bool | None
    """llama-server runs with --swa-full (True), without (False), or its flags cannot be read (None)."""
    full_source: str | None = None
    """Where `full` was read: "process" (its command line and LLAMA_ARG_* environment) or "command"
    (the backend's configured `command`, while its process cannot be read)."""
    n_ctx: int | None = None
    """Total context the figures are computed for (-c)."""
    slots: int | None = None
    """Slots (-np) the figures are computed for."""
    cache_types: str | None = None
    """KV cache types, K/V (e.g. "f16/f16")."""
    swa_cells: int | None = None
    """Tokens per slot a sliding-window layer keeps without --swa-full (window + ubatch, padded)."""
    kv_bytes: int | None = None
    """The whole KV cache as llama-server runs now."""
    base_bytes: int | None = None
    """Full-attention layers' share of it."""
    swa_bytes: int | None = None
    """Sliding-window layers without --swa-full."""
    swa_full_bytes: int | None = None
    """Sliding-window layers with --swa-full."""
    extra_bytes: int | None = None
    """What --swa-full adds: swa_full_bytes - swa_bytes."""


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """One configured backend (`backends.<name>`) as llama-server reports it."""

    name: str
    """The backend's name in ccbridge.yaml."""
    api_base: str
    """Its configured api_base (e.g. http://127.0.0.1:8080/v1)."""
    root_url: str
    """Server root where /health, /props, /slots, /metrics live."""
    health: HealthState = "unknown"
    """State from GET /health."""
    health_since: float | None = None
    """When `health` last changed (unix seconds)."""
    health_detail: str | None = None
    """Why, for error/unreachable (HTTP status and message, or the connection error)."""
    checked_at: float | None = None
    """When this backend was last sampled."""
    endpoints: dict[str, EndpointState] = field(default_factory=dict)
    """State of each probed endpoint: "health", "props", "models", "slots", "metrics"."""
    model: str | None = None
    """Model id from GET /v1/models (the alias, or the path when no alias)."""
    model_path: str | None = None
    """`model_path` from /props."""
    model_alias: str | None = None
    """`model_alias` from /props."""
    build: str | None = None
    """`build_info` from /props (e.g. "b1-0c1e570")."""
    n_ctx_slot: int | None = None
    """Context per slot in tokens (/props default_generation_settings.n_ctx, or /v1/models meta)."""
    n_ctx_train: int | None = None
    """Context the model was trained for (/v1/models meta.n_ctx_train)."""
    n_params: int | None = None
    """Parameter count (/v1/models meta.n_params)."""
    size_bytes: int | None = None
    """Model size in bytes (/v1/models meta.size)."""
    n_vocab: int | None = None
    """Vocabulary size (/v1/models meta.n_vocab)."""
    ftype: str | None = None
    """Weight type (/v1/models meta.ftype or /props model_ftype, e.g. "Q4_K - Medium")."""
    total_slots: int | None = None
    """Number of slots (/props total_slots; -np)."""
    busy_slots: int | None = None
    """Slots processing now (/slots; else /metrics requests_processing)."""
    slots: tuple[SlotStatus, ...] = ()
    """Per-slot detail from /slots (empty when /slots is off)."""
    n_layers: int | None = None
    """Repeating layers of the model (`<arch>.block_count` read from the GGUF file when it is on
    this machine); compare with the process's -ngl."""
    swa: SwaStatus | None = None
    """Sliding-window attention, when the model uses it (read from its GGUF file on this machine)."""
    gen_tps: float | None = None
    """Generation speed over the last interval, tokens/s: /slots n_decoded deltas while a slot
    generates, else /metrics counter deltas (requests that ended in the interval); 0.0 when the
    server is known idle; None when nothing says (see `metrics.gen_tps_avg` for the server's average)."""
    prompt_tps: float | None = None
    """Prompt processing speed over the last interval, tokens/s: /slots n_prompt_tokens_processed
    deltas, else /metrics counter deltas; 0.0 when known idle; None when nothing says."""
    metrics: BackendMetrics | None = None
    """From /metrics; None when /metrics is off or failed."""
    process: ProcessStatus | None = None
    """The local llama-server process; None when not on this machine or not readable."""
    process_note: str | None = None
    """Why `process` is None ("not on this machine", "access denied", ...)."""
