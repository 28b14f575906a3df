"""Find llama-servers on this machine, for the panel's first-run screen.

A candidate is any local TCP port in LISTEN state (psutil) that answers
`GET /v1/models` with an OpenAI-style model list. No textual here: the panel
calls these from a worker thread.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import psutil

from backend.config import _files
from backend.config.loader import DEFAULT_CONFIG_TEXT
from backend.llama_api import models_url

DEFAULT_API_BASE = "http://127.0.0.1:8080/v1"
_PROBE_TIMEOUT = 1.0


def listening_ports() -> list[int]:
    """Local TCP ports in LISTEN state on loopback or any address (empty where psutil may not look)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []
    ports = {
        c.laddr.port for c in conns
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in ("127.0.0.1", "0.0.0.0", "::", "::1")
    }
    return sorted(ports)


def check_server(api_base: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Does `api_base` answer GET {api_base}/models? Returns (ok, what was found or what is wrong)."""
    url = models_url(api_base)
    try:
        resp = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        return False, f"{url} is not reachable ({type(exc).__name__}). Is llama-server running there?"
    if resp.status_code != 200:
        return False, f"{url} answered HTTP {resp.status_code}; expected a model list"
    try:
        models = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return False, f"{url} did not answer with a JSON model list"
    if not models:
        return False, f"{url} lists no models"
    return True, f"serves {models[0]}" + (f" (+{len(models) - 1} more)" if len(models) > 1 else "")


def _probe(port: int) -> tuple[str, str] | None:
    api_base = f"http://127.0.0.1:{port}/v1"
    ok, message = check_server(api_base, _PROBE_TIMEOUT)
    return (api_base, message.removeprefix("serves ")) if ok else None


def find_llama_servers(skip: set[int] | None = None) -> list[tuple[str, str]]:
    """(api_base, model) for every local listener answering GET /v1/models, lowest port first."""
    ports = [p for p in listening_ports() if p not in (skip or set())]
    if not ports:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(ports))) as pool:
        found = [r for r in pool.map(_probe, ports) if r is not None]
    return found


def write_first_config(path: Path, api_base: str) -> Path:
    """Write the default, commented ccbridge.yaml with `api_base` filled in (never overwrites)."""
    path = Path(path)
    text = DEFAULT_CONFIG_TEXT.replace(DEFAULT_API_BASE, api_base.rstrip("/"))
    if not _files.write_new(path, text, _files.default_mode()):
        raise FileExistsError(f"{path} already exists")
    return path
