"""Run the real `ccbridge serve` as a child process, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.config import chain_config

REPO = Path(__file__).resolve().parents[2]


def write_chain_config(path: Path, api_base: str, *, others: Mapping[str, Mapping[str, Any]] | None = None,
                       proxy: Mapping[str, Any] | None = None, litellm: Mapping[str, Any] | None = None,
                       cache: Mapping[str, Any] | None = None, **backend: Any) -> Path:
    """One backend `local` at `api_base` (plus `backend` fields) behind LiteLLM, everything aliased to it;
    `others` are more backends, `proxy`, `litellm` and `cache` fields of those sections."""
    return chain_config(path, {"local": {"api_base": api_base, "model": "auto", **backend}, **(others or {})},
                        proxy=proxy, litellm=litellm or True, cache=cache)


class ServeProcess:
    """`python -m backend serve --config FILE`, waited on until LiteLLM is ready."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, api_key: str | None = None) -> None:
        self.config = config
        self.headers = {"x-api-key": api_key} if api_key else {}
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="ccbridge-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 240.0) -> ServeProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "backend", "serve", "--config", str(self.config)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
            )
        port = next(int(line.split(":")[1]) for line in self.config.read_text().splitlines()
                    if line.strip().startswith("port:"))
        self.url = f"http://127.0.0.1:{port}"
        try:
            return self._wait_ready(timeout)
        except BaseException:
            self.stop()  # a failed start must not leave ccbridge (and its LiteLLM) running
            raise

    def _wait_ready(self, timeout: float) -> ServeProcess:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ccbridge serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                status = httpx.get(f"{self.url}/ccbridge/api/status", headers=self.headers, timeout=2,
                                   trust_env=False).json()
                if status["services"][1]["state"] in ("ready", "external", "unused"):
                    return self
            except (httpx.HTTPError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"ccbridge serve not ready in {timeout} s:\n{self.log()}")

    def status(self) -> dict:
        return httpx.get(f"{self.url}/ccbridge/api/status", headers=self.headers, timeout=5, trust_env=False).json()

    def requests(self, limit: int = 20) -> list[dict]:
        resp = httpx.get(f"{self.url}/ccbridge/api/requests?limit={limit}", headers=self.headers, timeout=5,
                         trust_env=False)
        return resp.json()["requests"]

    def litellm_pid(self) -> int | None:
        return self.status()["services"][1]["pid"]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something true or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def records_for(serve: ServeProcess, path: str = "/v1/messages", n: int = 1,
                timeout: float = 5) -> list[dict[str, Any]]:
    """The newest `n` records of requests to `path`, waited for up to `timeout` seconds."""
    got = wait_for(lambda: [r for r in serve.requests(50) if r["path"] == path][:n] or None, timeout)
    return got or []


class StreamReader(threading.Thread):
    """Reads a stream continuously (as Claude Code does) until told to hang up."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.deltas = 0
        self.status: int | None = None
        self.hang_up = threading.Event()
        self.closed_at: float | None = None
        self.tail = b""  # the last bytes received
        self.error: str | None = None  # how reading failed, if it did

    def run(self) -> None:
        try:
            with httpx.Client(timeout=60, trust_env=False) as client:
                with client.stream("POST", self.url, json=self.body) as resp:
                    self.status = resp.status_code
                    for chunk in resp.iter_raw():
                        self.deltas += chunk.count(b"content_block_delta")
                        self.tail = (self.tail + chunk)[-2000:]
                        if self.hang_up.is_set():
                            break
                    self.closed_at = time.monotonic()  # leaving the block closes the connection
        except httpx.HTTPError as exc:
            self.error = repr(exc)
