"""The whole backend as one object: what `ccbridge serve` runs and the panel drives.

`Bridge` implements the control interface (`backend.control.BridgeControl`):
status, history, aliases, services, logs, events. It serves that interface
over HTTP (`backend.api.server`) on the proxy's port, with Prometheus at
/metrics. Everything else (servers, LiteLLM, the store, the metrics fold,
config reloads) hangs off it and is not reached directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, TCPConnector, web

from backend import __version__, paths
from backend.api.server import ControlAPI
from backend.backend_probe import BackendInfo
from backend.claude_env import base_url, claude_settings, shell_lines
from backend.config import AliasTable, Config, ConfigDocument, ConfigError, load_config
from backend.config.model import LOOPBACK_HOSTS, BackendConfig
from backend.control import Alias, ConfigNotApplied, ServiceNotFound
from backend.events import (
    ConfigApplied,
    Event,
    EventBus,
    Listener,
    LogLine,
    RequestFinished,
    RequestProgress,
    RequestRecord,
    RequestStarted,
    ServiceStateChanged,
    UnknownModel,
)
from backend.metrics import RequestMetrics
from backend.metrics.prometheus import CONTENT_TYPE, BridgeCollector, render
from backend.metrics.sessions import SessionBoard
from backend.monitor.sampler import BackendMonitor
from backend.monitor.scorecard import ScorecardBook
from backend.proxy.balance import BackendHealth, GroupBalancer, groups_of
from backend.proxy.body import byte_limit
from backend.proxy.front import FrontProxy, Routing
from backend.proxy.guard import GuardedServer
from backend.proxy.hostcheck import refuse_foreign
from backend.proxy.leg import BackendLeg
from backend.proxy.misses import CacheFacts, MissExplainer
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PairRegistry
from backend.proxy.slots import SlotPinner
from backend.proxy.upstream import ExternalUpstream, NativeUpstream, Upstream
from backend.proxy.warm import Warmer
from backend.redaction import Redactor, config_secrets, learn
from backend.serve_info import started_by
from backend.services.litellm_service import LiteLLMService
from backend.services.llama_service import LlamaServers, LlamaServerService, command_with_flag
from backend.services.process import LogBuffer
from backend.services.slot_files import SlotFiles
from backend.services.supervised import READY
from backend.store import HistoryStore
from backend.store.history import RequestBodies

_WATCH_INTERVAL = 1.0
UNKNOWN_MODELS = 50
"""Unknown model names the status keeps (the latest seen), as /metrics keeps 50 model names."""
# Seconds a client may take to send its request headers before the connection is closed.
HEADER_TIMEOUT = 30.0


class StartupError(Exception):
    """ccbridge cannot start as configured; the message says what to change."""


def check_exposure(config: Config) -> None:
    """Listening beyond loopback without a key would open the model to the network."""
    if config.proxy.host not in LOOPBACK_HOSTS and not config.proxy.api_key:
        raise StartupError(
            f"proxy.host is {config.proxy.host!r}, which other machines can reach, but "
            "proxy.api_key is not set. Set proxy.api_key in ccbridge.yaml (clients then send it "
            "as ANTHROPIC_API_KEY), or keep proxy.host: 127.0.0.1."
        )


class Bridge:
    """Front proxy + backend leg + LiteLLM + history + metrics, driven as one (a `BridgeControl`)."""

    def __init__(self, config: Config, *, bus: EventBus | None = None, run_dir: Path | None = None,
                 history: HistoryStore | None = None) -> None:
        check_exposure(config)
        learn(config_secrets(config))  # the one redactor blanks them in everything that leaves
        self.config = config
        self.bus = bus or EventBus()
        self._run_dir = run_dir or paths.run_dir()
        self.health = BackendHealth(self._monitored_health)
        self.balancer = GroupBalancer(self.health, balance=lambda: self.config.groups.balance)
        self._routing = self._make_routing(config)
        self.registry = PairRegistry()
        self.history = history or HistoryStore(
            Path(config.history.path) if config.history.path else paths.history_db(),
            retention_days=config.history.retention_days,
            max_rows=config.history.max_rows,
        )
        self._bodies_config(config)
        self.unknown_models: dict[str, dict[str, Any]] = {}  # at most UNKNOWN_MODELS names, the latest seen
        self.unknown_models_forgotten = 0  # names dropped to keep that bound (a client can send any)
        self.proxy_log = LogBuffer()
        self.started_at: float | None = None
        self._leg_secret = secrets.token_urlsafe(32)
        learn([self._leg_secret])
        self._session: ClientSession | None = None
        self._backend_session: ClientSession | None = None
        self._servers: list[tuple[asyncio.Server, web.Server]] = []
        self._leg_port: int | None = None
        self.front: FrontProxy | None = None
        self.leg: BackendLeg | None = None
        self.litellm: LiteLLMService | None = None
        self._upstream: Upstream | None = None
        self._resolver: ModelResolver | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.monitor = BackendMonitor(lambda: self.config.backends)
        self.scorecards = ScorecardBook()  # what each backend's model can do for Claude Code (on demand)
        self.metrics = RequestMetrics(route_of=self._route_of)
        self.sessions = SessionBoard()
        self.slot_files = SlotFiles(paths.slots_dir(), lambda: self.config.cache, say=self._say_in_service)
        self.warmer = Warmer(lambda: self._backend_session, self.bus.publish,
                             families=lambda: self.config.cache.warm_families, enabled=lambda: self.config.cache.warm,
                             busy=lambda: self.front.in_flight if self.front is not None else 0)
        self._process_starts: dict[str, float] = {}  # backend -> its llama-server's start time, last seen
        self._restart_watch: asyncio.Task[None] | None = None
        self.llamas = LlamaServers(bus=self.bus, session=lambda: self._backend_session, slot_files=self.slot_files)
        self.api = ControlAPI(self, api_key=lambda: self.config.proxy.api_key, prometheus=self.prometheus)
        self._prometheus = BridgeCollector(self.metrics, self.services,
                                           self.monitor.snapshot, __version__, groups=self.groups)
        self._config_mtime = self._mtime()
        self._config_lock = asyncio.Lock()  # one config change at a time: file watcher, aliases, --swa-full
        self._staged: tuple[Config, Routing] | None = None  # a config being applied, while LiteLLM tries it
        # History listens on its own, first: a failing fold (metrics, monitor) never loses a record.
        self._unsubscribe_history = self.bus.subscribe(self._keep_history)
        self._unsubscribe = self.bus.subscribe(self._on_event)

    # -- façade --------------------------------------------------------------
    @property
    def proxy_url(self) -> str:
        return base_url(self.config)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Every event from now on (called on the publishing thread: hand over only)."""
        return self.bus.subscribe(listener)

    async def recent(self, limit: int = 100, *, model: str | None = None, status: int | str | None = None,
                     session_id: str | None = None, since: float | None = None) -> list[RequestRecord]:
        """History, newest first: read off the event loop (SQLite)."""
        return await asyncio.to_thread(self.history.recent, limit, model=model, status=status,
                                       session_id=session_id, since=since)

    async def record(self, request_id: str) -> RequestRecord | None:
        return await asyncio.to_thread(self.history.get, request_id)

    async def in_flight(self) -> list[RequestStarted]:
        return self.metrics.in_flight()

    async def bodies(self, request_id: str) -> RequestBodies | None:
        return await asyncio.to_thread(self.history.bodies, request_id)  # SQLite: off the event loop

    async def progress(self) -> list[RequestProgress]:
        return self.metrics.progress()

    async def aliases(self) -> list[Alias]:
        return [(r.pattern, r.target) for r in self.config.aliases]

    async def session_status(self, session_id: str | None) -> dict[str, Any]:
        """What `ccbridge statusline` shows for one Claude Code session: its request (in flight, else
        the last), the backend's model, health and context, and any service not serving. Cheap: no
        I/O, no history read (it is asked every second by every open Claude Code)."""
        view = self.sessions.view(session_id)
        name = ((view["request"] or {}).get("backend") or (view["last"] or {}).get("backend")
                or next(iter(self.config.backends), None))
        backend: dict[str, Any] = {"name": name}
        for seen in self.monitor.snapshot().backends:
            if seen.name == name:
                backend.update(model=seen.model, health=seen.health, health_detail=seen.health_detail,
                               n_ctx_slot=seen.n_ctx_slot, gen_tps=seen.gen_tps, busy_slots=seen.busy_slots,
                               total_slots=seen.total_slots)
        services = [{"name": s["name"], "state": s["state"]} for s in self.services()
                    if s["name"] in ("litellm", f"llama:{name}")]
        return {**view, "backend": backend, "services": services}

    def prometheus(self) -> tuple[bytes, str]:
        """One scrape of /metrics."""
        return render(self._prometheus), CONTENT_TYPE

    async def start(self) -> None:
        """Accept connections at once; LiteLLM comes up in the background."""
        self.started_at = time.time()
        self._session = ClientSession(
            # under uvicorn's (LiteLLM's) 5 s idle timeout, so the pool never hands out a
            # connection the other side has just closed
            connector=TCPConnector(limit=0, keepalive_timeout=2.0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        # Model servers get a new connection per request: llama-server (this build) drops or
        # garbles the next response on a connection reused after a stream (measured: every
        # second reused request failed, one began without its message_start).
        self._backend_session = ClientSession(
            connector=TCPConnector(limit=0, force_close=True),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        self._resolver = ModelResolver(self._backend_session, known=self._monitored_model)
        self._pinner = SlotPinner(self._backend_session, known_slots=self._monitored_slots)
        self.leg = BackendLeg(
            backends=lambda: self._routing.backends,
            secret=self._leg_secret,
            registry=self.registry,
            session=self._backend_session,
            resolver=self._resolver,
            pinner=self._pinner,
            max_body=lambda: byte_limit(self._routing.proxy.max_body_mb),
            progress=self.bus.publish,
            reports_progress=self._reports_progress,
            reached=self._backend_reached,
            keep_prompt=self.warmer.keep,
        )
        self._leg_port = await self._serve(self.leg.handle, "127.0.0.1", 0)
        self._choose_upstream()
        resolver = self._resolver
        self.front = FrontProxy(
            routing=lambda: self._routing,
            upstream=lambda: self._upstream,  # type: ignore[arg-type,return-value]
            registry=self.registry,
            session=self._session,
            backend_session=self._backend_session,
            bus=self.bus,
            admin=self.api.handle,
            resolved_model=self._resolver.cached,
            native=lambda backend: NativeUpstream(backend, resolver.cached),
            bodies=self._body_limit,
            keep_bodies=self.history.add_bodies,
            misses=MissExplainer(self._cache_facts),
            warmer=self.warmer,
        )
        try:
            await self._serve(self._handle, self.config.proxy.host, self.config.proxy.port)
        except OSError as exc:
            await self.stop()
            raise StartupError(
                f"cannot listen on {self.config.proxy.host}:{self.config.proxy.port}: {exc.strerror or exc}. "
                "Another program (or another ccbridge) holds that port: stop it, or set proxy.port "
                "in ccbridge.yaml."
            ) from None
        if self.litellm is not None:
            await self.litellm.start()
        self._watcher = asyncio.create_task(self._watch_config(), name="config-watcher")
        self.slot_files.clear_leftovers()
        self._restart_watch = asyncio.create_task(self._watch_restarts(), name="restart-watch")
        await self.llamas.sync(self.config.backends)
        earlier = await asyncio.to_thread(self.history.recent, 500)
        self.monitor.seed(earlier)
        self.metrics.seed(earlier)
        await self.monitor.start(session=self._backend_session)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """The proxy port: /metrics here (Prometheus' fixed path), everything else to the front proxy."""
        if request.path == "/metrics":
            refused = refuse_foreign(request, self._routing.proxy, self._routing.config_path)
            return refused or await self.api.metrics(request)
        assert self.front is not None
        return await self.front.handle(request)

    async def stop(self) -> None:
        """End the requests in flight (each stops its model call), stop LiteLLM and every
        server; flush the history."""
        if self.front is not None:
            await self.front.shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self.api.close()
        if self._restart_watch is not None:
            self._restart_watch.cancel()
        await self.warmer.stop()
        await self.monitor.stop()
        if self.litellm is not None:
            await self.litellm.stop()
        await self.llamas.stop()
        for listener, server in reversed(self._servers):
            listener.close()
            await server.shutdown(2.0)
        self._servers.clear()
        for session in (self._session, self._backend_session):
            if session is not None:
                await session.close()
        self._session = self._backend_session = None
        await asyncio.to_thread(self.history.close)

    async def restart_service(self, name: str) -> None:
        await self._service(name).restart()

    def _monitored_slots(self, backend: BackendConfig) -> int | None:
        """The slot count the monitor last read from this backend's /props (None: ask it)."""
        for b in self.monitor.snapshot().backends:
            if b.name == backend.name and b.api_base == backend.api_base and b.health == "ok":
                return b.total_slots
        return None

    def _monitored_health(self, name: str) -> tuple[str, str | None, float | None] | None:
        """The monitor's last /health sample of a backend (state, detail, when), for group balancing."""
        backend = self.config.backends.get(name)
        for b in self.monitor.snapshot().backends:
            if backend is not None and b.name == name and b.api_base == backend.api_base:
                return b.health, b.health_detail, b.checked_at
        return None

    def _backend_reached(self, name: str, failure: str | None) -> None:
        """What the backend leg saw of a backend: an answer (failure None), or no connection."""
        if failure is None:
            self.health.answered(name)
        else:
            self.health.failed(name, failure)

    def groups(self) -> list[dict[str, Any]]:
        """Each group alias's backends: health, requests answered and their share, sessions, failovers,
        and the share of their prompts llama-server served from its cache (status API, panel, /metrics)."""
        groups = self.balancer.snapshot(groups_of(self.config.aliases))
        cache = {c.key: c for c in self.monitor.snapshot().cache.by_backend}
        for group in groups:
            for member in group["members"]:
                stats = cache.get(member["backend"])
                member["cache_share"] = stats.share if stats else None
                member["later_turns_cache_share"] = stats.later_share if stats else None
        return groups

    def _reports_progress(self, backend: BackendConfig) -> bool:
        """Whether to ask this backend for prompt progress (`return_progress`): yes unless the
        monitor found a healthy server there that is not llama-server (no build in /props)."""
        for b in self.monitor.snapshot().backends:
            if b.name == backend.name and b.api_base == backend.api_base and b.health == "ok":
                return b.build is not None
        return True

    def _monitored_model(self, backend: BackendConfig) -> str | None:
        """The model the monitor last read from this backend's /v1/models (None while it has not, or
        while the backend is not healthy: then the resolver asks, and says what failed)."""
        for b in self.monitor.snapshot().backends:
            if b.name == backend.name and b.api_base == backend.api_base and b.health == "ok":
                return b.model
        return None

    def _route_of(self, backend: str | None) -> str:
        """The route a backend's requests take: native, litellm (ours) or external (litellm.url)."""
        cfg = self.config.backends.get(backend or "")
        if cfg is None:
            return "-"
        if cfg.route == "native":
            return "native"
        return "external" if self.config.litellm.url else "litellm"

    def _choose_upstream(self) -> None:
        """LiteLLM when a backend needs it (ccbridge's own, or the one at litellm.url);
        with every backend on `route: native`, llama-server itself serves the other paths."""
        config = self.config
        if config.litellm.url:
            self._upstream = ExternalUpstream(config.litellm.url, config.litellm.api_key)
        elif any(b.route != "native" for b in config.backends.values()):
            if self.litellm is None:
                self.litellm = LiteLLMService(
                    settings=config.litellm,
                    backends=lambda: self._litellm_inputs()[1].backends,
                    leg_url=lambda: f"http://127.0.0.1:{self._leg_port}",
                    leg_secret=self._leg_secret,
                    run_dir=self._run_dir,
                    bus=self.bus,
                    session=self._session,  # type: ignore[arg-type]
                    groups=lambda: groups_of(self._litellm_inputs()[0].aliases),
                    balance=lambda: self._litellm_inputs()[0].groups.balance,
                )
            self._upstream = self.litellm
        else:
            first = next(iter(config.backends.values()))
            self._upstream = NativeUpstream(first, self._resolver.cached if self._resolver else None)

    def _litellm_inputs(self) -> tuple[Config, Routing]:
        """What LiteLLM's config is written from: the config being applied while a restart tries it,
        else the one in force."""
        return self._staged or (self.config, self._routing)

    async def stop_service(self, name: str) -> None:
        await self._service(name).stop()

    async def start_service(self, name: str) -> None:
        await self._service(name).start()

    def _service(self, name: str) -> LiteLLMService | LlamaServerService:
        llama = self.llamas.get(name)
        if llama is not None:
            return llama
        if name != "litellm":
            known = ", ".join(["litellm", *self.llamas.names()])
            raise ServiceNotFound(f"no service named {name!r} (known: {known})")
        if self.litellm is None:
            raise ServiceNotFound("LiteLLM is not managed by ccbridge here (litellm.url is set, or every "
                                  "backend has route: native)")
        return self.litellm

    async def log_tail(self, service: str, n: int = 200) -> list[str]:
        """The last lines of a service's log ("proxy" is ccbridge's own)."""
        if service == "proxy":
            return self.proxy_log.tail(n)
        return self._service(service).log.tail(n)

    async def save_aliases(self, aliases: list[Alias]) -> list[Alias]:
        """Validate, write ccbridge.yaml (comments kept, fsynced, off the event loop), apply to the next request."""
        source = self.config.source
        if source is None:
            raise ConfigError("this bridge was started without a config file; nothing to save to")

        def edit() -> tuple[ConfigDocument, Config]:
            doc = ConfigDocument.load(source)
            doc.set_aliases(aliases)
            return doc, doc.to_config()  # raises ConfigError with the reason; nothing written

        async with self._config_lock:
            doc, new = await asyncio.to_thread(edit)
            await self._apply(new)  # all or nothing: on failure nothing is written either
            await self._save(doc)
        return [(r.pattern, r.target) for r in new.aliases]

    async def probe_models(self) -> list[dict[str, Any]]:
        """The model scorecards, probing each idle backend whose model setup has none yet."""
        if self._backend_session is None:
            return self.scorecards.cards()  # not started: nothing to ask with
        return await self.scorecards.probe(self._backend_session, self.config.backends,
                                           self.monitor.snapshot().backends,
                                           idle=lambda: self.metrics.snapshot().in_flight == 0)

    async def enable_swa_full(self, backend: str) -> tuple[str, ...]:
        """Add `--swa-full` to a ccbridge-run llama-server's `command` in ccbridge.yaml (comments kept)
        and restart it, so a sliding-window model keeps the prompt start new sessions share.
        Returns the restarted services."""
        cfg = self.config.backends.get(backend)
        if cfg is None or not cfg.command:
            raise ConfigError(f"backend '{backend}' is not run by ccbridge (it has no command): add --swa-full to "
                              "the llama-server command line you start yourself",
                              key=f"backends.{backend}.command", file=self.config.source)
        source = self.config.source
        if source is None:
            raise ConfigError("this bridge was started without a config file; nothing to save to")
        command = command_with_flag(cfg.command, "--swa-full")

        def edit() -> tuple[ConfigDocument, Config]:  # YAML read and checked off the event loop
            doc = ConfigDocument.load(source)
            doc.set_value(["backends", backend, "command"], command)
            return doc, doc.to_config()  # raises ConfigError with the reason; nothing written

        async with self._config_lock:
            doc, new = await asyncio.to_thread(edit)
            restarted = await self._apply(new)
            await self._save(doc)
        return restarted

    async def _save(self, doc: ConfigDocument) -> None:
        """Write ccbridge.yaml off the loop (the config is in force already) and take its new mtime as seen, so
        the watcher does not apply it again."""
        await asyncio.to_thread(doc.save)
        self._config_mtime = await asyncio.to_thread(self._mtime)

    async def reload_config(self) -> Config:
        """Re-read ccbridge.yaml; an invalid file is refused and the running config kept."""
        async with self._config_lock:
            return await self._reload()

    async def _reload(self) -> Config:
        if self.config.source is None:
            return self.config
        new = await asyncio.to_thread(load_config, self.config.source)  # YAML parsing off the event loop
        await self._apply(new)
        return new

    def _bodies_config(self, config: Config) -> None:
        """The history's body caps and the secrets it blanks, from the config in force."""
        self.history.body_max_bytes = config.history.body_max_kb * 1024
        self.history.bodies_max_bytes = int(config.history.bodies_max_mb * 1024 * 1024)
        self.history.redact = Redactor(config_secrets(config))

    def _body_limit(self) -> int:
        """Bytes of each body the front keeps (0: `history.bodies` is off)."""
        return self.config.history.body_max_kb * 1024 if self.config.history.bodies else 0

    async def apply_config(self, new: Config) -> tuple[str, ...]:
        """Put a config in force, all or nothing (see `_apply`); one config change at a time."""
        async with self._config_lock:
            return await self._apply(new)

    async def _apply(self, new: Config) -> tuple[str, ...]:
        """Build the new state, start what it needs, then swap (call it holding `_config_lock`).

        LiteLLM is the step that can fail: when its inputs changed (a new or removed backend or
        group, a new port) a new LiteLLM is started from the new config while the running one
        serves, and only once it is healthy are config and routing swapped. If it fails nothing
        changed: the running LiteLLM and config stay, and `ConfigNotApplied` says why. The rest
        follows the swap: a LiteLLM no longer needed stops, one newly needed starts (its supervisor
        retries and requests wait for it), a llama-server whose command changed restarts (two
        cannot hold one port)."""
        try:
            check_exposure(new)
        except StartupError as exc:
            raise ConfigError(str(exc)) from None
        learn(config_secrets(new))
        old = self.config
        routing = await asyncio.to_thread(self._make_routing, new)  # alias patterns compile: ~35 ms for 600
        restarted: tuple[str, ...] = ()
        litellm = self.litellm
        if (litellm is not None and not new.litellm.url and any(b.route != "native" for b in new.backends.values())
                and (set(old.backends) != set(new.backends) or old.litellm != new.litellm
                     or groups_of(old.aliases) != groups_of(new.aliases) or old.groups != new.groups)):
            # LiteLLM's config names the backends and groups only (the leg reads api_base, model and
            # keys live), so only a new or removed backend or group, or a new port, needs a restart.
            settings, litellm.settings = litellm.settings, new.litellm
            self._staged = (new, routing)
            try:
                await litellm.restart()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the running state
                litellm.settings = settings
                raise ConfigNotApplied(f"LiteLLM did not start with the new config ({exc}); the running LiteLLM "
                                       "and config are kept") from exc
            finally:
                self._staged = None
            restarted = ("litellm",)
        self.config = new
        self._bodies_config(new)
        self._routing = routing
        had = self.litellm
        self._choose_upstream()
        if self._upstream is not self.litellm and self.litellm is not None:
            await self.litellm.stop()  # every backend went native (or to litellm.url)
            self.litellm = None
        elif self.litellm is not None and had is None:
            await self.litellm.start()
            restarted = ("litellm",)
        self.balancer.forget(groups_of(new.aliases))
        restarted += await self.llamas.sync(new.backends)
        self.bus.publish(ConfigApplied(str(new.source), time.time(), restarted))
        return restarted

    async def status(self) -> dict[str, Any]:
        """Everything the status API and the panel show."""
        return self.status_now()

    def status_now(self) -> dict[str, Any]:
        """`status()` for a caller on the bridge's loop that cannot await."""
        metrics = self.metrics.snapshot()
        services = self.services(metrics.in_flight)
        return {
            "version": __version__,
            "config_path": str(self.config.source) if self.config.source else None,
            "proxy_url": self.proxy_url,
            "api_key_set": bool(self.config.proxy.api_key),  # whether clients need one; the key is never sent
            "services": services,
            "slot_restores": {name: r.as_dict() for name, r in self.slot_files.restored.items()},
            "warming": dict(self.warmer.progress),  # backend -> the warm-up in flight (share read so far)
            "warmups": list(self.warmer.recent),
            "aliases": [{"pattern": r.pattern, "target": r.target} for r in self.config.aliases],
            "backends": [
                {"name": b.name, "api_base": b.api_base, "model": b.model,
                 "resolved_model": self._resolver.cached(b) if self._resolver else None,
                 "max_tokens": b.max_tokens}
                for b in self.config.backends.values()
            ],
            "unknown_models": [
                {"model": m, **info} for m, info in sorted(
                    self.unknown_models.items(), key=lambda kv: -kv[1]["last_seen"])
            ],
            "unknown_models_forgotten": self.unknown_models_forgotten,
            "history_warning": self.history.warning,
            "metrics": metrics.to_dict(),
            "monitor": self.monitor.snapshot().to_dict(),
            "scorecards": self.scorecards.cards(),
            "groups": self.groups(),
            "claude_env": self.claude_env_lines(),
        }

    def claude_env_lines(self) -> list[str]:
        """What `ccbridge env` prints (without its comments), sized from the monitor's last look
        at the first backend; `proxy.api_key` is never sent: a placeholder stands for it."""
        config = self.config
        first = next(iter(config.backends.values()), None)
        info = None
        for seen in self.monitor.snapshot().backends:
            if first is not None and seen.name == first.name:
                info = BackendInfo(first.name, first.api_base, seen.health == "ok", seen.model,
                                   seen.n_ctx_slot, seen.n_ctx_train, seen.total_slots)
        lines = shell_lines(claude_settings(config, info), why=False)
        key = config.proxy.api_key
        return [line.replace(key, "<proxy.api_key>") for line in lines] if key else lines

    def services(self, in_flight: int | None = None) -> list[dict[str, Any]]:
        """One dict per service: the proxy, LiteLLM (or why there is none), each managed llama-server."""
        services: list[dict[str, Any]] = []
        if self.litellm is not None:
            services.append(asdict(self.litellm.status()))
        else:
            unused = not self.config.litellm.url
            services.append({"name": "litellm", "state": "unused" if unused else "external",
                             "url": self.config.litellm.url,
                             "detail": "every backend has route: native" if unused else None})
        services.extend(asdict(s) for s in self.llamas.statuses())
        assert self.front is not None
        services.insert(0, {
            "name": "proxy",
            "state": "ready",
            "url": self.proxy_url,
            "port": self.config.proxy.port,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "started_by": started_by(),
            "version": __version__,
            "in_flight": self.metrics.snapshot().in_flight if in_flight is None else in_flight,
            "probes_answered": self.front.probes_answered,
            "billing_lines_removed": self.front.billing_lines_removed,
            "shared_first_moved": self.front.shared_moved,
            "refused_retries": self.leg.refused_total if self.leg else 0,
            "listener_errors": self.bus.listener_errors,
            "bodies_dropped": self.history.bodies_dropped,  # not kept: the history writer was too far behind
            "restarts": 0,
            "last_error": None,
        })
        return services

    # -- internals -------------------------------------------------------------
    def _make_routing(self, config: Config) -> Routing:
        return Routing(
            proxy=config.proxy,
            backends=dict(config.backends),
            aliases=AliasTable(config.aliases),
            config_path=str(config.source) if config.source else "ccbridge.yaml",
            balancer=self.balancer,
            shared_first=config.cache.shared_first,
        )

    async def _serve(self, handler: Any, host: str, port: int) -> int:
        """Listen with aiohttp's low-level server; each connection gets a header deadline."""
        server = web.Server(handler, handler_cancellation=True, access_log=None)
        listener = await asyncio.get_running_loop().create_server(
            GuardedServer(server, HEADER_TIMEOUT), host, port, reuse_address=True
        )
        self._servers.append((listener, server))
        return int(listener.sockets[0].getsockname()[1])

    def _keep_history(self, event: Event) -> None:
        if isinstance(event, RequestFinished):
            self.history.add(event.record)

    def _on_event(self, event: Event) -> None:
        self.metrics.on_event(event)
        self.sessions.on_event(event)
        if isinstance(event, RequestFinished):
            self._check_restore(event.record)
            self.monitor.add_record(event.record)
            self.balancer.finished(event.record)
        elif isinstance(event, ServiceStateChanged) and event.state == READY and event.service.startswith("llama:"):
            self._came_up(event)
        elif isinstance(event, LogLine) and event.service == "proxy":
            self.proxy_log.add(event.line)
        elif isinstance(event, UnknownModel):
            if event.model not in self.unknown_models and len(self.unknown_models) >= UNKNOWN_MODELS:
                del self.unknown_models[min(self.unknown_models, key=lambda m: self.unknown_models[m]["last_seen"])]
                self.unknown_models_forgotten += 1
            info = self.unknown_models.setdefault(event.model, {"count": 0, "first_seen": event.at})
            info["count"] += 1
            info["last_seen"] = event.at

    def _check_restore(self, record: RequestRecord) -> None:
        """The first request after a slot restore says whether it gave anything back (see slot_files)."""
        if record.routed_backend in self.slot_files.restored:
            cached, fresh = record.backend_cache_n, record.backend_prompt_n
            if cached is None or fresh is None:  # the native route: llama-server's Anthropic usage
                cached, fresh = record.cache_read_tokens, record.input_tokens
            if self.slot_files.check(record.routed_backend, cached, fresh, f"llama:{record.routed_backend}") is False:
                self.warmer.start(record.routed_backend)  # the restore gave nothing: warm from kept prompts

    def _cache_facts(self, backend: str) -> CacheFacts:
        """When the backend's llama-server came up, when ccbridge restored its slots, whether it loses
        the prompt start (sliding-window model without --swa-full): for naming a cache miss."""
        svc = self.llamas.services.get(backend)
        came_up = svc.status().started_at if svc is not None else None
        swa = False
        for b in self.monitor.snapshot().backends:
            if b.name == backend:
                if came_up is None and b.process is not None:
                    came_up = b.process.started_at  # a server the user runs: its process start time
                swa = bool(b.swa and b.swa.window and b.swa.full is not True)
        restored = self.slot_files.restored.get(backend)
        return CacheFacts(came_up, restored.at if restored else None, swa)

    def _came_up(self, event: ServiceStateChanged) -> None:
        """A managed llama-server is ready: warm it unless its slots were just restored with a prompt."""
        backend = event.service.removeprefix("llama:")
        svc = self.llamas.services.get(backend)
        started = svc.status().started_at if svc is not None else None
        restored = self.slot_files.restored.get(backend)  # restored by this start (before it was ready)?
        if restored is None or started is None or restored.at < started or not restored.tokens:
            self.warmer.start(backend)

    async def _watch_restarts(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            with contextlib.suppress(Exception):  # a monitor hiccup must not end the watch
                self._external_restarts()

    def _external_restarts(self) -> None:
        """A llama-server ccbridge does not run came up again (its process start time changed): warm it."""
        for b in self.monitor.snapshot().backends:
            started = b.process.started_at if b.process is not None else None
            if b.name in self.llamas.services or started is None:
                continue
            before = self._process_starts.get(b.name)
            self._process_starts[b.name] = started
            if before is not None and started > before + 1:
                self.warmer.start(b.name)

    def _say_in_service(self, service: str, line: str) -> None:
        """A line of ccbridge's own in a managed service's log (the panel and the API show it)."""
        svc = self.llamas.get(service)
        if svc is not None:
            self.bus.publish(LogLine(service, svc.log.add(line), time.time()))

    def _mtime(self) -> float | None:
        source = self.config.source
        try:
            return source.stat().st_mtime if source else None
        except OSError:
            return None

    async def _watch_config(self) -> None:
        """Apply external edits of ccbridge.yaml; refuse invalid ones with the reason, and say truthfully
        whether the running config was kept."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            if self._mtime() == self._config_mtime:
                continue
            async with self._config_lock:  # an API change in progress saves first and takes the mtime as seen
                mtime = self._mtime()
                if mtime is None or mtime == self._config_mtime:
                    continue
                self._config_mtime = mtime
                before = self.config
                try:
                    await self._reload()
                    self._say(f"applied edited {self.config.source}")
                except Exception as exc:  # noqa: BLE001 - keep running on any bad edit
                    if self.config is before:
                        self._say(f"ignored edit of {self.config.source}: {exc} (running config kept)")
                    else:  # swapped, then a later step failed: say so, not "kept"
                        self._say(f"applied edited {self.config.source}, but then: {exc}")

    def _say(self, line: str) -> None:
        self.bus.publish(LogLine("proxy", line, time.time()))
