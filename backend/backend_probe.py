"""What a model server says about itself: model id, context per slot, slots.

Used by `ccbridge env` (to size Claude Code's output cap) and `ccbridge doctor`.
Synchronous (httpx), off the proxy's hot path. Never raises: a missing value
stays None and `error` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

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


def server_root(api_base: str) -> str:
    """http://host:8080/v1 -> http://host:8080 (llama-server's /props lives there)."""
    parts = urlsplit(api_base)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def probe_backend(backend: BackendConfig, timeout: float = 3.0) -> BackendInfo:
    headers = {"authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
    base = backend.api_base.rstrip("/")
    model = n_ctx = n_train = slots = None
    try:
        with httpx.Client(timeout=timeout, headers=headers, trust_env=False) as client:
            resp = client.get(f"{base}/models")
            resp.raise_for_status()
            items = resp.json().get("data") or []
            if items and isinstance(items[0], dict):
                model = items[0].get("id")
                meta = items[0].get("meta") or {}
                n_train = meta.get("n_ctx_train")
            props = client.get(f"{server_root(base)}/props")
            if props.status_code == 200:
                data = props.json()
                slots = data.get("total_slots")
                n_ctx = (data.get("default_generation_settings") or {}).get("n_ctx")
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        if model is None:
            return BackendInfo(backend.name, backend.api_base, False,
                               error=f"{type(exc).__name__}: {exc}")
    return BackendInfo(backend.name, backend.api_base, True, model, n_ctx, n_train, slots)


def output_cap(info: BackendInfo | None, configured: int | None) -> int:
    """A CLAUDE_CODE_MAX_OUTPUT_TOKENS that leaves room for the prompt in the context."""
    cap = 8000
    if info is not None and info.n_ctx_slot:
        cap = min(32_000, max(1024, info.n_ctx_slot // 4))
    if configured:
        cap = min(cap, configured)
    return cap
