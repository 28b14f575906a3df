"""Which serve the panel talks to: a config's address and key, a given URL, or the default.

No Textual here: the launcher, `ccbridge web` and the panel's first-run screen
all ask the same questions. Backend modules are imported inside the functions
so that `ccbridge statusline`, which shares the launcher, stays on the standard
library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.api.link import ServeLink

DEFAULT_URL = "http://127.0.0.1:8082"


def config_path(value: str | None) -> Path:
    """The config file given (`--config`), else the one in the user config dir."""
    from backend import paths

    return Path(value).expanduser() if value else paths.default_config_file()


def url_for(path: Path) -> tuple[str, str | None]:
    """The serve URL and key a config file names (proxy.host/port, proxy.api_key)."""
    from backend.claude_env import base_url
    from backend.config import load_config

    config = load_config(path)
    return base_url(config), config.proxy.api_key


def link_for_config(path: Path) -> ServeLink:
    """A link that attaches to the serve on the config's port, or starts one for that config."""
    from backend.api.link import ServeLink

    url, key = url_for(path)
    return ServeLink(url, key, config_path=path, spawn=True)


def key_from_env(given: str | None) -> str | None:
    """The key given, else Claude Code's own variables for it."""
    return given or os.environ.get("ANTHROPIC_AUTH_TOKEN") or os.environ.get("ANTHROPIC_API_KEY") or None


def target(url: str | None, key: str | None, config: str | None) -> tuple[str, str | None]:
    """The URL and key to attach to: given, else the config's, else the default."""
    if url:
        return url, key_from_env(key)
    path = config_path(config)
    if path.exists():
        from backend.config import ConfigError

        try:
            cfg_url, cfg_key = url_for(path)
            return cfg_url, key_from_env(key) or cfg_key
        except ConfigError:
            pass
    return DEFAULT_URL, key_from_env(key)


# How far the panel steps back for the proxy and the model: nice 10 weighs about a tenth of a
# normal process on Linux, so serve (and llama-server, and Claude Code) win a busy core first.
PANEL_NICE = 10


def yield_cpu_to_serve() -> int | None:
    """Lower the panel's scheduling priority once serve runs in its own process: on two cores the
    panel's frames competed with serve for a core and doubled its p99 under load (bench/panel.py).
    On Linux this is the calling thread's priority (Textual draws on it), and what it starts later
    inherits it, so call it after serve was started. The new nice value, or None where unsupported."""
    if not hasattr(os, "setpriority"):
        return None
    try:
        now = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, min(19, now + PANEL_NICE))
        return os.getpriority(os.PRIO_PROCESS, 0)
    except OSError:
        return None
