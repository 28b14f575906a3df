"""Every filesystem location ccbridge uses, in one place.

Environment overrides (used by tests and by people who keep several setups):
CCBRIDGE_CONFIG_DIR, CCBRIDGE_DATA_DIR, CCBRIDGE_CACHE_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_config_dir, user_data_dir

APP = "ccbridge"


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser() if value else Path(default)


def config_dir() -> Path:
    return _dir("CCBRIDGE_CONFIG_DIR", user_config_dir(APP))


def data_dir() -> Path:
    return _dir("CCBRIDGE_DATA_DIR", user_data_dir(APP))


def cache_dir() -> Path:
    return _dir("CCBRIDGE_CACHE_DIR", user_cache_dir(APP))


def default_config_file() -> Path:
    return config_dir() / "ccbridge.yaml"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def litellm_venv(version: str) -> Path:
    return cache_dir() / f"litellm-{version}"


def run_dir() -> Path:
    """Generated LiteLLM config, its master key (0600), pid files, logs."""
    return data_dir() / "run"


def slots_dir() -> Path:
    """llama-server slot files (`--slot-save-path`) kept across restarts ccbridge makes, one folder per backend."""
    return data_dir() / "slots"
