"""Test-wide settings: every test gets its own config and data dirs.

The cache dir (LiteLLM's environment, llama-server, Claude Code) stays the
user's real one, so heavy setup is done once and reused across runs.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("CCBRIDGE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("CCBRIDGE_DATA_DIR", str(tmp_path / "data"))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
