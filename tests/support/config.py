"""ccbridge.yaml text for tests, built from a few keyword arguments instead of written by hand.

`config_text()` alone is the smallest valid config: one backend `local` that
nothing answers at, and `"*": local`. Sections come out in the order a user's
file has them (proxy, litellm, backends, aliases, history, groups, cache);
strings are written plain where YAML reads them back unchanged, else quoted;
lists are written in flow style (`[a, b]`). `comments` puts a trailing comment
on a line, named by its path (`"backends.local.command"`, `"aliases.*"`), as a
user's hand-written file has them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.llama import free_port

NOWHERE = "http://127.0.0.1:9/v1"  # a backend nothing answers at (port 9 is discard)

_PLAIN = re.compile(r"^[A-Za-z0-9_./~-][^#]*$")
_SECTIONS = ("proxy", "litellm", "backends", "aliases", "history", "groups", "cache")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    text = str(value)
    plain = _PLAIN.match(text) and ": " not in text and not text.endswith((":", " ")) and "," not in text
    return text if plain else json.dumps(text)


class _Writer:
    def __init__(self, comments: Mapping[str, str]) -> None:
        self.comments = comments
        self.lines: list[str] = []

    def line(self, path: str, text: str) -> None:
        note = self.comments.get(path)
        self.lines.append(f"{text}   # {note}" if note else text)

    def mapping(self, path: str, fields: Mapping[str, Any], depth: int, quote_keys: bool = False) -> None:
        for key, value in fields.items():
            name = json.dumps(key) if quote_keys else key
            here = f"{path}.{key}"
            if isinstance(value, Mapping):
                self.line(here, f"{'  ' * depth}{name}:")
                self.mapping(here, value, depth + 1)
            else:
                self.line(here, f"{'  ' * depth}{name}: {_scalar(value)}")


def config_text(*, proxy: Mapping[str, Any] | None = None, litellm: Mapping[str, Any] | None = None,
                backends: Mapping[str, Mapping[str, Any]] | None = None,
                aliases: Mapping[str, str | list[str]] | None = None,
                history: Mapping[str, Any] | None = None, groups: Mapping[str, Any] | None = None,
                cache: Mapping[str, Any] | None = None, comment: str | None = None,
                comments: Mapping[str, str] | None = None) -> str:
    """The YAML text; `backends` maps each name to its fields (default: `local` at `NOWHERE`), `aliases`
    each pattern to its target or group (default: everything to the first backend)."""
    backends = backends if backends is not None else {"local": {"api_base": NOWHERE}}
    aliases = aliases if aliases is not None else {"*": next(iter(backends))}
    sections = {"proxy": proxy, "litellm": litellm, "backends": backends, "aliases": aliases,
                "history": history, "groups": groups, "cache": cache}
    out = _Writer(comments or {})
    if comment:
        out.lines.append(f"# {comment}")
    for name in _SECTIONS:
        fields = sections[name]
        if fields is not None:
            out.line(name, f"{name}:")
            out.mapping(name, fields, 1, quote_keys=name == "aliases")
    return "\n".join(out.lines) + "\n"


def write_config(path: Path, **sections: Any) -> Path:
    """`config_text(**sections)` written to `path`."""
    path.write_text(config_text(**sections))
    return path


def loopback(**fields: Any) -> dict[str, Any]:
    """A `proxy:` section on loopback at a free port (plus `fields`)."""
    return {"host": "127.0.0.1", "port": free_port(), **fields}


def chain_config(path: Path, backends: Mapping[str, Mapping[str, Any]], *,
                 litellm: Mapping[str, Any] | bool = True, proxy: Mapping[str, Any] | None = None,
                 **sections: Any) -> Path:
    """A config for a test that starts serve or a Bridge: the proxy on loopback at a free port, LiteLLM
    at another (plus `litellm` fields; none with `litellm=False`), then `backends` and the other `sections`."""
    managed = None if litellm is False else {"port": free_port(), **(litellm if isinstance(litellm, Mapping) else {})}
    return write_config(path, proxy=loopback(**(proxy or {})), litellm=managed, backends=backends, **sections)
