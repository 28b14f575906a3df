"""The front proxy in `litellm.url` mode, in process, in front of an instrumented upstream.

`running_bridge` starts a `Bridge` on a config and yields it with an HTTP
client for its proxy and the records it finished; `front_bridge` does so on a
config pointing `litellm.url` at the upstream, and `run_with_bridge` and
`run_scripted` run a test body inside that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backend.bridge import Bridge
from backend.config import load_config
from backend.events import RequestFinished, RequestRecord
from tests.support import config as cfg
from tests.support.config import NOWHERE, loopback
from tests.support.upstreams import AnthropicUpstream, ScriptedUpstream

SECRET = "plantedFrontSecret0123456789"  # not key-shaped: only the config redaction can hide it


def write_config(tmp: Path, upstream_url: str, *, proxy: Mapping[str, Any] | None = None,
                 litellm: Mapping[str, Any] | None = None, backend: Mapping[str, Any] | None = None,
                 aliases: Mapping[str, str] | None = None, **sections: Any) -> Path:
    """A config whose LiteLLM is `upstream_url`; a `backend` with `route: native` points at it itself.
    `proxy`, `litellm` and `backend` add fields to those sections; `aliases` replaces the default ones."""
    backend = dict(backend or {})
    native = backend.get("route") == "native"
    fields = {"api_base": upstream_url + "/v1" if native else NOWHERE, "model": "qwen", "max_tokens": 1000, **backend}
    aliases = aliases if aliases is not None else {
        "claude-haiku-*": "local/small", "claude-opus-4-8[1m]": "local/big", "*": "local"}
    return cfg.write_config(
        tmp / "ccbridge.yaml", comment="my bridge", proxy=loopback(**(proxy or {})),
        litellm={"url": upstream_url, **(litellm or {})}, backends={"local": fields}, aliases=aliases,
        comments={"aliases.claude-haiku-*": "quick model", "aliases.*": "catch-all"}, **sections)


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
