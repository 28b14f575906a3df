"""LiteLLM as a supervised child process in its own virtual environment.

ccbridge writes LiteLLM's config from ccbridge.yaml: one model per backend,
whose `api_base` is the backend leg inside ccbridge (so hang-ups reach the
model and llama-server's timings are read), chat-completions routing for
Anthropic messages (FACTS: the default Responses route fails on
llama-server), client `x-*` headers forwarded (the pairing id), retries off
(a retry would restart a model the user just stopped), and a random master
key kept in a 0600 file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from aiohttp import ClientError, ClientSession, ClientTimeout
from ruamel.yaml import YAML

from backend.config.model import AliasRule, BackendConfig, LiteLLMConfig
from backend.events import EventBus, LogLine, ServiceStateChanged
from backend.proxy.upstream import UpstreamUnavailable
from backend.services import litellm_env
from backend.services.process import ChildProcess, LogBuffer

# States a service moves through; the panel and the status API show them.
STOPPED, INSTALLING, STARTING, READY, CRASHED, STOPPING = (
    "stopped", "installing", "starting", "ready", "crashed", "stopping",
)
_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
_START_TIMEOUT = 120.0


def render_config(
    backends: Mapping[str, BackendConfig], leg_url: str, leg_secret: str, master_key: str
) -> dict:
    """LiteLLM's config as a plain dict (written as YAML)."""
    model_list = [
        {
            "model_name": name,
            "litellm_params": {
                # the leg puts the real model id in; LiteLLM only needs a name
                "model": f"openai/{name}",
                "api_base": f"{leg_url}/leg/{name}",
                "api_key": leg_secret,
                "max_retries": 0,
            },
        }
        for name in backends
    ]
    return {
        "model_list": model_list,
        "litellm_settings": {
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": 0,
            "drop_params": True,
        },
        "router_settings": {"num_retries": 0},
        "general_settings": {
            "master_key": master_key,
            "forward_client_headers_to_llm_api": True,
        },
    }


def port_owner(port: int) -> psutil.Process | None:
    """The local process listening on 127.0.0.1:port, if one can be seen."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    return psutil.Process(conn.pid)
    return None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A snapshot for the status API and the panel."""

    name: str
    state: str
    pid: int | None
    port: int | None
    url: str | None
    restarts: int
    started_at: float | None
    state_since: float
    version: str | None
    last_error: str | None
    log_tail: tuple[str, ...]


class LiteLLMService:
    """Starts, watches and restarts LiteLLM; the front proxy's upstream."""

    name = "litellm"
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
    ) -> None:
        self.settings = settings
        self._backends = backends
        self._leg_url = leg_url
        self._leg_secret = leg_secret
        self._run_dir = run_dir
        self._bus = bus
        self._session = session
        self._install = install
        self.log = LogBuffer()
        self.state = STOPPED
        self.state_since = time.time()
        self.last_error: str | None = None
        self.restarts = 0
        self._child: ChildProcess | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._master_key = self._load_master_key()
        self.log.hide([self._master_key, leg_secret, *(b.api_key for b in backends().values())])

    # -- upstream protocol -------------------------------------------------
    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        return {"authorization": f"Bearer {self._master_key}"}

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        return backend.name

    async def wait_ready(self, timeout: float) -> None:
        if self._ready.is_set():
            return
        if self.state in (STOPPED, STOPPING):
            raise UpstreamUnavailable(
                "ccbridge: LiteLLM is stopped. Start it from the panel (s) or restart `ccbridge serve`."
            )
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise UpstreamUnavailable(self._not_ready_message(timeout)) from None

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
        self.state = state
        self.state_since = time.time()
        if state == READY:
            self._ready.set()
        else:
            self._ready.clear()
        self._bus.publish(ServiceStateChanged(self.name, state, detail, time.time()))

    def _line(self, line: str) -> None:
        self._bus.publish(LogLine(self.name, self.log.add(line), time.time()))

    async def start(self) -> None:
        """Begin supervising: install if needed, start, restart on crashes."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name="litellm-supervisor")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        await self._stop_child()
        self._set_state(STOPPED)

    async def restart(self) -> None:
        """Stop and start again; requests arriving meanwhile wait for ready."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
            self._supervisor = None
        await self._stop_child()
        self.restarts += 1
        self._set_state(STARTING, "restarting")
        await self.start()

    async def _stop_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.running:
            self._set_state(STOPPING)
            await child.stop()
        with contextlib.suppress(FileNotFoundError):
            (self._run_dir / "litellm.pid").unlink()

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                executable = await self._ensure_installed()
                await self._launch(executable)
                failures = 0
                code = await self._child.wait() if self._child else 0
                if self._stopping:
                    return
                self.last_error = f"LiteLLM exited with code {code}: " + " | ".join(self.log.tail(3))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as the service's error, then retried
                self.last_error = str(exc)
                await self._stop_child()
            failures += 1
            self.restarts += 1
            delay = _BACKOFF[min(failures - 1, len(_BACKOFF) - 1)]
            self._set_state(CRASHED, f"{self.last_error} (restarting in {delay:.0f} s)")
            await asyncio.sleep(delay)

    async def _ensure_installed(self) -> Path:
        if litellm_env.is_ready():
            return litellm_env.litellm_executable()
        self._set_state(INSTALLING, f"creating LiteLLM {litellm_env.LITELLM_VERSION} environment")
        loop = asyncio.get_running_loop()

        def progress(line: str) -> None:
            loop.call_soon_threadsafe(self._line, line)

        return await asyncio.to_thread(self._install, progress)

    async def _launch(self, executable: Path) -> None:
        self._set_state(STARTING)
        self._free_port()
        config_path = self._write_config()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "INFO",
               "PYTHONUNBUFFERED": "1"}
        env.pop("LITELLM_MASTER_KEY", None)
        argv = [str(executable), "--config", str(config_path), "--host", "127.0.0.1",
                "--port", str(self.port), "--num_workers", "1"]
        child = ChildProcess(argv, env=env, cwd=str(self._run_dir), on_line=self._line)
        await child.start()
        self._child = child
        (self._run_dir / "litellm.pid").write_text(json.dumps({"pid": child.pid, "port": self.port}))
        await self._wait_healthy(child)
        self._set_state(READY, f"pid {child.pid} on {self.base_url}")

    async def _wait_healthy(self, child: ChildProcess) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        url = f"{self.base_url}/health/liveliness"
        while time.monotonic() < deadline:
            if not child.running:
                raise RuntimeError("LiteLLM exited while starting: " + " | ".join(self.log.tail(5)))
            with contextlib.suppress(ClientError, OSError, asyncio.TimeoutError):
                async with self._session.get(url, timeout=ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"LiteLLM did not answer {url} within {_START_TIMEOUT:.0f} s")

    def _free_port(self) -> None:
        """Clear a LiteLLM we left behind on our port; refuse to fight anyone else."""
        if not port_in_use(self.port):
            return
        pid_file = self._run_dir / "litellm.pid"
        owner = port_owner(self.port)
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            stale = json.loads(pid_file.read_text())
            if owner is not None and owner.pid == stale["pid"]:
                owner.kill()
                owner.wait(5)
                return
        who = f"{owner.name()} (pid {owner.pid})" if owner is not None else "another program"
        raise RuntimeError(
            f"port {self.port} is already in use by {who}. Stop it, or set litellm.port in "
            "ccbridge.yaml to a free port (or litellm.url to use that server instead)."
        )

    def _write_config(self) -> Path:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        path = self._run_dir / "litellm.yaml"
        data = render_config(self._backends(), self._leg_url(), self._leg_secret, self._master_key)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            yaml = YAML(typ="safe", pure=True)
            yaml.default_flow_style = False
            yaml.dump(data, fh)
        os.replace(tmp, path)
        return path

    def _load_master_key(self) -> str:
        """One random key per install, in a 0600 file (LiteLLM wants an `sk-` prefix)."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        path = self._run_dir / "litellm-master-key"
        with contextlib.suppress(FileNotFoundError):
            key = path.read_text().strip()
            if key.startswith("sk-"):
                return key
        key = "sk-ccbridge-" + secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key

    # -- status ------------------------------------------------------------
    def status(self) -> ServiceStatus:
        child = self._child
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
