"""Who may ask: the `Host` and `Origin` checks that keep web pages out of ccbridge.

ccbridge listens on loopback, but a page open in the user's browser can still
reach 127.0.0.1 in two ways:

- DNS rebinding: the page's own name is made to resolve to 127.0.0.1, so the
  browser treats ccbridge as the page's own origin and lets it read every answer
  (status, kept request bodies with the user's code, the event stream). Its
  requests carry the page's name in `Host`, so `host_ok` refuses any name that is
  not loopback, the bound address, or one the user listed in `proxy.allowed_hosts`.
  An IP literal cannot be rebound (there is no name to point elsewhere).
- Cross-site requests: a form or a `fetch(..., {mode: "no-cors"})` may POST with
  `content-type: text/plain` without a preflight; it cannot read the answer, but
  the POST still acts. Browsers send `Origin` with every such request, so a
  state-changing method with a foreign `Origin` is refused, and ccbridge's own API
  also wants `content-type: application/json`, which a browser cannot send
  cross-site without a preflight that ccbridge never answers.

Claude Code, the anthropic SDK, curl and ccbridge's own client send no `Origin`
and a loopback `Host`, so they pass. The port in `Host` is not compared: it
gives nothing against rebinding (the attacker controls the name, never the
port's meaning), and an SSH tunnel to another local port must keep working.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp import web

from backend.config.model import ProxyConfig
from backend.proxy.errors import anthropic_error

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names every policy accepts."""
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
"""Bind addresses that listen on every interface."""
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Methods that change something; these must not come from a foreign page."""
_JSON_TYPES = ("application/json",)


def split_host(value: str) -> tuple[str, int | None] | None:
    """`Host` header -> (lower-case name without brackets or trailing dot, port); None when malformed.

    `[::1]:8082` -> ("::1", 8082); `LocalHost.:80` -> ("localhost", 80); `::1` (unbracketed) -> None."""
    value = value.strip()
    if not value or any(ch.isspace() or ch in "/@?#\\" for ch in value):
        return None
    port: int | None = None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        else:
            port_text = None
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            return None
    else:
        name, sep, port_text_ = value.rpartition(":")
        if not sep:
            name, port_text = value, None
        elif ":" in name:
            return None  # an IPv6 address must be bracketed in Host
        else:
            port_text = port_text_
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    name = name.lower().rstrip(".")
    return (name, port) if name else None


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Which names a request may address ccbridge by: loopback, the bound address, configured names."""

    bound: str
    """The address ccbridge listens on (`proxy.host`)."""
    allowed: frozenset[str] = frozenset()
    """Extra names, lower-case (`proxy.allowed_hosts`), for a bind other machines reach."""
    _passed: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    """`Host` values already judged (a client sends the same one every time): ~1 us instead of ~4 per request."""

    @classmethod
    def of(cls, bound: str, allowed: Iterable[str] = ()) -> HostPolicy:
        return cls(bound.strip("[]").lower().rstrip("."), frozenset(n.lower().rstrip(".") for n in allowed))

    def name_ok(self, name: str) -> bool:
        """A bare name (no port, no brackets, lower case)."""
        if name in LOOPBACK_NAMES or name in self.allowed or (name == self.bound and name not in WILDCARD_BINDS):
            return True
        ip = _ip(name)
        if ip is None:
            return False  # a name nobody configured: what a rebinding page sends
        mapped = getattr(ip, "ipv4_mapped", None)
        if ip.is_loopback or (mapped is not None and mapped.is_loopback):
            return True
        # listening on every interface: any address of this machine reaches it, and an address cannot be rebound
        return self.bound in WILDCARD_BINDS

    def host_ok(self, host: str | None) -> bool:
        """A `Host` header. None (HTTP/1.0, no header) passes: every browser sends one."""
        if host is None:
            return True
        known = self._passed.get(host)
        if known is not None:
            return known
        parts = split_host(host)
        ok = parts is not None and self.name_ok(parts[0])
        if len(self._passed) < 256:  # bounded: a client making up names cannot grow it
            self._passed[host] = ok
        return ok

    def origin_ok(self, origin: str | None) -> bool:
        """An `Origin` header. None passes (not a browser, or a same-origin GET); `null` does not."""
        if origin is None:
            return True
        try:
            parts = urlsplit(origin.strip())
            hostname = parts.hostname
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not hostname:
            return False
        return self.name_ok(hostname.rstrip("."))


@lru_cache(maxsize=16)
def policy_for(bound: str, allowed: tuple[str, ...]) -> HostPolicy:
    """The policy for a config (cached: it is asked on every request)."""
    return HostPolicy.of(bound, allowed)


def _shown(value: str) -> str:
    return repr(value[:100])


def refusal(policy: HostPolicy, method: str, path: str, headers: Mapping[str, str],
            where: str = "proxy.allowed_hosts in ccbridge.yaml", *,
            origin_always: bool = False) -> tuple[int, str] | None:
    """Why this request is refused (HTTP status, message), or None to serve it.

    Every path is checked, the probes included: one rule in one place, and Claude Code's probes
    carry a loopback `Host` like everything else it sends. `origin_always` checks `Origin` on every
    method (the web panel: a page elsewhere may open its websocket with a GET)."""
    host = headers.get("host")
    if not policy.host_ok(host):
        return 403, (
            f"ccbridge: refused a request addressed to host {_shown(host or '')}. ccbridge answers only "
            "requests for this machine's loopback names (127.0.0.1, localhost, [::1]), the address it "
            f"listens on, and names listed in {where}: a web page that made its own name point at "
            "127.0.0.1 (DNS rebinding) must not reach it. If you reach ccbridge by this name on purpose, "
            f"add it to {where}.")
    if method in UNSAFE_METHODS or origin_always:
        origin = headers.get("origin")
        if not policy.origin_ok(origin):
            return 403, (
                f"ccbridge: refused a {method} from the web page at {_shown(origin or '')}: a page in a "
                "browser may not change ccbridge or use its models. Claude Code, the SDK and curl send no "
                f"Origin header; a page of your own must be served from a loopback name or one in {where}.")
        if path.startswith("/ccbridge/") and method in UNSAFE_METHODS:
            content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if content_type not in _JSON_TYPES:
                return 415, (
                    f"ccbridge: {method} {path} needs content-type: application/json (got "
                    f"{_shown(content_type) if content_type else 'none'}); with curl add "
                    "-H 'content-type: application/json' -d '{}'. Browsers cannot send that cross-site "
                    "without asking first, which keeps web pages from changing ccbridge.")
    return None


def refuse_foreign(request: web.BaseRequest, proxy: ProxyConfig, config_path: str) -> web.Response | None:
    """The proxy port's gate: an Anthropic-shaped 403 (or 415) for a request a web page sent, else None."""
    why = refusal(policy_for(proxy.host, proxy.allowed_hosts), request.method, request.path, request.headers,
                  f"proxy.allowed_hosts in {config_path}")
    if why is None:
        return None
    status, message = why
    return web.Response(status=status, body=anthropic_error(status, message), content_type="application/json")
