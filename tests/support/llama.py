"""Start and stop a real llama-server (CPU build, cached outside the repo).

The binary comes from ``bash scripts/build_llama_server.sh``. Each
``LlamaServer`` binds 127.0.0.1 on a free port, logs to a file in its own
temporary directory, and is healthy once ``GET /health`` answers 200
(it answers 503 while the model loads).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
BUILD_SCRIPT = "bash scripts/build_llama_server.sh"


def cache_dir() -> Path:
    """The ccbridge tool cache (same rule as the build and install scripts)."""
    env = os.environ.get("CCBRIDGE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ccbridge"


def llama_server_binary() -> Path:
    """Path of the cached llama-server; RuntimeError if it was never built."""
    path = cache_dir() / "tools" / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}" / "llama-server"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(f"llama-server not found at {path}: run `{BUILD_SCRIPT}` first")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServerError(RuntimeError):
    """llama-server died or never became healthy; the message has its log tail."""


class LlamaServer:
    """A llama-server child process, usable as a context manager.

    ``threads`` defaults to 1: the test machines have two cores shared with
    other processes, and ggml's worker threads spin while they wait.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        ctx: int = 65536,
        parallel: int = 1,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        threads: int = 1,
        startup_timeout: float = 30.0,
    ) -> None:
        self.model_path = Path(model_path)
        self.ctx = ctx
        self.parallel = parallel
        self.extra_args = tuple(extra_args)
        self.threads = threads
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self.port: int = port or 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._log_path: Path | None = None
        self._final_log: str | None = None

    # -- addresses ---------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("llama-server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [
            str(llama_server_binary()),
            "--model", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--ctx-size", str(self.ctx),
            "--parallel", str(self.parallel),
            "--threads", str(self.threads),
            "--threads-batch", str(self.threads),
            *self.extra_args,
        ]  # fmt: skip

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> LlamaServer:
        if self._proc is not None:
            raise RuntimeError("llama-server already started")
        binary = llama_server_binary()
        self._final_log = None  # a restart logs afresh
        if not self.model_path.is_file():
            raise FileNotFoundError(self.model_path)
        self._tmpdir = Path(tempfile.mkdtemp(prefix="ccbridge-llama-"))
        # A free port can be taken between free_port() and bind(): retry a
        # couple of times when we chose the port ourselves.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(1, attempts + 1):
            if not self._fixed_port:
                self.port = free_port()
            self._log_path = self._tmpdir / f"llama-server.{attempt}.log"
            try:
                self._spawn(binary)
                self._wait_healthy()
                return self
            except LlamaServerError as exc:
                bind_failed = "bind" in self.log_text().lower()
                self._kill()
                if attempt == attempts or not bind_failed:
                    self._cleanup()
                    raise exc from None
        raise AssertionError("unreachable")

    def _spawn(self, binary: Path) -> None:
        assert self._log_path is not None
        cmd = self.command()
        cmd[0] = str(binary)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer"
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise LlamaServerError(
                        f"llama-server exited with {code} while starting; log tail:\n" + self.log_tail()
                    )
                try:
                    resp = client.get(self.base_url + "/health")
                    if resp.status_code == 200 and resp.json().get("status") == "ok":
                        return
                    last = f"{resp.status_code} {resp.text[:200]}"
                except (httpx.HTTPError, ValueError) as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama-server not healthy after {self.startup_timeout:.0f} s "
                        f"(last /health: {last}); log tail:\n" + self.log_tail()
                    )
                time.sleep(0.1)

    def _kill(self, grace: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def _cleanup(self) -> None:
        self._final_log = self.log_text()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self._log_path = None

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after 5 s) and keep the log text."""
        self._kill()
        self._cleanup()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"LlamaServer({self.model_path.name}, port={self.port}, {state})"


def slot_busy(llama: LlamaServer) -> bool:
    """Some slot of this llama-server is processing a request now (GET /slots)."""
    slots = httpx.get(f"{llama.base_url}/slots", timeout=5, trust_env=False).json()
    return any(s.get("is_processing") for s in slots)
