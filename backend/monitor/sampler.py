"""`BackendMonitor`: samples every backend, the GPU and the host in the background.

Runs on the bridge's asyncio loop as one task that never overlaps itself:
HTTP probes go through an aiohttp session (short timeouts), blocking reads
(psutil, NVML, nvidia-smi, the GGUF header) run on one worker thread of its
own, so the proxy is never blocked and the default executor is left alone.
Readers call `snapshot()`, which returns the newest frozen `MonitorSnapshot`
at once; a failing sample keeps the previous data and sets `last_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from typing import Any

import aiohttp
import psutil

from backend.config.model import BackendConfig
from backend.events import RequestRecord
from backend.monitor.advice import advise, context_failure
from backend.monitor.backend_status import BackendStatus, HealthState, ProcessFlags, ProcessStatus, SlotStatus
from backend.monitor.cache import CacheFolder, SlotFacts
from backend.monitor.gguf import ModelShape, read_model_shape
from backend.monitor.gpu import GpuProbe
from backend.monitor.kv import swa_status
from backend.monitor.llama import (
    LlamaReading,
    ModelInfo,
    live_rates,
    metrics_from_samples,
    parse_model_info,
    parse_prometheus,
    parse_slots,
    probe_llama,
)
from backend.monitor.machine_status import GpuStatus, HostStatus
from backend.monitor.process import ProcessProbe, command_flags
from backend.monitor.snapshot import MonitorSnapshot, Series

DEFAULT_INTERVAL = 2.0
DEFAULT_HISTORY_S = 300.0
PROPS_EVERY_S = 30.0


@dataclass
class _BackendState:
    """What the monitor remembers of one backend between samples."""

    health: HealthState = "unknown"
    since: float | None = None
    info: ModelInfo = field(default_factory=ModelInfo)
    info_at: float | None = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    metrics_prev: dict[str, float] | None = None
    slots_prev: tuple[SlotStatus, ...] = ()
    slots_at: float | None = None
    shapes: dict[str, ModelShape | None] = field(default_factory=dict)  # model path -> its GGUF's shape
    process_started: float | None = None


@dataclass(frozen=True, slots=True)
class _Local:
    """What the worker thread read for one round."""

    processes: dict[str, tuple[ProcessStatus | None, str | None]]
    shapes: dict[str, ModelShape | None]
    paths: dict[str, str]
    gpu: GpuStatus
    host: HostStatus


class BackendMonitor:
    """Background sampler of llama-server, its process, the GPU and the host.

    `backends` is called each round (config reloads take effect at once).
    `session` is the bridge's aiohttp session; without one the monitor opens
    (and closes) its own. `gpu` and `processes` are injectable for tests.
    """

    def __init__(self, backends: Callable[[], Mapping[str, BackendConfig]], *,
                 session: aiohttp.ClientSession | None = None, interval: float = DEFAULT_INTERVAL,
                 history_s: float = DEFAULT_HISTORY_S, props_every: float = PROPS_EVERY_S,
                 gpu: GpuProbe | None = None, processes: ProcessProbe | None = None) -> None:
        self._backends = backends
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None
        self.interval = interval
        self._props_every = props_every
        self._gpu = gpu or GpuProbe()
        self._processes = processes or ProcessProbe()
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._states: dict[str, _BackendState] = {}
        self._history: dict[str, tuple[str, deque[tuple[float, float | None]]]] = {}
        self._history_len = max(2, int(history_s / max(interval, 0.1)) + 1)
        self._cache = CacheFolder()
        self._failures: deque[RequestRecord] = deque(maxlen=50)
        self._snap = MonitorSnapshot(taken_at=None, interval_s=interval)
        self._derived_version = -1
        self._max_tokens: dict[str, int | None] = {}
        self._managed: set[str] = set()
        with contextlib.suppress(Exception):
            psutil.cpu_percent(None)  # prime: the first call always says 0.0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, session: aiohttp.ClientSession | None = None) -> None:
        """Begin sampling in the background (the first sample is taken at once).

        `session`, when given, replaces the one passed at construction (the
        bridge creates its session only when it starts).
        """
        if session is not None:
            self._session = session
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="backend-monitor")

    async def stop(self) -> None:
        """Stop sampling; release NVML, the worker thread and an own session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pool is not None:
            with contextlib.suppress(Exception):  # a hung vendor tool must not hold up shutdown
                await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(self._pool, self._gpu.close), 2.0)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None
        self._snap = replace(self._snap, sampling=False)

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await self.sample()
            # Polls never overlap: the next one is armed after this one ended.
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - began)))

    # -- inputs ----------------------------------------------------------------------------------
    def add_record(self, record: RequestRecord) -> None:
        """Fold a finished request (cache shares; context-size failures for advice). Thread-safe, quick."""
        self._cache.add(record)
        if context_failure(record) is not None:
            self._failures.append(record)
            self._cache.version += 1  # re-derive advice on the next read

    def seed(self, records: list[RequestRecord]) -> None:
        """Fold earlier requests (e.g. the history store's newest, at start) so cache shares and
        recent context failures survive a restart of ccbridge."""
        for record in sorted(records, key=lambda r: r.started_at):
            self.add_record(record)

    # -- output ----------------------------------------------------------------------------------
    def snapshot(self) -> MonitorSnapshot:
        """The newest snapshot; cache shares and advice include records folded since the last sample."""
        snap = self._snap
        if self._cache.version != self._derived_version:
            snap = self._derive(snap)
            self._snap = snap
        return snap

    # -- one round -------------------------------------------------------------------------------
    async def sample(self) -> MonitorSnapshot:
        """Take one sample of everything now and return the new snapshot; never raises."""
        try:
            snap = await self._sample()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - keep the previous data, say what broke
            snap = replace(self._snap, last_error=f"{type(exc).__name__}: {exc}")
        self._snap = snap
        return snap

    def _http(self) -> aiohttp.ClientSession:
        if self._session is not None and not self._session.closed:
            return self._session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession(
                trust_env=False, connector=aiohttp.TCPConnector(limit=8, keepalive_timeout=30))
        return self._own_session

    async def _sample(self) -> MonitorSnapshot:
        backends = dict(self._backends())
        self._max_tokens = {name: cfg.max_tokens for name, cfg in backends.items()}
        self._managed = {name for name, cfg in backends.items() if cfg.command}
        for gone in set(self._states) - set(backends):
            del self._states[gone]
        now = time.time()
        session = self._http()
        jobs = []
        for name, cfg in backends.items():
            state = self._states.setdefault(name, _BackendState())
            want_props = (state.info_at is None or now - state.info_at >= self._props_every
                          or state.health != "ok")
            jobs.append(probe_llama(session, cfg.api_base, cfg.api_key, at=now, with_props=want_props))
        readings: list[LlamaReading] = list(await asyncio.gather(*jobs))
        model_paths = {}
        for (name, _cfg), reading in zip(backends.items(), readings, strict=True):
            state = self._states[name]
            props, models = reading.body("props"), reading.body("models")
            if props is not None or models is not None:
                fresh = parse_model_info(props, models)
                if props is None or models is None:  # one failed this time: keep what it said before
                    fresh = _merge(fresh, state.info)
                state.info = fresh
                state.info_at = now if props is not None and models is not None else state.info_at
            model_paths[name] = state.info.model_path
        came_up = {name for (name, _c), reading in zip(backends.items(), readings, strict=True)
                   if reading.health != "unreachable" and reading.health != self._states[name].health}
        local = await self._local(backends, model_paths, came_up)
        statuses = tuple(self._backend_status(name, cfg, reading, local)
                         for (name, cfg), reading in zip(backends.items(), readings, strict=True))
        taken = time.time()
        self._record_history(taken, statuses, local)
        snap = MonitorSnapshot(
            taken_at=taken, interval_s=self.interval, backends=statuses, gpu=local.gpu, host=local.host,
            history=self._series(), sampling=self._task is not None and not self._task.done(),
        )
        return self._derive(snap)

    async def _local(self, backends: Mapping[str, BackendConfig], model_paths: Mapping[str, str | None],
                     came_up: set[str]) -> _Local:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ccbridge-monitor")
        known = {name: dict(self._states[name].shapes) for name in backends}
        api_bases = {name: cfg.api_base for name, cfg in backends.items()}
        configured = {name: command_flags(cfg.command) for name, cfg in backends.items()}

        def work() -> _Local:
            processes = {name: self._processes.read(base, rescan=name in came_up)
                         for name, base in api_bases.items()}
            shapes: dict[str, ModelShape | None] = {}
            paths: dict[str, str] = {}
            for name, (proc, _note) in processes.items():
                # A path /props names is only a file here when the server runs here (or ccbridge runs it).
                here = proc.flags if proc is not None else configured[name]
                path = model_paths.get(name) or (here.model if here else None)
                if here is None or not path:
                    continue
                if proc is not None and not os.path.isabs(path):  # `-m model.gguf`: relative to its folder
                    with contextlib.suppress(psutil.Error, OSError):
                        path = os.path.join(psutil.Process(proc.pid).cwd(), path)
                shapes[name] = known[name][path] if path in known[name] else read_model_shape(path)
                paths[name] = path
            pids = {proc.pid: name for name, (proc, _n) in processes.items() if proc is not None}
            return _Local(processes, shapes, paths, self._gpu.read(pids), read_host())

        local = await asyncio.get_running_loop().run_in_executor(self._pool, work)
        for name, path in local.paths.items():
            self._states[name].shapes[path] = local.shapes.get(name)
        return local

    def _backend_status(self, name: str, cfg: BackendConfig, reading: LlamaReading, local: _Local) -> BackendStatus:
        state = self._states[name]
        if reading.health != state.health:
            state.health, state.since = reading.health, reading.at
        for endpoint, answer in reading.answers.items():
            state.endpoints[endpoint] = answer.state
        if reading.health == "unreachable":
            for endpoint in ("props", "models", "slots", "metrics"):
                state.endpoints[endpoint] = "unreachable"
            state.slots_prev, state.metrics_prev = (), None
        info = state.info
        slots: tuple[SlotStatus, ...] = ()
        prompt_tps = gen_tps = None
        slots_body = reading.body("slots")
        if slots_body is not None:
            slots = parse_slots(slots_body)
            if slots and (len(slots) != info.total_slots or slots[0].n_ctx != info.n_ctx_slot):
                state.info_at = None  # restarted with other -c/-np: read /props again next round
            if state.slots_at is not None:
                prompt_tps, gen_tps = live_rates(state.slots_prev, slots, reading.at - state.slots_at)
            state.slots_prev, state.slots_at = slots, reading.at
        metrics = None
        metrics_text = reading.body("metrics")
        if metrics_text is not None:
            samples = parse_prometheus(metrics_text)
            metrics = metrics_from_samples(samples, state.metrics_prev)
            state.metrics_prev = samples
            idle = metrics.requests_processing == 0
            if gen_tps is None:
                gen_tps = metrics.gen_tps if metrics.gen_tps is not None else (0.0 if idle else None)
            if prompt_tps is None:
                prompt_tps = metrics.prompt_tps if metrics.prompt_tps is not None else (0.0 if idle else None)
        busy = sum(1 for s in slots if s.busy) if slots_body is not None else (
            metrics.requests_processing if metrics is not None else None)
        proc, note = local.processes.get(name, (None, None))
        shape = local.shapes.get(name)
        if proc is not None and proc.started_at != state.process_started:
            if state.process_started is not None:
                state.info_at = None  # a new llama-server process: its model or flags may differ
            state.process_started = proc.started_at
        return BackendStatus(
            name=name,
            api_base=cfg.api_base,
            root_url=reading.root_url,
            health=state.health,
            health_since=state.since,
            health_detail=reading.health_detail,
            checked_at=reading.at,
            endpoints=dict(state.endpoints),
            model=info.model,
            model_path=info.model_path,
            model_alias=info.model_alias,
            build=info.build,
            n_ctx_slot=info.n_ctx_slot or (slots[0].n_ctx if slots else None),
            n_ctx_train=info.n_ctx_train,
            n_params=info.n_params,
            size_bytes=info.size_bytes,
            n_vocab=info.n_vocab,
            ftype=info.ftype,
            total_slots=info.total_slots or (len(slots) or None),
            busy_slots=busy,
            slots=slots,
            n_layers=shape.n_layers if shape is not None else None,
            swa=swa_status(shape, *self._flags(proc, cfg), info.n_ctx_slot, info.total_slots),
            gen_tps=gen_tps,
            prompt_tps=prompt_tps,
            metrics=metrics,
            process=proc,
            process_note=note,
        )

    @staticmethod
    def _flags(proc: ProcessStatus | None, cfg: BackendConfig) -> tuple[ProcessFlags | None, str | None]:
        """llama-server's flags: its process's, else (while that cannot be read) its configured command's."""
        if proc is not None and proc.is_llama_server:
            return proc.flags, "process"
        flags = command_flags(cfg.command)
        return (flags, "command") if flags is not None else (None, None)

    def _derive(self, snap: MonitorSnapshot) -> MonitorSnapshot:
        """Cache report and advice from the folded records and the snapshot's readings."""
        version = self._cache.version
        facts = {b.name: SlotFacts(b.total_slots, b.n_ctx_slot,
                                   b.process.flags.cache_ram_mib if b.process else None,
                                   swa_window=b.swa.window if b.swa else None,
                                   swa_full=b.swa.full if b.swa else None) for b in snap.backends}
        cache = self._cache.report(facts)
        advice = advise(snap.backends, snap.gpu, cache, tuple(self._failures), self._max_tokens,
                        managed=self._managed)
        self._derived_version = version
        return replace(snap, cache=cache, advice=advice)

    # -- history ---------------------------------------------------------------------------------
    def _push(self, key: str, unit: str, t: float, value: float | None) -> None:
        entry = self._history.get(key)
        if entry is None:
            entry = (unit, deque(maxlen=self._history_len))
            self._history[key] = entry
        entry[1].append((t, value))

    def _record_history(self, t: float, statuses: tuple[BackendStatus, ...], local: _Local) -> None:
        for b in statuses:
            self._push(f"backend:{b.name}:gen_tps", "tok/s", t, b.gen_tps)
            self._push(f"backend:{b.name}:prompt_tps", "tok/s", t, b.prompt_tps)
            self._push(f"backend:{b.name}:busy_slots", "slots", t,
                       float(b.busy_slots) if b.busy_slots is not None else None)
            if b.process is not None:
                self._push(f"backend:{b.name}:cpu_percent", "%", t, b.process.cpu_percent)
                self._push(f"backend:{b.name}:rss_bytes", "bytes", t,
                           float(b.process.rss_bytes) if b.process.rss_bytes is not None else None)
        for dev in local.gpu.devices:
            self._push(f"gpu:{dev.index}:util_percent", "%", t, dev.util_percent)
            self._push(f"gpu:{dev.index}:mem_used_bytes", "bytes", t,
                       float(dev.mem_used_bytes) if dev.mem_used_bytes is not None else None)
        self._push("host:cpu_percent", "%", t, local.host.cpu_percent)

    def _series(self) -> tuple[Series, ...]:
        return tuple(Series(key, unit, tuple(p[0] for p in points), tuple(p[1] for p in points))
                     for key, (unit, points) in self._history.items())


def _merge(new: ModelInfo, old: ModelInfo) -> ModelInfo:
    """`new`, with its missing values taken from `old`."""
    return ModelInfo(**{f.name: getattr(new, f.name) if getattr(new, f.name) is not None else getattr(old, f.name)
                        for f in fields(ModelInfo)})


def read_host() -> HostStatus:
    """Machine-wide CPU and memory (psutil); None for what cannot be read."""
    try:
        cpu: float | None = psutil.cpu_percent(None)
    except Exception:  # noqa: BLE001 - a probe never raises
        cpu = None
    try:
        vm = psutil.virtual_memory()
        used, total = int(vm.total - vm.available), int(vm.total)
    except Exception:  # noqa: BLE001
        used = total = None  # type: ignore[assignment]
    return HostStatus(cpu_percent=cpu, cpu_count=psutil.cpu_count(), mem_used_bytes=used, mem_total_bytes=total,
                      platform=f"{sys.platform} {platform.machine()}")


async def sample_once(backends: Mapping[str, BackendConfig], records: list[RequestRecord] | None = None,
                      gpu: GpuProbe | None = None, settle: float = 0.3) -> MonitorSnapshot:
    """A snapshot with a session of its own (for `ccbridge doctor` and other one-shot callers).

    With `settle` > 0 it samples twice that many seconds apart, so CPU use and
    rates have an interval to be measured over.
    """
    monitor = BackendMonitor(lambda: backends, gpu=gpu)
    try:
        for record in records or ():
            monitor.add_record(record)
        snap = await monitor.sample()
        if settle > 0:
            await asyncio.sleep(settle)
            snap = await monitor.sample()
        return snap
    finally:
        await monitor.stop()
