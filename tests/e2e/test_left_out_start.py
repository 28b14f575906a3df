"""A stream llama-server sends without `message_start` still tells Claude Code, and the record, how much
of the prompt came from the cache (native route, a real llama-server).

llama-server leaves `message_start` out when its first token is part of a UTF-8 character (an emoji a
real model writes in two or three tokens): it holds such a token back, and only the partial result of
the first token carries `message_start`. The scripted model here begins its answer with a check mark in
three byte tokens. ccbridge then asks count_tokens for the prompt's size and, while the answer still
streams, `/slots` for the part the busy slot took from its cache; the stand-in `message_start`, the
assembled answer and the record carry both. The truth is llama-server's own log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from backend.bridge import Bridge
from backend.config import load_config
from tests.support.config import chain_config
from tests.support.scripted_model import Script, scripted_llama_server, write_scripted_model
from tests.support.sessions import served_turns

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CHECK_MARK = ("<0xE2>", "<0x9C>", "<0x93>")  # ✓: its first byte is not a character yet
SCRIPT = Script(tool_turn=(*CHECK_MARK, *(f" step {n}." for n in range(40))), answer_turn=("Done.",))
RULES = " ".join(f"rule {n}: answer in one line." for n in range(40))


def body(system: str, stream: bool) -> dict:
    # --ignore-eos and 2,000 tokens: the slot is still busy (about 0.7 s) when ccbridge asks /slots
    return {"model": "claude-opus-5-5", "max_tokens": 2000, "stream": stream, "system": system,
            "messages": [{"role": "user", "content": "hi"}]}


def events(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def test_the_stand_in_message_start_says_how_much_came_from_the_cache(tmp_path: Path):
    model = write_scripted_model(tmp_path / "check-mark.gguf", SCRIPT)
    server = scripted_llama_server(model, ctx=16384, parallel=1, extra_args=("--ignore-eos",))
    config = tmp_path / "ccbridge.yaml"

    async def main(root: str) -> dict:
        out: dict = {"totals": []}
        async with httpx.AsyncClient(base_url=root, timeout=60, trust_env=False) as direct:
            # the premise: llama-server's own stream of this request has no message_start
            out["direct"] = events((await direct.post("/v1/messages", json=body(RULES, True))).text)
            for system in (RULES, "Be brief."):
                counted = await direct.post("/v1/messages/count_tokens", json=body(system, False))
                out["totals"].append(counted.json()["input_tokens"])
        chain_config(config, {"local": {"api_base": f"{root}/v1", "route": "native"}}, litellm=False,
                     cache={"warm": False})
        bridge = Bridge(load_config(config), run_dir=tmp_path / "run")
        await bridge.start()
        try:
            async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=60, trust_env=False) as client:
                out["streamed"] = events((await client.post("/v1/messages", json=body(RULES, True))).text)
                out["whole"] = (await client.post("/v1/messages", json=body(RULES, False))).json()
                out["other"] = events((await client.post("/v1/messages", json=body("Be brief.", True))).text)
            await asyncio.sleep(0.3)  # a record is written once its answer is out
            out["records"] = sorted(await bridge.recent(10), key=lambda r: r.started_at)
        finally:
            await bridge.stop()
        return out

    with server:
        out = asyncio.run(main(server.base_url))
        log = server.log_text()
    assert out["direct"][0]["type"] == "content_block_start", out["direct"][:2]
    turns = served_turns(log)[1:]  # after the direct request: streamed, whole, other
    assert len(turns) == 3 and turns[0].cached_tokens > 0.9 * turns[0].prompt_tokens, turns
    rules, brief = out["totals"]
    assert [t.prompt_tokens for t in turns] == [rules, rules, brief], (turns, out["totals"])

    answers = [out["streamed"][0]["message"], out["whole"], out["other"][0]["message"]]
    for answer, turn in zip(answers, turns, strict=True):
        assert answer["id"].startswith("msg_ccbridge_"), answer  # ccbridge's stand-in, not llama-server's
        assert answer["usage"]["cache_read_input_tokens"] == turn.cached_tokens, (answer["usage"], turn)
        assert answer["usage"]["input_tokens"] == turn.prompt_tokens - turn.cached_tokens, (answer["usage"], turn)
    assert out["whole"]["content"][0]["text"].startswith("✓ step 0. step 1."), out["whole"]["content"]

    records = out["records"]
    assert len(records) == 3, records
    for record, turn in zip(records, turns, strict=True):
        assert record.cache_read_tokens == turn.cached_tokens, (record, turn)
        assert record.input_tokens == turn.prompt_tokens - turn.cached_tokens, (record, turn)
        assert record.cache_share == pytest.approx(turn.share), (record, turn)
