"""The real chain: Claude Code -> `ccbridge serve` -> LiteLLM (own venv) -> leg -> llama-server."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.claude import CLAUDE_VERSIONS, run_claude
from tests.support.serve import ServeProcess, records_for, wait_for, write_chain_config

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
def test_claude_p_hello_world_through_the_chain(chain, version, tmp_path):
    serve, llama = chain
    before = {r["id"] for r in serve.requests(100)}
    result = run_claude(version, serve.url, "Hello world", timeout=240)
    assert result.returncode == 0, f"stdout={result.stdout!r}\nstderr={result.stderr[-3000:]}\n{serve.log()[-3000:]}"
    assert result.stdout.strip(), "claude -p printed nothing"
    new = wait_for(lambda: [r for r in serve.requests(100) if r["id"] not in before
                            and r["path"] == "/v1/messages" and r["status"] == 200
                            and (r["input_tokens"] or 0) > 1000], 5)
    assert new, serve.requests(10)
    rec = new[0]
    assert rec["requested_model"].startswith("claude-")
    assert rec["routed_backend"] == "local" and rec["routed_model"]
    assert rec["client_version"] == f"claude-cli/{version}"
    assert rec["session_id"]
    assert rec["output_tokens"] > 0
    assert rec["backend_calls"] == 1
    assert rec["backend_prompt_n"] is not None and rec["backend_gen_tps"] is not None


def test_system_entry_inside_messages_reaches_the_model(chain):
    """Same prompt token count through ccbridge as straight to llama-server."""
    serve, llama = chain
    system = "You are a careful assistant. " * 40
    user = "Summarise the plan in one line."
    direct = httpx.post(f"{llama.api_base}/chat/completions", timeout=60, trust_env=False, json={
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": 1, "cache_prompt": False})
    direct_prompt = direct.json()["usage"]["prompt_tokens"]
    through = httpx.post(f"{serve.url}/v1/messages", timeout=60, trust_env=False,
                         headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}, json={
        "model": "claude-opus-4-8", "max_tokens": 1,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]})
    assert through.status_code == 200, through.text
    usage = through.json()["usage"]
    total = usage["input_tokens"] + (usage.get("cache_read_input_tokens") or 0)
    assert direct_prompt > 200
    assert total == direct_prompt


def test_context_too_small_says_how_to_fix_it(tiny_model, tmp_path):
    from tests.support.llama import LlamaServer

    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    with LlamaServer(tiny_model, ctx=1024) as llama:
        with ServeProcess(write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base), env) as serve:
            resp = httpx.post(f"{serve.url}/v1/messages", timeout=60, trust_env=False, json={
                "model": "claude-opus-4-8", "max_tokens": 16,
                "messages": [{"role": "user", "content": "word " * 3000}]})
            assert resp.status_code == 400, resp.text
            message = resp.json()["error"]["message"]
            assert message.startswith("prompt is too long:")
            assert "> 1024 maximum" in message and "-c " in message and "-np" in message
            rec = records_for(serve)[0]
            assert rec["status"] == 400 and "prompt is too long" in rec["error"]


def test_backend_down_answers_at_once_with_what_to_do(tmp_path):
    from tests.support.llama import free_port

    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with ServeProcess(write_chain_config(tmp_path / "ccbridge.yaml", dead), env) as serve:
        resp = httpx.post(f"{serve.url}/v1/messages", timeout=60, trust_env=False, json={
            "model": "claude-opus-4-8", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 502, resp.text
        message = resp.json()["error"]["message"]
        assert "llama-server" in message and "backends.local.api_base" in message and dead in message


def test_serve_stops_its_children_on_sigterm_and_on_kill(tmp_path, llama_server):
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    serve = ServeProcess(write_chain_config(tmp_path / "a.yaml", llama_server.api_base), env).start()
    pid = serve.litellm_pid()
    assert pid and psutil.pid_exists(pid)
    assert serve.stop(signal.SIGTERM) == 0
    assert wait_for(lambda: not psutil.pid_exists(pid), 10)
    assert "stopping" in serve.log()

    serve = ServeProcess(write_chain_config(tmp_path / "b.yaml", llama_server.api_base), env).start()
    pid = serve.litellm_pid()
    os.kill(serve.proc.pid, signal.SIGKILL)
    serve.proc.wait()
    # parent-death signal: LiteLLM goes down with ccbridge even after kill -9
    gone = wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 15)
    assert gone


def test_litellm_config_has_no_retries_and_a_private_key(chain):
    serve, _ = chain
    run = Path(serve.env["CCBRIDGE_DATA_DIR"]) / "run"
    cfg = run / "litellm.yaml"
    assert oct(cfg.stat().st_mode & 0o777) == "0o600"
    assert oct((run / "litellm-master-key").stat().st_mode & 0o777) == "0o600"
    text = cfg.read_text()
    assert "forward_client_headers_to_llm_api: true" in text
    assert "use_chat_completions_url_for_anthropic_messages: true" in text
    key = (run / "litellm-master-key").read_text().strip()
    assert key not in serve.log()
    assert key not in json.dumps(serve.status())


def _event_shape(sse: str) -> list[str]:
    """The event names of a stream with repeats collapsed: its shape, whatever the text."""
    names = [line[7:] for line in sse.splitlines() if line.startswith("event: ")]
    return [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]


def test_a_real_claude_request_is_kept_and_copy_as_curl_replays_it(chain, tmp_path):
    """The detail view's body is the one Claude Code sent; its curl command sends it again and gets an
    answer of the same shape (the tiny model's text differs)."""
    import subprocess

    from tui.format import curl_command

    serve, _ = chain
    before = {r["id"] for r in serve.requests(100)}
    result = run_claude("2.1.330", serve.url, "Hello world", timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    rec = next(r for r in serve.requests(100) if r["id"] not in before and (r["input_tokens"] or 0) > 1000)
    bodies = httpx.get(f"{serve.url}/ccbridge/api/requests/{rec['id']}/bodies", trust_env=False).json()
    sent = json.loads(bodies["request"])
    assert sent["model"] == rec["requested_model"]
    assert len(bodies["request"].encode()) == bodies["request_bytes"] > 20_000
    assert sent["system"][0]["text"].startswith("x-anthropic-billing-header")  # as sent, before ccbridge's edits
    from backend.events import RequestRecord

    record = RequestRecord(**{k: v for k, v in rec.items() if k in RequestRecord.__dataclass_fields__})
    command = curl_command(record, serve.url, bodies["request"].encode())
    replay = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ANTHROPIC_AUTH_TOKEN": "anything"})
    assert replay.returncode == 0, replay.stderr
    # the same blocks in the same order; a text block's deltas may be missing from either: the random-weight
    # model samples at temperature 1 and may end at once (one output token, no text). Once in CI the replay's
    # text block had no delta events while its usage counted 80 output tokens; 30 replays of the same kind
    # of body through ccbridge and LiteLLM (2026-12-06) all carried deltas whenever more than one token came
    blocks = [n for n in _event_shape(replay.stdout) if n != "content_block_delta"]
    assert blocks == [n for n in _event_shape(bodies["response"]) if n != "content_block_delta"], (
        replay.stdout[-500:], bodies["response"][-500:])
    assert _event_shape(replay.stdout)[0] == "message_start" and _event_shape(replay.stdout)[-1] == "message_stop"
