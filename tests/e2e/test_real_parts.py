"""The real external parts, without ccbridge in between: the CPU llama-server
with the tiny model, and the pinned Claude Code releases.

Needs ``bash scripts/build_llama_server.sh`` and
``bash scripts/install_claude_code.sh`` (both cache outside the repo). The fixtures come from
``tests.support.fixtures`` (loaded by the root conftest).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import claude, llama

pytestmark = pytest.mark.e2e

CHAT = {
    "model": "tiny",
    "messages": [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "Hello world"},
    ],
    "max_tokens": 16,
}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


def _sse_data(lines: list[str]) -> list[str]:
    return [line[len("data:") :].strip() for line in lines if line.startswith("data:")]


def test_health_models_and_props(llama_server: llama.LlamaServer, http: httpx.Client) -> None:
    assert http.get(llama_server.base_url + "/health").json() == {"status": "ok"}
    models = http.get(llama_server.api_base + "/models").json()
    meta = models["data"][0]["meta"]
    assert meta["n_ctx_train"] == 131072
    props = http.get(llama_server.base_url + "/props").json()
    assert props["total_slots"] == 1
    assert "<|im_start|>" in props["chat_template"]


def test_chat_completion_non_stream(llama_server: llama.LlamaServer, http: httpx.Client) -> None:
    resp = http.post(llama_server.api_base + "/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] > 0
    timings = body["timings"]
    assert timings["prompt_n"] >= 0
    assert timings["predicted_n"] <= 16
    for key in ("prompt_ms", "predicted_ms", "predicted_per_second", "cache_n"):
        assert key in timings


def test_chat_completion_stream_ends_with_timings(llama_server: llama.LlamaServer, http: httpx.Client) -> None:
    with http.stream("POST", llama_server.api_base + "/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        data = _sse_data(list(resp.iter_lines()))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) >= 2
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "prompt_n" in chunks[-1]["timings"]


def test_slots_with_flag(llama_server: llama.LlamaServer, http: httpx.Client) -> None:
    slots = http.get(llama_server.base_url + "/slots").json()
    assert isinstance(slots, list) and len(slots) == 1
    assert slots[0]["id"] == 0
    assert slots[0]["n_ctx"] == 65536
    assert "is_processing" in slots[0]


def test_slots_default_on_metrics_default_off(start_llama_server, http: httpx.Client) -> None:
    # Measured with llama-cpp-python 0.3.36's llama.cpp (0.5.0-dev, 0c1e570):
    # /slots is on by default (`--slots` is a no-op, `--no-slots` turns it off);
    # /metrics is off unless `--metrics`. Refused endpoints answer 501 with
    # {"error": {"type": "not_supported_error", ...}}.
    server = start_llama_server(ctx=4096)
    slots = http.get(server.base_url + "/slots")
    assert slots.status_code == 200, slots.text
    assert slots.json()[0]["n_ctx"] == 4096
    metrics = http.get(server.base_url + "/metrics")
    assert metrics.status_code == 501, metrics.text
    assert metrics.json()["error"]["type"] == "not_supported_error"


def test_no_slots_refuses_slots(start_llama_server, http: httpx.Client) -> None:
    server = start_llama_server(ctx=4096, extra_args=("--no-slots",))
    slots = http.get(server.base_url + "/slots")
    assert slots.status_code == 501, slots.text
    assert slots.json()["error"]["type"] == "not_supported_error"


def test_metrics(llama_server: llama.LlamaServer, http: httpx.Client) -> None:
    http.post(llama_server.api_base + "/chat/completions", json=CHAT).raise_for_status()
    text = http.get(llama_server.base_url + "/metrics").text
    values = {
        line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and not line.startswith("#")
    }
    assert values["llamacpp:prompt_tokens_total"] > 0
    assert "llamacpp:tokens_predicted_total" in values


def test_parallel_slots_split_context(start_llama_server, http: httpx.Client) -> None:
    server = start_llama_server(ctx=8192, parallel=2, extra_args=("--slots",))
    slots = http.get(server.base_url + "/slots").json()
    assert [s["n_ctx"] for s in slots] == [4096, 4096]


def test_bad_model_fails_with_log_tail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file")
    server = llama.LlamaServer(bad, startup_timeout=20)
    with pytest.raises(llama.LlamaServerError, match="log tail"):
        server.start()
    assert not server.running
    assert server.log_text()


@pytest.mark.parametrize("version", claude.CLAUDE_VERSIONS)
def test_claude_code_version(version: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(claude.claude_binary(version)), "--version"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=claude.claude_env("http://127.0.0.1:9", home=tmp_path),
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == f"{version} (Claude Code)"
