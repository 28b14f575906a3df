"""What the backend monitor knows at one moment: frozen, typed, JSON-ready.

A `MonitorSnapshot` is built by `BackendMonitor` (sampler.py) from the probes
in this package and handed to readers unchanged: the status API returns
`snapshot.to_dict()` as `status()["monitor"]`, `ccbridge doctor` prints from
it, the panel's GPU screen draws it. Every value a probe could not read is
`None` (shown as missing), never an exception and never a made-up zero.

Units: times are unix seconds (`*_at`) or seconds (`*_s`), durations of
requests are milliseconds (`*_ms`), memory and sizes are bytes, speeds are
tokens per second (`*_tps`), shares and progress are fractions 0..1,
percentages are 0..100 (`*_percent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

HealthState = Literal["ok", "loading", "error", "unreachable", "unknown"]
"""llama-server's `GET /health`: 200 ok; 503 loading the model; another answer
error; no connection unreachable; unknown before the first probe."""

EndpointState = Literal["ok", "disabled", "error", "unreachable", "unknown"]
"""One optional endpoint: ok answered; disabled answered 501/404 (flag off);
error any other failure; unreachable no connection; unknown not yet asked."""

AdviceLevel = Literal["error", "warn", "info"]


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


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Prompt-cache share folded from finished requests (backend leg's timings).

    `cached_tokens` is llama-server's `timings.cache_n`, `prompt_tokens`
    `cache_n + prompt_n` (the whole prompt the server saw).
    """

    key: str
    """The backend name (per-backend rows) or the Claude Code session id (per-session rows)."""
    backend: str | None
    """Backend the requests went to (the last one, for a session)."""
    session_id: str | None
    """X-Claude-Code-Session-Id; None for per-backend rows."""
    requests: int
    """Requests that carried llama-server timings."""
    prompt_tokens: int
    """Sum of prompt tokens the server saw (cached + processed)."""
    cached_tokens: int
    """Sum of prompt tokens served from the KV cache."""
    share: float | None
    """cached_tokens / prompt_tokens over all requests, None when no prompt tokens."""
    last_share: float | None
    """Share of the most recent request."""
    later_share: float | None
    """Share over requests after the first of each session (what a warm cache should serve)."""
    prompt_tps: float | None
    """Mean llama-server prompt speed (timings.prompt_per_second) over the requests."""
    ttft_ms: float | None
    """Median time to first token seen by the client."""
    last_ttft_ms: float | None
    """Time to first token of the most recent request."""
    low_turns: int = 0
    """Later turns (not a session's first) whose share was under 50%."""
    first_share: float | None = None
    """Share over the first turns of sessions that came after another session's prompt on the same
    backend: what a new session (or a subagent) took from the previous one's cache."""
    missed_first_turns: int = 0
    """Such first turns that served (nearly) nothing from cache (under 5%)."""
    reason: str | None = None
    """Why the share was low on a later turn, when it can be told."""
    fix: str | None = None
    """What to change for that reason."""
    last_at: float | None = None
    """Start time of the most recent request."""


@dataclass(frozen=True, slots=True)
class CacheReport:
    """Cache shares per backend and per Claude Code session (newest sessions first)."""

    by_backend: tuple[CacheStats, ...] = ()
    """One row per backend."""
    by_session: tuple[CacheStats, ...] = ()
    """One row per session id, newest first (bounded)."""


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """One process holding GPU memory."""

    pid: int
    """Process id."""
    name: str | None
    """Process name when it can be read."""
    used_memory_bytes: int | None
    """GPU memory it holds (None when the driver does not say, e.g. in containers)."""
    is_backend: bool = False
    """True when this pid is a monitored llama-server."""
    backend: str | None = None
    """That backend's name."""


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as its vendor's tool reports it."""

    index: int
    """Device index."""
    name: str | None
    """Product name."""
    uuid: str | None = None
    """Stable id."""
    util_percent: float | None = None
    """GPU utilisation 0..100."""
    mem_util_percent: float | None = None
    """Memory controller utilisation 0..100."""
    mem_used_bytes: int | None = None
    """Memory in use."""
    mem_total_bytes: int | None = None
    """Total memory."""
    temperature_c: float | None = None
    """Temperature in degrees Celsius."""
    power_w: float | None = None
    """Power draw in watts."""
    power_limit_w: float | None = None
    """Power limit in watts."""
    clock_graphics_mhz: float | None = None
    """Graphics (shader) clock."""
    clock_mem_mhz: float | None = None
    """Memory clock."""
    clock_sm_mhz: float | None = None
    """SM clock (NVIDIA)."""
    fan_percent: float | None = None
    """Fan speed 0..100 when there is a fan."""
    processes: tuple[GpuProcess, ...] = ()
    """Processes holding memory on this device."""
    backend_mem_bytes: int | None = None
    """GPU memory held by llama-server processes on this device (sum), None when unknown."""

    @property
    def mem_fraction(self) -> float | None:
        """Used / total memory, 0..1."""
        if self.mem_used_bytes is None or not self.mem_total_bytes:
            return None
        return self.mem_used_bytes / self.mem_total_bytes


@dataclass(frozen=True, slots=True)
class GpuStatus:
    """GPU telemetry, or the clear statement that there is none here."""

    vendor: Literal["nvidia", "amd", "none"] = "none"
    """Which vendor's GPUs were read; "none" when no telemetry is available."""
    source: str | None = None
    """How it was read: "nvml", "nvidia-smi", "amd-smi", "rocm-smi"; None when none."""
    available: bool = False
    """True when at least one device was read."""
    note: str | None = None
    """For the no-GPU state: what was tried and why nothing was read (shown to the user);
    for a read with gaps: what is missing."""
    driver_version: str | None = None
    """Driver version when reported."""
    devices: tuple[GpuDevice, ...] = ()
    """The devices."""

    @property
    def no_telemetry(self) -> bool:
        """True for the "no GPU telemetry here" state."""
        return not self.available


@dataclass(frozen=True, slots=True)
class HostStatus:
    """This machine's CPU and memory: what a CPU-only or Apple machine shows instead of a GPU."""

    cpu_percent: float | None = None
    """Whole-machine CPU use 0..100."""
    cpu_count: int | None = None
    """Logical CPUs."""
    mem_used_bytes: int | None = None
    """Memory in use (total - available)."""
    mem_total_bytes: int | None = None
    """Total memory."""
    platform: str | None = None
    """sys.platform plus machine (e.g. "linux x86_64", "darwin arm64")."""


@dataclass(frozen=True, slots=True)
class Advice:
    """One thing to change, with the fix."""

    level: AdviceLevel
    """error: requests will fail; warn: they will be slow or fail later; info: worth knowing."""
    code: str
    """Stable id, e.g. "ctx_too_small", "ctx_below_compact", "no_metrics", "no_slots",
    "ngl_partial", "gpu_mem_full", "request_context_exceeded", "cache_low", "swa_no_full"."""
    text: str
    """What is wrong, with the numbers."""
    fix: str
    """What to do about it."""
    backend: str | None = None
    """The backend it is about (None for machine-wide advice)."""


@dataclass(frozen=True, slots=True)
class Series:
    """A short history for a chart: parallel lists of times and values."""

    key: str
    """Stable id: "backend:<name>:gen_tps", "backend:<name>:prompt_tps", "backend:<name>:busy_slots",
    "backend:<name>:cpu_percent", "backend:<name>:rss_bytes", "gpu:<index>:util_percent",
    "gpu:<index>:mem_used_bytes", "host:cpu_percent"."""
    unit: str
    """"tok/s", "%", "bytes", "slots"."""
    t: tuple[float, ...]
    """Sample times (unix seconds), oldest first."""
    v: tuple[float | None, ...]
    """Values, None where the sample had no value."""


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """Everything the backend monitor knows now: `status()["monitor"]`."""

    taken_at: float | None
    """When the newest sample finished (None before the first)."""
    interval_s: float
    """Sampling interval."""
    backends: tuple[BackendStatus, ...] = ()
    """One per configured backend, in config order."""
    gpu: GpuStatus = field(default_factory=GpuStatus)
    """GPU telemetry or the no-GPU state."""
    host: HostStatus = field(default_factory=HostStatus)
    """Machine CPU and memory."""
    cache: CacheReport = field(default_factory=CacheReport)
    """Prompt-cache shares."""
    advice: tuple[Advice, ...] = ()
    """Advice, most severe first."""
    history: tuple[Series, ...] = ()
    """Chart series over the last few minutes."""
    sampling: bool = False
    """True while the background sampler runs."""
    last_error: str | None = None
    """A sampler failure, if the last sample broke (the previous data stays)."""

    def backend(self, name: str) -> BackendStatus | None:
        """The status of the backend called `name`, if monitored."""
        return next((b for b in self.backends if b.name == name), None)

    def series(self, key: str) -> Series | None:
        """The history series with this key, if any."""
        return next((s for s in self.history if s.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists; derived properties added).

        Computed once per snapshot (the status API asks often, on the proxy's
        loop); each call returns a fresh top-level dict over shared inner values,
        which readers must not mutate.
        """
        global _LAST_DICT
        cached = _LAST_DICT
        if cached is not None and cached[0] is self:
            return dict(cached[1])
        data: dict[str, Any] = _plain(self)
        for dev, dev_dict in zip(self.gpu.devices, data["gpu"]["devices"], strict=True):
            dev_dict["mem_fraction"] = dev.mem_fraction
        data["gpu"]["no_telemetry"] = self.gpu.no_telemetry
        _LAST_DICT = (self, data)
        return dict(data)


_LAST_DICT: tuple[MonitorSnapshot, dict[str, Any]] | None = None
_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts to JSON types (faster than dataclasses.asdict, which deep-copies)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, tuple | list):
        if all(isinstance(v, _SCALARS) for v in value):
            return list(value)
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value
