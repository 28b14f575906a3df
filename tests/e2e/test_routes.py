"""`route: native` (no LiteLLM) and per-session slot pinning, on the real tiny llama-server."""

from __future__ import annotations

import httpx
import pytest

from tests.support.anthropic_sse import parse_sse
from tests.support.claude import CLAUDE_VERSIONS, run_claude
from tests.support.llama import LlamaServer, slot_busy
from tests.support.serve import ServeProcess, StreamReader, records_for, wait_for, write_chain_config
from tests.support.sessions import wait_served_turns

pytestmark = pytest.mark.e2e


def _env(tmp) -> dict[str, str]:
    return {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}


@pytest.fixture(scope="module")
def native(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("native")
    with LlamaServer(tiny_model, ctx=65536) as llama:
        config = write_chain_config(tmp / "ccbridge.yaml", llama.api_base, route="native")
        with ServeProcess(config, _env(tmp)) as serve:
            yield serve, llama


def test_native_route_starts_no_litellm(native):
    serve, _ = native
    litellm = serve.status()["services"][1]
    assert litellm["state"] == "unused" and "native" in litellm["detail"]


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
def test_claude_p_through_the_native_route(native, version):
    serve, _ = native
    before = {r["id"] for r in serve.requests(100)}
    result = run_claude(version, serve.url, "Hello world", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    new = wait_for(lambda: [r for r in serve.requests(100) if r["id"] not in before and r["status"] == 200
                            and r["path"] == "/v1/messages" and r["output_tokens"]], 5)
    assert new, serve.requests(5)
    # Claude Code printed the answer; the random model's few tokens can be whitespace only (seen once
    # in CI: stdout "\n"), and then an answer ccbridge sent must have had no other text
    texts = [_streamed_text(serve, r["id"]) for r in new]
    assert result.stdout.strip() or any(not t.strip() for t in texts), (result.stdout, texts)
    assert all(r["routed_backend"] == "local" and r["client_version"] == f"claude-cli/{version}" for r in new)
    # llama-server's own stream sometimes leaves out message_start (ccbridge inserts one, without
    # usage); where it did send usage, the real turn's prompt is there in full
    prompts = [(r["input_tokens"] or 0) + (r["cache_read_tokens"] or 0) for r in new if r["input_tokens"] is not None]
    assert not prompts or max(prompts) > 1000, new


def _streamed_text(serve: ServeProcess, request_id: str) -> str:
    """The text deltas of the answer ccbridge sent, from its kept response body."""
    bodies = httpx.get(f"{serve.url}/ccbridge/api/requests/{request_id}/bodies", trust_env=False).json()
    return "".join(data["delta"]["text"] for name, data in parse_sse(bodies["response"].splitlines())
                   if name == "content_block_delta" and data["delta"].get("type") == "text_delta")


def test_native_route_hang_up_frees_the_slot(tiny_model, tmp_path):
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--ignore-eos",)) as llama:
        config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base, route="native")
        with ServeProcess(config, _env(tmp_path)) as serve:
            reader = StreamReader(f"{serve.url}/v1/messages", {
                "model": "claude-opus-4-8", "max_tokens": 60000, "stream": True,
                "messages": [{"role": "user", "content": "go on"}]})
            reader.start()
            assert wait_for(lambda: reader.deltas >= 50, 30)
            assert slot_busy(llama)
            reader.hang_up.set()
            reader.join(10)
            assert wait_for(lambda: not slot_busy(llama), 10, interval=0.1)
            assert records_for(serve)[0]["client_hung_up"] is True


def test_native_route_counts_tokens_with_the_model_itself(native):
    """The count is llama-server's own for the same request, not an estimate: equal to asking it directly,
    and it follows the text (a longer one counts more)."""
    serve, llama = native
    counts = []
    for text in ("one two three four", "one two three four " * 40):
        body = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": text}]}
        resp = httpx.post(f"{serve.url}/v1/messages/count_tokens", trust_env=False, timeout=30, json=body)
        direct = httpx.post(f"{llama.base_url}/v1/messages/count_tokens", trust_env=False, timeout=30,
                            json={**body, "model": "tiny"})
        assert resp.status_code == 200 and direct.status_code == 200, (resp.text, direct.text)
        assert resp.json()["input_tokens"] == direct.json()["input_tokens"], (resp.json(), direct.json())
        counts.append(resp.json()["input_tokens"])
    assert counts[1] > counts[0] + 40, counts


def _conversation_turn(url: str, session: str, history: list[dict], system: str) -> dict:
    resp = httpx.post(f"{url}/v1/messages", timeout=120, trust_env=False,
                      headers={"x-claude-code-session-id": session},
                      json={"model": "claude-opus-4-8", "max_tokens": 4, "system": system, "messages": history})
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_interleaved_sessions_keep_their_prompt_cache(tiny_model, tmp_path, route):
    """Two Claude sessions, turns interleaved, two slots: turns 2+ come mostly from cache."""
    with LlamaServer(tiny_model, ctx=2 * 16384, parallel=2) as llama:
        config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base, route=route)
        with ServeProcess(config, _env(tmp_path)) as serve:
            sessions = {name: [] for name in ("session-a", "session-b")}
            systems = {name: f"You help {name}. " + " ".join(f"{name}-fact-{i}" for i in range(600))
                       for name in sessions}
            for turn in range(3):
                for name, history in sessions.items():
                    history.append({"role": "user", "content": f"question {turn} from {name}"})
                    _conversation_turn(serve.url, name, history, systems[name])
                    history.append({"role": "assistant", "content": "ok"})
            # llama-server's own log per request: its Anthropic stream leaves out message_start (the
            # only event with the input usage) about 1 time in 4, so usage alone cannot tell every turn
            turns = wait_served_turns(llama.log_text, 6)
            assert len(turns) == 6, llama.log_tail(30)
            shares = [t.share for t in turns[2:]]
            print(f"\n{route}: cache share on turns 2+: {[round(s, 3) for s in shares]}")
            assert min(shares) >= 0.9
            if route == "litellm":
                rec = records_for(serve)[0]
                assert rec["backend_cache_n"] and rec["backend_cache_n"] > 0.9 * (rec["backend_cache_n"]
                                                                                 + rec["backend_prompt_n"])
