"""How ccbridge addresses a llama-server: its root URL and its Bearer header.

The one place for both, so that the proxy, the monitor, the services and the
command-line tools build them alike. No imports beyond the standard library:
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
