"""Header handling shared by the front proxy and the backend leg."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict

from backend.redaction import REDACTED

# RFC 9110 7.6.1 hop-by-hop headers, plus ones the forwarding side recomputes.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
SECRET_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie", "api-key"})


def forward_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    *,
    drop: frozenset[str] = frozenset(),
) -> CIMultiDict[str]:
    """Copy headers minus hop-by-hop ones (and any named in `drop`, lower-case)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        low = name.lower()
        if low in HOP_BY_HOP or low in drop:
            continue
        out.add(name, value)
    return out


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers safe to show or store: secrets replaced by a marker."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in items]


def client_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, as `x-api-key` or `Authorization: Bearer`."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def client_version(user_agent: str) -> str | None:
    """The client's name and version, the first word of its User-Agent (`claude-cli/2.1.330`)."""
    return user_agent.split(" ", 1)[0] or None if user_agent else None


def key_accepted(headers: Mapping[str, str], api_key: str | None) -> bool:
    """The proxy's rule: with `proxy.api_key` set, the client's key (`client_key`) must equal it."""
    if not api_key:
        return True
    given = client_key(headers)
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())
