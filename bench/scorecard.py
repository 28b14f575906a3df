"""The model scorecard for the four models the tests have, each behind a real llama-server.

    .venv/bin/python -m bench.scorecard

Models: the tiny random-weight llama (tests/support/tiny_model.py), the scripted Qwen3-template
model (tests/support/scripted_model.py), Gemma 3 270M base with a Gemma chat template
(`scripts/fetch_gemma.sh`) and Qwen2.5-Coder 0.5B Instruct (`scripts/fetch_qwen.sh`). Each is
started as the tests start it and probed with `backend.monitor.scorecard.probe_model`, the
probe `ccbridge doctor` and the status API use. Prints one markdown table (the README's).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from backend.config.model import BackendConfig
from backend.monitor.sampler import sample_once
from backend.monitor.scorecard import Scorecard, ScoreLine, probe_model
from tests.support.gemma import CHAT_TEMPLATE as GEMMA_TEMPLATE
from tests.support.gemma import CPU_SAFE
from tests.support.llama import LlamaServer, cache_dir
from tests.support.qwen import qwen_llama_server
from tests.support.scripted_model import scripted_llama_server, write_scripted_model
from tests.support.tiny_model import write_tiny_model


def _servers(tmp: Path) -> list[tuple[str, Callable[[], LlamaServer]]]:
    gemma_template = tmp / "gemma.jinja"
    gemma_template.write_text(GEMMA_TEMPLATE)
    gemma = cache_dir() / "models" / "gemma-3-270m-q4_k_m.gguf"
    return [
        ("random tiny (llama, 2 blocks)",
         lambda: LlamaServer(write_tiny_model(tmp / "tiny.gguf"), extra_args=("--slots", "--metrics", "--jinja"))),
        ("scripted Qwen3 (test model)", lambda: scripted_llama_server(write_scripted_model(tmp / "scripted.gguf"))),
        ("Gemma 3 270M base", lambda: LlamaServer(gemma, ctx=32768, threads=2, startup_timeout=120, extra_args=(
            *CPU_SAFE, "--jinja", "--chat-template-file", str(gemma_template), "--slots", "--metrics"))),
        ("Qwen2.5-Coder 0.5B Instruct", lambda: qwen_llama_server(ctx=65536)),
    ]


async def _card(server: LlamaServer, name: str) -> tuple[Scorecard, float]:
    backend = BackendConfig(name=name, api_base=server.api_base)
    snap = await sample_once({name: backend}, settle=0)
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        card = await probe_model(session, backend, snap.backends[0])
    return card, time.perf_counter() - started


TOPICS = ("tools in the template", "tool calls", "thinking", "context per slot", "sliding-window attention")


def _short(line: ScoreLine, card: Scorecard) -> str:
    """A table cell's words for one line of the card."""
    if line.topic == "tools in the template":
        return "renders tools" if line.level == "ok" else "leaves them out"
    if line.topic == "tool calls":
        return card.tool_calls
    if line.topic == "thinking":
        return "yes" if line.level == "ok" else "no"
    if line.topic == "context per slot":
        return line.found.split(" tokens")[0]
    return line.found.split(" (")[0].split(":")[0]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ccbridge-scorecard-") as tmp:
        for label, make in _servers(Path(tmp)):
            with make() as server:
                card, seconds = asyncio.run(_card(server, "local"))
            by_topic = {line.topic: line for line in card.lines}
            cells = [f"{by_topic[t].level}: {_short(by_topic[t], card)}" if t in by_topic else "-" for t in TOPICS]
            took = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"
            rows.append((label, *cells, card.verdict, took))
            print(f"{label}: {card.verdict} (probe {seconds:.2f} s)", flush=True)
            for line in card.lines:
                print(f"  {line.level:5} {line.text()}", flush=True)
    print()
    print("| model | tools in the template | tool calls | thinking | context per slot | sliding window | verdict | "
          "probe took |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")


if __name__ == "__main__":
    main()
