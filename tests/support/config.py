"""ccbridge.yaml text for tests, built from a few keyword arguments instead of written by hand.

`config_text()` alone is the smallest valid config: one backend `local` that
nothing answers at, and `"*": local`. Sections come out in the order a user's
file has them (proxy, litellm, backends, aliases, history); strings are written
plain where YAML reads them back unchanged, else quoted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NOWHERE = "http://127.0.0.1:9/v1"  # a backend nothing answers at (port 9 is discard)

_PLAIN = re.compile(r"^[A-Za-z0-9_./~-][^#]*$")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    plain = _PLAIN.match(text) and ": " not in text and not text.endswith((":", " "))
    return text if plain else json.dumps(text)


def _section(name: str, fields: Mapping[str, Any], indent: str = "  ") -> str:
    return f"{name}:\n" + "".join(f"{indent}{key}: {_scalar(value)}\n" for key, value in fields.items())


def config_text(*, proxy: Mapping[str, Any] | None = None, litellm: Mapping[str, Any] | None = None,
                backends: Mapping[str, Mapping[str, Any]] | None = None, aliases: Mapping[str, str] | None = None,
                history: Mapping[str, Any] | None = None, comment: str | None = None) -> str:
    """The YAML text; `backends` maps each name to its fields (default: `local` at `NOWHERE`), `aliases`
    each pattern to its target (default: everything to the first backend)."""
    backends = backends if backends is not None else {"local": {"api_base": NOWHERE}}
    aliases = aliases if aliases is not None else {"*": next(iter(backends))}
    text = f"# {comment}\n" if comment else ""
    if proxy is not None:
        text += _section("proxy", proxy)
    if litellm is not None:
        text += _section("litellm", litellm)
    text += "backends:\n" + "".join(f"  {name}:\n" + "".join(f"    {k}: {_scalar(v)}\n" for k, v in fields.items())
                                    for name, fields in backends.items())
    text += "aliases:\n" + "".join(f"  {json.dumps(pattern)}: {target}\n" for pattern, target in aliases.items())
    if history is not None:
        text += _section("history", history)
    return text


def write_config(path: Path, **sections: Any) -> Path:
    """`config_text(**sections)` written to `path`."""
    path.write_text(config_text(**sections))
    return path
