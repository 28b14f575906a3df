"""How ccbridge addresses a llama-server: its root URL, its endpoints and its Bearer header.

The one place for all of them, so that the proxy, the monitor, the services and
the command-line tools build them alike. No imports beyond the standard library:
every layer may use it.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def server_root(api_base: str) -> str:
    """http://host:8080/v1 -> http://host:8080 (llama-server's /props lives there)."""
    parts = urlsplit(api_base)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")).rstrip("/")


def bearer(api_key: str | None) -> dict[str, str]:
    """llama-server's --api-key as an `authorization: Bearer` header; no header without a key (never logged)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def models_url(api_base: str) -> str:
    """GET {api_base}/models: the OpenAI-style model list (llama-server's first id is the model it serves)."""
    return api_base.rstrip("/") + "/models"


def health_url(api_base: str) -> str:
    """GET /health at the server's root: 200 once the model is loaded, 503 while it loads."""
    return server_root(api_base) + "/health"


def props_url(api_base: str) -> str:
    """GET /props at the server's root: context per slot, slot count, build, chat template."""
    return server_root(api_base) + "/props"


def slots_url(api_base: str) -> str:
    """GET /slots at the server's root (each slot's state); POST /slots/<id>?action=save|restore."""
    return server_root(api_base) + "/slots"


def metrics_url(api_base: str) -> str:
    """GET /metrics at the server's root: llama-server's Prometheus counters (with --metrics)."""
    return server_root(api_base) + "/metrics"
