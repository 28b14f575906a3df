"""`proxy.host: ::1`: `ccbridge env`, `ccbridge claude` and the status say `http://[::1]:PORT`, which works."""

from __future__ import annotations

import asyncio

import httpx

from backend.bridge import Bridge
from backend.claude_env import base_url, claude_settings
from backend.cli import main as cli_main
from backend.config import load_config
from tests.support.config import config_text
from tests.support.llama import free_port


def _config(tmp_path, host: str, name: str = "ccbridge.yaml", key: str = ""):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    port = free_port()
    proxy = {"host": host, "port": port, **({"api_key": key} if key else {})}
    path.write_text(config_text(proxy=proxy, litellm={"url": "http://127.0.0.1:9"}))
    return path, port


def test_env_prints_a_bracketed_ipv6_base_url(tmp_path, capsys):
    path, port = _config(tmp_path, "::1")
    assert cli_main(["env", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"export ANTHROPIC_BASE_URL='http://[::1]:{port}'" in out, out  # quoted: brackets are shell globs
    assert "http://::1" not in out


def test_claude_gets_a_url_that_reaches_a_serve_on_ipv6_loopback(tmp_path):
    path, port = _config(tmp_path, "::1")
    config = load_config(path)
    settings = {s.name: s.value for s in claude_settings(config, None)}
    assert settings["ANTHROPIC_BASE_URL"] == base_url(config) == f"http://[::1]:{port}"  # what `ccbridge claude` sets
    wildcard, _ = _config(tmp_path, "::", "wild.yaml", "a-key-for-all-interfaces")
    assert base_url(load_config(wildcard)).startswith("http://127.0.0.1:")

    async def main() -> None:
        bridge = Bridge(config, run_dir=tmp_path / "run")
        await bridge.start()
        try:
            assert bridge.proxy_url == f"http://[::1]:{port}"
            async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
                resp = await client.get(f"{settings['ANTHROPIC_BASE_URL']}/ccbridge/api/status")
                assert resp.status_code == 200 and resp.json()["proxy_url"] == f"http://[::1]:{port}"
        finally:
            await bridge.stop()

    asyncio.run(main())
