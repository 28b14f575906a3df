"""The whole backend as one object: what `ccbridge serve` runs and the panel drives.

`Bridge` implements the control interface (`backend.control.BridgeControl`):
status, history, aliases, services, logs, events. It serves that interface
over HTTP (`backend.api.server`) on the proxy's port, with Prometheus at
/metrics. Everything else (servers, LiteLLM, the store, the metrics fold,
config reloads) hangs off it and is not reached directly. Its config handling
is `backend.bridge_config`, its status `backend.bridge_status`, and what the
proxy reads from the monitor `backend.bridge_monitor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, DummyCookieJar, TCPConnector, web

from backend import __version__, paths
from backend.api.server import ControlAPI
from backend.bridge_config import ConfigKeeper, StartupError, check_exposure
from backend.bridge_monitor import MonitorLookups
from backend.bridge_status import StatusReport
from backend.config import AliasTable, Config
from backend.config.model import BackendConfig
from backend.control import Alias, ServiceNotFound
from backend.events import (
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
from backend.proxy.balance import BackendHealth, GroupBalancer
from backend.proxy.body import byte_limit
from backend.proxy.front import FrontProxy
from backend.proxy.guard import GuardedServer
from backend.proxy.hostcheck import refuse_foreign
from backend.proxy.leg import BackendLeg
from backend.proxy.misses import CacheFacts, MissExplainer
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PairRegistry
from backend.proxy.routing import make_routing
from backend.proxy.slots import SlotPinner
from backend.proxy.warm import Warmer
from backend.redaction import config_secrets, learn
from backend.services.litellm_service import LiteLLMService
from backend.services.llama_service import LlamaServers, LlamaServerService
from backend.services.process import LogBuffer
from backend.services.slot_files import SlotFiles
from backend.services.supervised import READY
from backend.store import HistoryStore
from backend.store.history import RequestBodies

__all__ = ["HEADER_TIMEOUT", "UNKNOWN_MODELS", "Bridge", "StartupError", "check_exposure"]

UNKNOWN_MODELS = 50
"""Unknown model names the status keeps (the latest seen), as /metrics keeps 50 model names."""
# Seconds a client may take to send its request headers before the connection is closed.
HEADER_TIMEOUT = 30.0


class Bridge(ConfigKeeper, StatusReport):
    """Front proxy + backend leg + LiteLLM + history + metrics, driven as one (a `BridgeControl`)."""

    def __init__(self, config: Config, *, bus: EventBus | None = None, run_dir: Path | None = None,
                 history: HistoryStore | None = None) -> None:
        check_exposure(config)
        learn(config_secrets(config))  # the one redactor blanks them in everything that leaves
        self.config = config
        self.bus = bus or EventBus()
        self._run_dir = run_dir or paths.run_dir()
        self.monitor = BackendMonitor(lambda: self.config.backends)
        self.monitored = MonitorLookups(self.monitor.snapshot, lambda: self.config.backends)
        self.health = BackendHealth(self.monitored.health)
        self.balancer = GroupBalancer(self.health, balance=lambda: self.config.groups.balance)
        # requests are told ccbridge is starting until `start` chooses the upstreams
        self._routing = make_routing(config, AliasTable(config.aliases), balancer=self.balancer,
                                     resolved=self._resolved_model)
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
        self._resolver: ModelResolver | None = None
        self._watcher: asyncio.Task[None] | None = None
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
        self._staged: Config | None = None  # a config being applied, while LiteLLM tries it
        # History listens on its own, first: a failing fold (metrics, monitor) never loses a record.
        self._unsubscribe_history = self.bus.subscribe(self._keep_history)
        self._unsubscribe = self.bus.subscribe(self._on_event)

    # -- façade --------------------------------------------------------------
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
            cookie_jar=DummyCookieJar(),  # a proxy keeps no cookies (one client's would reach the next)
        )
        # Model servers get a new connection per request: llama-server (this build) drops or
        # garbles the next response on a connection reused after a stream (measured: every
        # second reused request failed, one began without its message_start).
        self._backend_session = ClientSession(
            connector=TCPConnector(limit=0, force_close=True),
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
            cookie_jar=DummyCookieJar(),
        )
        self._resolver = ModelResolver(self._backend_session, known=self.monitored.model)
        self._pinner = SlotPinner(self._backend_session, known_slots=self.monitored.slots)
        self.leg = BackendLeg(
            backends=lambda: self._routing.backends,
            secret=self._leg_secret,
            registry=self.registry,
            session=self._backend_session,
            resolver=self._resolver,
            pinner=self._pinner,
            max_body=lambda: byte_limit(self._routing.proxy.max_body_mb),
            progress=self.bus.publish,
            reports_progress=self.monitored.reports_progress,
            reached=self._backend_reached,
            keep_prompt=self.warmer.keep,
        )
        self._leg_port = await self._serve(self.leg.handle, "127.0.0.1", 0)
        self._routing = self._routing_for(self.config, self._routing.aliases)  # the upstreams, LiteLLM made
        self.front = FrontProxy(
            routing=lambda: self._routing,
            registry=self.registry,
            session=self._session,
            backend_session=self._backend_session,
            bus=self.bus,
            admin=self.api.handle,
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

    async def probe_models(self) -> list[dict[str, Any]]:
        """The model scorecards, probing each idle backend whose model setup has none yet."""
        if self._backend_session is None:
            return self.scorecards.cards()  # not started: nothing to ask with
        return await self.scorecards.probe(self._backend_session, self.config.backends,
                                           self.monitor.snapshot().backends,
                                           idle=lambda: self.metrics.snapshot().in_flight == 0)

    # -- internals -------------------------------------------------------------
    def _resolved_model(self, backend: BackendConfig) -> str | None:
        """The model a `model: auto` backend serves, as the resolver last read it (None before start)."""
        return self._resolver.cached(backend) if self._resolver is not None else None

    def _backend_reached(self, name: str, failure: str | None) -> None:
        """What the backend leg saw of a backend: an answer (failure None), or no connection."""
        if failure is None:
            self.health.answered(name)
        else:
            self.health.failed(name, failure)

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
