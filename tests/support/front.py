"""The front proxy in `litellm.url` mode, in process, in front of an instrumented upstream.

`running_bridge` starts a `Bridge` on a config and yields it with an HTTP
client for its proxy and the records it finished; `front_bridge` does so on a
config pointing `litellm.url` at the upstream, and `run_with_bridge` and
`run_scripted` run a test body inside that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.bridge import Bridge
from backend.config import load_config
from backend.events import RequestFinished, RequestRecord
from tests.support.llama import free_port
from tests.support.upstreams import AnthropicUpstream, ScriptedUpstream

SECRET = "plantedFrontSecret0123456789"  # not key-shaped: only the config redaction can hide it


def write_config(tmp: Path, upstream_url: str, *, extra_proxy: str = "", aliases: str | None = None,
                 litellm_extra: str = "", backend_extra: str = "", tail: str = "") -> Path:
    """`backend_extra` with `route: native` points the backend at the upstream itself."""
    aliases = aliases if aliases is not None else (
        '  "claude-haiku-*": local/small   # quick model\n'
        '  "claude-opus-4-8[1m]": local/big\n'
        '  "*": local            # catch-all\n'
    )
    path = tmp / "ccbridge.yaml"
    path.write_text(
        "# my bridge\n"
        "proxy:\n"
        "  host: 127.0.0.1\n"
        f"  port: {free_port()}\n"
        f"{extra_proxy}"
        "litellm:\n"
        f"  url: {upstream_url}\n"
        f"{litellm_extra}"
        "backends:\n"
        "  local:\n"
        f"    api_base: {upstream_url + '/v1' if 'native' in backend_extra else 'http://127.0.0.1:9/v1'}\n"
        "    model: qwen\n"
        "    max_tokens: 1000\n"
        f"{backend_extra}"
        "aliases:\n" + aliases + tail
    )
    return path


def messages_body(model: str = "claude-opus-4-8", stream: bool = False, **extra: Any) -> dict[str, Any]:
    """A small Anthropic messages request, as Claude Code shapes it."""
    return {"model": model, "max_tokens": 64000, "stream": stream,
            "messages": [{"role": "system", "content": "env"}, {"role": "user", "content": "Hello"}], **extra}


@dataclass
class RunningFront:
    """A started bridge, a client for its proxy, and the records it finished so far (when collected)."""

    bridge: Bridge
    client: httpx.AsyncClient
    records: list[RequestRecord] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_bridge(config_path: Path, run_dir: Path, *, collect: bool = False) -> AsyncIterator[RunningFront]:
    """A Bridge started on this config, with a client for its proxy; stopped on the way out. `collect`
    gathers the records it finishes."""
    bridge = Bridge(load_config(config_path), run_dir=run_dir)
    records: list[RequestRecord] = []
    if collect:
        bridge.subscribe(lambda e: records.append(e.record) if isinstance(e, RequestFinished) else None)
    await bridge.start()
    try:
        async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=10, trust_env=False) as client:
            yield RunningFront(bridge, client, records)
    finally:
        await bridge.stop()


@contextlib.asynccontextmanager
async def front_bridge(tmp_path: Path, upstream: AnthropicUpstream | ScriptedUpstream, *, collect: bool = False,
                       **config_kw: Any) -> AsyncIterator[RunningFront]:
    """Start `upstream`, then `running_bridge` on a config whose `litellm.url` is it (`config_kw` go to
    `write_config`); both stop on the way out."""
    url = await upstream.start()
    try:
        async with running_bridge(write_config(tmp_path, url, **config_kw), tmp_path / "run",
                                  collect=collect) as front:
            yield front
    finally:
        await upstream.stop()


def run_with_bridge(tmp_path: Path, body: Callable[[Bridge, AnthropicUpstream, httpx.AsyncClient], Awaitable[None]],
                    *, upstream: AnthropicUpstream | None = None, **config_kw: Any) -> None:
    """`body(bridge, upstream, client)` against an `AnthropicUpstream` (a fresh one unless given)."""
    async def main() -> None:
        up = upstream or AnthropicUpstream()
        async with front_bridge(tmp_path, up, **config_kw) as front:
            await body(front.bridge, up, front.client)

    asyncio.run(main())


def run_scripted(tmp_path: Path,
                 body: Callable[[ScriptedUpstream, httpx.AsyncClient, list[RequestRecord]], Awaitable[None]],
                 **config_kw: Any) -> None:
    """`body(upstream, client, records)` against a `ScriptedUpstream`; records collected."""
    async def main() -> None:
        up = ScriptedUpstream()
        async with front_bridge(tmp_path, up, collect=True, **config_kw) as front:
            await body(up, front.client, front.records)

    asyncio.run(main())
