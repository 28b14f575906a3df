"""Who started a `ccbridge serve`, and the one sentence that names a running serve.

A panel killed with its terminal leaves the serve it started running (by
design: no request is dropped). The next `ccbridge`, `ccbridge claude` or
`ccbridge attach` then says which serve it found, who started it and when,
so a serve nobody sees is never a mystery. Whoever starts a serve as a child
sets `STARTED_BY_ENV`; the serve reports it (with its pid) in its status.
Standard library only: `ccbridge stop` and the launcher import it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

STARTED_BY_ENV = "CCBRIDGE_STARTED_BY"
"""Set by whoever starts `ccbridge serve` as a child: "the panel", "ccbridge claude"."""
BY_HAND = "`ccbridge serve`"


def started_by(environ: Mapping[str, str] | None = None) -> str:
    """Who started this serve: the spawner's word, else `ccbridge serve` run by hand (or a unit)."""
    env = os.environ if environ is None else environ
    return env.get(STARTED_BY_ENV) or BY_HAND


def proxy_service(status: Mapping[str, Any]) -> dict[str, Any]:
    """The `proxy` entry of a status (empty when the serve is too old to have one)."""
    for service in status.get("services") or ():
        if isinstance(service, dict) and service.get("name") == "proxy":
            return service
    return {}


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def describe(status: Mapping[str, Any], url: str, now: float | None = None) -> str:
    """'ccbridge serve 0.1.0 at URL (pid 123, config X), started by the panel at 04:31 (2 h ago)'."""
    proxy = proxy_service(status)
    now = time.time() if now is None else now
    parts = [f"pid {proxy['pid']}"] if proxy.get("pid") else []
    if status.get("config_path"):
        parts.append(f"config {status['config_path']}")
    line = f"ccbridge serve {status.get('version') or ''} at {url}".replace("  ", " ")
    if parts:
        line += f" ({', '.join(parts)})"
    who = proxy.get("started_by")
    when = proxy.get("started_at")
    if who or isinstance(when, int | float):
        line += f", started by {who or 'an older ccbridge'}"
        if isinstance(when, int | float):
            line += f" at {time.strftime('%H:%M', time.localtime(when))} ({_ago(max(0.0, now - when))})"
    return line
