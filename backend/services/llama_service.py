"""llama-server started and supervised by ccbridge, for backends that carry a `command:`.

Optional: a backend without `command` is a server the user runs. With one,
ccbridge runs that command line as a child (own process group, dies with
ccbridge), waits for `GET /health` to say ok (the model loads first), restarts
it after a crash with back-off, and restarts it on request (the panel's key,
`POST /ccbridge/api/services/llama:<backend>/restart`), for example after
`-c` was changed in ccbridge.yaml. Unlike LiteLLM there is no blue/green swap:
llama-server holds its port and the model's memory, so a restart is stop, then start.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import BackendConfig
from backend.events import EventBus
from backend.llama_api import health_url, server_root
from backend.llama_command import flag_names, split_command
from backend.monitor.process import host_port
from backend.redaction import command_secrets
from backend.services.process import ChildProcess
from backend.services.slot_files import SlotFiles
from backend.services.supervised import (
    READY,
    STARTING,
    STOPPED,
    STOPPING,
    ServiceStatus,
    SupervisedService,
    port_in_use,
    port_owner,
)

LOAD_TIMEOUT = 900.0
"""Seconds a model may take to load before the start counts as failed (big models from disk are slow)."""
SERVICE_PREFIX = "llama:"


def service_name(backend: str) -> str:
    """The service name of a backend's llama-server: "llama:<backend>"."""
    return f"{SERVICE_PREFIX}{backend}"


def command_argv(command: str, api_base: str) -> list[str]:
    """Split `command` and add --host/--port from api_base when the command does not give them."""
    argv = shlex.split(command)
    hp = host_port(api_base)
    names = flag_names(argv)
    if hp is not None:
        host, port = hp
        if "--port" not in names:
            argv += ["--port", str(port)]
        if "--host" not in names:
            argv += ["--host", host]
    return argv


def command_with_flag(command: str, flag: str) -> str:
    """`command` with a switch such as `--swa-full` appended, the user's own text kept as written;
    unchanged when the switch is already there."""
    argv = split_command(command)
    present = argv is not None and flag in flag_names(argv)
    return command if present else f"{command.rstrip()} {flag}"


class LlamaServerService(SupervisedService):
    """One supervised llama-server (same façade as LiteLLMService: start, stop, restart, status, log)."""

    def __init__(self, backend: BackendConfig, *, bus: EventBus, session: Callable[[], ClientSession | None],
                 load_timeout: float = LOAD_TIMEOUT, slot_files: SlotFiles | None = None) -> None:
        super().__init__(service_name(backend.name), bus)
        self.backend = backend
        self.slot_files = slot_files  # saves the prompt cache before a restart ccbridge makes
        self._session = session
        self._load_timeout = load_timeout
        self.log.hide([backend.api_key, *command_secrets(backend.command)])  # `--api-key X` in the command too
        self._child: ChildProcess | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        """The running llama-server's pid."""
        return self._child.pid if self._child is not None and self._child.running else None

    def argv(self) -> list[str]:
        """The command line that is (or will be) run."""
        argv = command_argv(self.backend.command or "", self.backend.api_base)
        return argv if self.slot_files is None else self.slot_files.argv_with_folder(argv, self.backend.name)

    async def start(self) -> None:
        """Begin supervising: start it and restart it after crashes."""
        if self.supervising:
            return
        self._set_state(STARTING)
        self._supervise_with(self._supervise())

    async def stop(self) -> None:
        """Stop llama-server (SIGTERM, SIGKILL after 10 s) and stop supervising."""
        await self._end_supervision()
        child, self._child = self._child, None
        if child is not None and child.running:
            self._set_state(STOPPING)
            await child.stop(grace=10.0)
        self._set_state(STOPPED)

    async def restart(self) -> None:
        """Stop, then start again (new flags from ccbridge.yaml take effect)."""
        async with self._lock:
            await self.save_slots()
            await self.stop()
            self.restarts += 1
            await self.start()

    async def wait_ready(self, timeout: float) -> bool:
        """True once /health said ok within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state == READY:
                return True
            await asyncio.sleep(0.05)
        return self.state == READY

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._launch()
                failures = 0
                assert self._child is not None
                code = await self._child.wait()
                if self._stopping:
                    return
                self.last_error = f"llama-server exited with code {code}: " + " | ".join(self.log.tail(3))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as the service's error, then retried
                self.last_error = str(exc)
                if self._child is not None:
                    await self._child.stop()
            self._child = None
            failures += 1
            await self._crashed(failures)

    async def _launch(self) -> None:
        hp = host_port(self.backend.api_base)
        if hp is not None and port_in_use(hp[1], "127.0.0.1"):
            owner = port_owner(hp[1])
            who = f"{owner.name()} (pid {owner.pid})" if owner else "another program"
            raise RuntimeError(f"port {hp[1]} is already held by {who}: stop it, or remove "
                               f"backends.{self.backend.name}.command and use that server")
        self._set_state(STARTING, " ".join(shlex.quote(a) for a in self.argv()))
        self._child = ChildProcess(self.argv(), on_line=self._line)
        await self._child.start()
        await self._wait_healthy()
        if (files := self.slot_files) is not None:  # before it counts as ready, so no request races the restore
            await self._with_session(lambda s: files.restore(s, self.backend, self.name))
        self._set_state(READY, f"pid {self._child.pid} serving {self.backend.api_base}")

    async def save_slots(self) -> None:
        """Before a restart ccbridge makes: write the slots that hold a prompt to files (see slot_files)."""
        if (files := self.slot_files) is not None and self.state == READY and self.pid is not None:
            await self._with_session(lambda s: files.save(s, self.backend, self.name))

    async def _with_session(self, call: Callable[[ClientSession], Awaitable[object]]) -> None:
        session = self._session()
        if session is None or session.closed:
            async with ClientSession() as own:
                await call(own)
        else:
            await call(session)

    async def _wait_healthy(self) -> None:
        assert self._child is not None
        url = health_url(self.backend.api_base)
        deadline = time.monotonic() + self._load_timeout
        own: ClientSession | None = None
        session = self._session()
        if session is None or session.closed:
            own = session = ClientSession()
        try:
            while time.monotonic() < deadline:
                if not self._child.running:
                    raise RuntimeError("llama-server exited while starting: " + " | ".join(self.log.tail(3)))
                with contextlib.suppress(ClientError, TimeoutError, OSError):
                    async with session.get(url, timeout=ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.2)
        finally:
            if own is not None:
                await own.close()
        raise RuntimeError(f"llama-server did not become healthy within {self._load_timeout:.0f} s")

    def status(self) -> ServiceStatus:
        """A snapshot for the status API and the panel."""
        hp = host_port(self.backend.api_base)
        return ServiceStatus(
            name=self.name,
            state=self.state,
            pid=self.pid,
            port=hp[1] if hp else None,
            url=server_root(self.backend.api_base),
            restarts=self.restarts,
            started_at=self._child.started_at if self._child else None,
            state_since=self.state_since,
            version=None,
            last_error=self.last_error,
            log_tail=tuple(self.log.tail(20)),
        )


class LlamaServers:
    """The supervised llama-servers of all backends that have a `command`, kept in step with the config."""

    def __init__(self, *, bus: EventBus, session: Callable[[], ClientSession | None],
                 slot_files: SlotFiles | None = None) -> None:
        self._bus = bus
        self._session = session
        self.slot_files = slot_files
        self.services: dict[str, LlamaServerService] = {}

    async def sync(self, backends: Mapping[str, BackendConfig]) -> tuple[str, ...]:
        """Start new ones, restart those whose command or address changed, stop removed ones.

        Returns the names of the services that were (re)started."""
        wanted = {b.name: b for b in backends.values() if b.command}
        changed: list[str] = []
        for name in list(self.services):
            svc = self.services[name]
            new = wanted.get(name)
            if new is None or (new.command, new.api_base) != (svc.backend.command, svc.backend.api_base):
                if new is not None:
                    await svc.save_slots()  # the new command's server reads them back
                await svc.stop()
                del self.services[name]
        for name, backend in wanted.items():
            if name in self.services:
                self.services[name].backend = backend  # e.g. a new api_key: no restart needed
                continue
            svc = LlamaServerService(backend, bus=self._bus, session=self._session, slot_files=self.slot_files)
            self.services[name] = svc
            await svc.start()
            changed.append(svc.name)
        return tuple(changed)

    def get(self, service: str) -> LlamaServerService | None:
        """The service called "llama:<backend>", if any."""
        if not service.startswith(SERVICE_PREFIX):
            return None
        return self.services.get(service[len(SERVICE_PREFIX):])

    def statuses(self) -> list[ServiceStatus]:
        """Status of each, in backend order."""
        return [svc.status() for svc in self.services.values()]

    async def stop(self) -> None:
        """Stop them all."""
        await asyncio.gather(*(svc.stop() for svc in self.services.values()))

    def names(self) -> Sequence[str]:
        """Service names ("llama:<backend>")."""
        return [svc.name for svc in self.services.values()]
