"""The model scorecard on real llama-servers with the test models (fast ones; the real Qwen model's
card is checked in test_real_model.py): a model that calls tools natively, and one that cannot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from backend.config.model import BackendConfig
from backend.monitor.sampler import sample_once
from backend.monitor.scorecard import Scorecard, probe_model
from tests.support.llama import LlamaServer
from tests.support.scripted_model import scripted_llama_server, write_scripted_model

pytestmark = pytest.mark.e2e


def card_of(server: LlamaServer) -> Scorecard:
    async def probe() -> Scorecard:
        backend = BackendConfig(name="local", api_base=server.api_base)
        snap = await sample_once({"local": backend}, settle=0)
        async with aiohttp.ClientSession() as session:
            return await probe_model(session, backend, snap.backends[0])
    return asyncio.run(probe())


def test_the_scripted_qwen3_model_calls_natively_and_thinks(tmp_path: Path) -> None:
    with scripted_llama_server(write_scripted_model(tmp_path / "scripted.gguf")) as server:
        card = card_of(server)
    lines = {line.topic: line for line in card.lines}
    assert card.tool_calls == "native", card
    assert lines["tools in the template"].level == "ok"
    assert lines["thinking"].level == "ok"
    assert lines["context per slot"].level == "ok" and lines["sliding-window attention"].level == "ok"
    assert card.verdict == "ok"


def test_the_random_tiny_model_gets_the_fix_for_its_template_and_calls(start_llama_server) -> None:
    server = start_llama_server(extra_args=("--jinja", "--slots"))
    card = card_of(server)
    lines = {line.topic: line for line in card.lines}
    assert lines["tools in the template"].level == "warn", lines  # its template renders no tools
    assert card.tool_calls == "none" and lines["tool calls"].level == "warn"
    assert "tool calls" in lines["tool calls"].fix
    assert card.verdict == "warn"
