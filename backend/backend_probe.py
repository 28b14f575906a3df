"""What a model server says about itself: model id, context per slot, slots.

Used by `ccbridge env` (to size Claude Code's output cap). It asks with the
monitor's own probe (`backend.monitor.llama`: the same endpoints, the same
parsing), once, off the proxy's hot path. Never raises: a missing value stays
None and `error` says why.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from backend.config.model import BackendConfig

# Claude Code's first turn is ~15k (2.1.197) to ~20k tokens (2.1.330), FACTS: under this it fails,
# and 2.1.330 will not compact before a 100k window.
MIN_CONTEXT = 32_768
COMFORTABLE_CONTEXT = 100_000


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend's answers to GET /v1/models and GET /props."""

    name: str
    api_base: str
    reachable: bool
    model: str | None = None
    n_ctx_slot: int | None = None  # context per slot (what one request can use)
    n_ctx_train: int | None = None
    total_slots: int | None = None
    error: str | None = None
    health: str = "unknown"  # GET /health: ok, loading (503 while the model loads), unreachable, error


def server_root(api_base: str) -> str:
    """http://host:8080/v1 -> http://host:8080 (llama-server's /props lives there)."""
    parts = urlsplit(api_base)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def probe_backend(backend: BackendConfig, timeout: float = 3.0) -> BackendInfo:
    """Ask one backend now (synchronous: for command-line tools, never on a running event loop)."""
    return asyncio.run(_probe(backend, timeout))


async def _probe(backend: BackendConfig, timeout: float) -> BackendInfo:
    from backend.monitor.llama import parse_model_info, parse_slots, probe_llama

    async with aiohttp.ClientSession(trust_env=False, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        reading = await probe_llama(session, backend.api_base, backend.api_key, at=time.time())
    models = reading.body("models")
    if models is None:
        answer = reading.answers.get("models") or reading.answers.get("health")
        why = answer.detail if answer is not None and answer.detail else reading.health_detail
        return BackendInfo(backend.name, backend.api_base, False, health=reading.health,
                           error=why or f"{backend.api_base}/models did not answer with a model list")
    info = parse_model_info(reading.body("props"), models)
    slots = parse_slots(reading.body("slots")) if reading.body("slots") is not None else ()
    n_ctx = info.n_ctx_slot or (slots[0].n_ctx if slots else None)
    return BackendInfo(backend.name, backend.api_base, True, info.model, n_ctx, info.n_ctx_train,
                       info.total_slots or (len(slots) or None), health=reading.health)


def output_cap(info: BackendInfo | None, configured: int | None) -> int:
    """A CLAUDE_CODE_MAX_OUTPUT_TOKENS that leaves room for the prompt in the context."""
    cap = 8000
    if info is not None and info.n_ctx_slot:
        cap = min(32_000, max(1024, info.n_ctx_slot // 4))
    if configured:
        cap = min(cap, configured)
    return cap
