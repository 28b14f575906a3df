"""LiteLLM as a supervised child process in its own virtual environment.

ccbridge writes LiteLLM's config from ccbridge.yaml: one model per backend
(and, for each group of backends an alias names, model groups that fail over
between them; see `render_config`), whose `api_base` is the backend leg inside ccbridge (so hang-ups reach the
model and llama-server's timings are read), chat-completions routing for
Anthropic messages (FACTS: the default Responses route fails on
llama-server), client `x-*` headers forwarded (the pairing id), retries off
(a retry would restart a model the user just stopped), and a random master
key kept in a 0600 file. The config and the key are written by
`litellm_config.py`; this module runs and supervises the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import AliasRule, BackendConfig, LiteLLMConfig
from backend.events import EventBus
from backend.llama_api import bearer
from backend.proxy.balance import group_name, litellm_model
from backend.proxy.upstream import Relayed, UpstreamUnavailable, no_release
from backend.services import litellm_env
from backend.services.litellm_config import load_master_key, render_config, write_config
from backend.services.process import ChildProcess
from backend.services.supervised import (
    FAILED,
    INSTALLING,
    READY,
    RESTARTING,
    SAME_EXIT_LIMIT,
    STABLE_AFTER,
    STARTING,
    STOPPED,
    STOPPING,
    ExitStreak,
    PermanentFailure,
    ServiceStatus,
    SupervisedService,
    port_in_use,
    port_owner,
)

__all__ = ["LiteLLMService", "ServiceStatus", "port_in_use", "port_owner", "render_config"]

_START_TIMEOUT = 120.0


@dataclass(eq=False)
class _Instance:
    """One running LiteLLM process and the requests it is serving."""

    port: int
    child: ChildProcess
    in_flight: int = 0
    groups: frozenset[tuple[str, ...]] = frozenset()  # the groups its config has model groups for
    balance: str = "session"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LiteLLMService(SupervisedService, Relayed):
    """Starts, watches and restarts LiteLLM; the front proxy's upstream.

    A restart is blue/green: a new LiteLLM comes up on a fresh port, new
    requests switch to it once it is healthy, and the old one is stopped when
    its streams have finished (bounded by `drain_timeout`). A crash is noticed
    at once (the child's exit), restarted with backoff, and requests arriving
    meanwhile wait for it instead of failing. A failure that retrying cannot fix
    (its environment cannot be made, its port belongs to another program, it
    exits the same way three times in a row) ends in FAILED: no more restarts,
    and requests get that reason at once until a user restarts it.
    """

    paired = True

    def __init__(
        self,
        *,
        settings: LiteLLMConfig,
        backends: Callable[[], Mapping[str, BackendConfig]],
        leg_url: Callable[[], str],
        leg_secret: str,
        run_dir: Path,
        bus: EventBus,
        session: ClientSession,
        install: Callable[[Callable[[str], None]], Path] = litellm_env.ensure_env,
        drain_timeout: float = 120.0,
        groups: Callable[[], Iterable[Sequence[str]]] = lambda: (),
        balance: Callable[[], str] = lambda: "session",
    ) -> None:
        super().__init__("litellm", bus)
        self.settings = settings
        self._backends = backends
        self._groups = groups
        self._balance = balance
        self._leg_url = leg_url
        self._leg_secret = leg_secret
        self._run_dir = run_dir
        self._session = session
        self._install = install
        self.drain_timeout = drain_timeout
        self._current: _Instance | None = None
        self._draining: set[_Instance] = set()
        self._drainers: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._gave_up = asyncio.Event()  # set in FAILED: wakes requests waiting for LiteLLM
        self._swapped = asyncio.Event()
        self._restart_lock = asyncio.Lock()
        self._master_key = self._load_master_key()
        self.log.hide([self._master_key, leg_secret, *(b.api_key for b in backends().values())])

    # -- upstream protocol -------------------------------------------------
    @property
    def port(self) -> int:
        return self._current.port if self._current else self.settings.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def acquire(self) -> tuple[str, Callable[[], None]]:
        """The URL to send one request to, and the call that ends its lease."""
        inst = self._current
        if inst is None:
            return self.base_url, no_release
        inst.in_flight += 1

        def release() -> None:
            inst.in_flight -= 1

        return inst.url, release

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        return bearer(self._master_key)

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        # a group: the LiteLLM model group that tries the chosen member first (render_config), or
        # with `groups.balance: litellm` the one whose member LiteLLM picks; while a LiteLLM that
        # knows the group is still starting (a new alias), the chosen member alone
        inst = self._current
        if not rule.is_group or inst is None or tuple(rule.members) not in inst.groups:
            return backend.name
        return group_name(rule.members) if inst.balance == "litellm" else litellm_model(rule.members, backend.name)

    async def wait_ready(self, timeout: float) -> None:
        """Return once LiteLLM serves; raise UpstreamUnavailable at once when it is
        stopped or has failed for good, or after `timeout` seconds of waiting."""
        if self._ready.is_set():
            return
        if self.state == FAILED:
            raise UpstreamUnavailable(self._failed_message())
        if self.state in (STOPPED, STOPPING):
            raise UpstreamUnavailable(
                "ccbridge: LiteLLM is stopped. Start it from the panel (s), with "
                "POST /ccbridge/api/services/litellm/restart, or restart `ccbridge serve`."
            )
        waits = (asyncio.ensure_future(self._ready.wait()), asyncio.ensure_future(self._gave_up.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if self._ready.is_set():
            return
        if self.state == FAILED:
            raise UpstreamUnavailable(self._failed_message())
        raise UpstreamUnavailable(self._not_ready_message(timeout))

    def _failed_message(self) -> str:
        return f"ccbridge: LiteLLM has failed and is not being restarted. {self.last_error}"

    def describe_unreachable(self, exc: BaseException) -> str:
        return (
            f"ccbridge: LiteLLM on port {self.port} is not answering ({exc or type(exc).__name__}); "
            f"state: {self.state}. ccbridge restarts it automatically. Last log lines: "
            + " | ".join(self.log.tail(3))
        )

    def _not_ready_message(self, waited: float) -> str:
        reason = f" Last error: {self.last_error}." if self.last_error else ""
        return (
            f"ccbridge: LiteLLM is not ready after {waited:.0f} s (state: {self.state}).{reason} "
            "See `ccbridge doctor` and the LiteLLM log in the panel."
        )

    # -- lifecycle ---------------------------------------------------------
    def _set_state(self, state: str, detail: str | None = None) -> None:
        if state in (READY, RESTARTING):  # a blue/green restart keeps serving
            self._ready.set()
        else:
            self._ready.clear()
        if state == FAILED:
            self._gave_up.set()
        else:
            self._gave_up.clear()
        super()._set_state(state, detail)

    async def start(self) -> None:
        """Begin supervising: install if needed, start, restart on crashes."""
        if self.supervising:
            return
        if self.state in (STOPPED, FAILED):
            self._set_state(STARTING)
        self._supervise_with(self._supervise())

    async def stop(self) -> None:
        """Stop every LiteLLM process now (in-flight streams end with an error event)."""
        await self._end_supervision()
        for task in list(self._drainers):
            task.cancel()
        current, self._current = self._current, None
        instances = [i for i in (current, *self._draining) if i is not None]
        self._draining.clear()
        if any(i.child.running for i in instances):
            self._set_state(STOPPING)
        await asyncio.gather(*(i.child.stop() for i in instances))
        self._write_pids()
        self._set_state(STOPPED)

    async def restart(self) -> None:
        """Zero-loss restart: the new LiteLLM takes new requests once healthy, the old one drains."""
        async with self._restart_lock:
            old = self._current
            if old is None or not old.child.running or self.state != READY:
                await self.stop()
                self.restarts += 1
                await self.start()
                return
            self._set_state(RESTARTING, "starting a new LiteLLM; the running one keeps serving")
            try:
                new = await self._launch(litellm_env.litellm_executable(), self._next_port())
            except Exception as exc:
                self.last_error = f"restart failed, the running LiteLLM keeps serving: {exc}"
                self._set_state(READY, self.last_error)
                raise
            self._current = new
            self.restarts += 1
            self._draining.add(old)
            self._write_pids()
            self._swapped.set()
            self._set_state(READY, f"restarted: pid {new.child.pid} on {new.url}; "
                                   f"draining {old.in_flight} request(s) on port {old.port}")
            task = asyncio.create_task(self._drain(old), name="litellm-drain")
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)

    async def _drain(self, old: _Instance) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while old.in_flight > 0 and time.monotonic() < deadline and old.child.running:
            await asyncio.sleep(0.1)
        await old.child.stop()
        self._draining.discard(old)
        self._write_pids()

    def _next_port(self) -> int:
        """The configured port when it is free, else any free loopback port."""
        if not port_in_use(self.settings.port):
            return self.settings.port
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    async def _supervise(self) -> None:
        failures = 0
        first = True
        same_exits = ExitStreak()
        while not self._stopping:
            try:
                if self._current is None or not self._current.child.running:
                    executable = await self._ensure_installed()
                    if first:
                        # psutil scans /proc and waits up to 5 s for a killed process: off the loop
                        await asyncio.to_thread(self._clear_stale, self.settings.port)
                    first = False
                    self._set_state(STARTING)
                    self._current = await self._launch(executable, self._next_port())
                    self._write_pids()
                    self._set_state(READY, f"pid {self._current.child.pid} on {self._current.url}")
                failures = 0
                if await self._watch(self._current):
                    continue  # swapped by a restart: watch the new one
                if self._stopping:
                    return
                child = self._current.child
                if child.started_at is not None and time.time() - child.started_at >= STABLE_AFTER:
                    same_exits.reset()  # it served a while: this exit does not continue a crash loop
                code = child.proc.returncode if child.proc else None
                self.last_error = f"LiteLLM exited with code {code}: " + " | ".join(self.log.tail(3))
                self._current = None
            except asyncio.CancelledError:
                raise
            except (PermanentFailure, litellm_env.LiteLLMEnvError) as exc:
                await self._stop_current()
                self._give_up(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - reported as the service's error, then retried
                self.last_error = str(exc)
                await self._stop_current()
            failures += 1
            if same_exits.add(self.last_error or "") >= SAME_EXIT_LIMIT:
                self._give_up(f"LiteLLM failed the same way {SAME_EXIT_LIMIT} times in a row: {self.last_error}")
                return
            await self._crashed(failures)

    async def _stop_current(self) -> None:
        if self._current is not None:
            await self._current.child.stop()
            self._current = None

    async def _watch(self, inst: _Instance) -> bool:
        """Wait until `inst` exits (False) or a restart replaced it (True)."""
        self._swapped.clear()
        exited = asyncio.create_task(inst.child.wait())
        swapped = asyncio.create_task(self._swapped.wait())
        try:
            await asyncio.wait({exited, swapped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (exited, swapped):
                task.cancel()
        return self._current is not inst

    async def _ensure_installed(self) -> Path:
        if litellm_env.is_ready():
            return litellm_env.litellm_executable()
        self._set_state(INSTALLING, f"creating LiteLLM {litellm_env.LITELLM_VERSION} environment")
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(self._line, line)

        return await asyncio.to_thread(self._install, progress)

    async def _launch(self, executable: Path, port: int) -> _Instance:
        """Start one LiteLLM on `port` and wait until it is healthy."""
        groups = frozenset(tuple(g) for g in self._groups())
        balance = self._balance()
        config_path = self._write_config(groups, balance)
        env = litellm_env.clean_env({**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                                     "LITELLM_LOG": "INFO", "PYTHONUNBUFFERED": "1"})
        env.pop("LITELLM_MASTER_KEY", None)
        argv = [str(executable), "--config", str(config_path), "--host", "127.0.0.1",
                "--port", str(port), "--num_workers", "1"]
        child = ChildProcess(argv, env=env, cwd=str(self._run_dir), on_line=self._line)
        await child.start()
        inst = _Instance(port, child, groups=groups, balance=balance)
        try:
            await self._wait_healthy(inst)
        except BaseException:
            await child.stop()
            raise
        return inst

    async def _wait_healthy(self, inst: _Instance) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        url = f"{inst.url}/health/liveliness"
        while time.monotonic() < deadline:
            if not inst.child.running:
                raise RuntimeError("LiteLLM exited while starting: " + " | ".join(self.log.tail(5)))
            with contextlib.suppress(ClientError, OSError, asyncio.TimeoutError):
                async with self._session.get(url, timeout=ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"LiteLLM did not answer {url} within {_START_TIMEOUT:.0f} s")

    def _write_pids(self) -> None:
        """Record our LiteLLM processes, so a later start can clear ones left behind."""
        pids = [{"pid": i.child.pid, "port": i.port}
                for i in (self._current, *self._draining) if i is not None and i.child.running]
        path = self._run_dir / "litellm.pid"
        if pids:
            path.write_text(json.dumps(pids))
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _clear_stale(self, port: int) -> None:
        """Stop LiteLLMs an earlier ccbridge left behind; refuse to fight anyone else for our port."""
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            for entry in json.loads((self._run_dir / "litellm.pid").read_text()):
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(int(entry["pid"]))
                    parent = proc.parent()
                    orphaned = parent is None or parent.pid == 1 or parent.pid == proc.pid
                    # a LiteLLM whose ccbridge still runs belongs to that ccbridge: leave it
                    if orphaned and "litellm" in " ".join(proc.cmdline()):
                        proc.kill()
                        proc.wait(5)
        if not port_in_use(port):
            return
        owner = port_owner(port)
        who = f"{owner.name()} (pid {owner.pid})" if owner is not None else "another program"
        raise PermanentFailure(
            f"port {port} is already in use by {who}. Stop it, or set litellm.port in "
            "ccbridge.yaml to a free port (or litellm.url to use that server instead)."
        )

    def _write_config(self, groups: Iterable[Sequence[str]], balance: str) -> Path:
        data = render_config(self._backends(), self._leg_url(), self._leg_secret, self._master_key,
                             groups, balance)
        return write_config(self._run_dir, data)

    def _load_master_key(self) -> str:
        return load_master_key(self._run_dir)

    # -- status ------------------------------------------------------------
    def status(self) -> ServiceStatus:
        child = self._current.child if self._current else None
        return ServiceStatus(
            name=self.name,
            state=self.state,
            pid=child.pid if child and child.running else None,
            port=self.port,
            url=self.base_url,
            restarts=self.restarts,
            started_at=child.started_at if child else None,
            state_since=self.state_since,
            version=litellm_env.LITELLM_VERSION,
            last_error=self.last_error,
            log_tail=tuple(self.log.tail(20)),
        )
