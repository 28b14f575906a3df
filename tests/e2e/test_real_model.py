"""A real instruct model's tool calls through ccbridge: Qwen2.5-Coder 0.5B, as a user would serve it.

The model (tests/support/qwen.py) picks the right call but writes it as JSON text in a
```json fence, which llama-server's parser leaves as text (FACTS, measured). ccbridge's
repair (backend/proxy/toolrepair.py) must turn exactly that into a `tool_use` block on both
routes, streaming and not, and leave anything else as the model wrote it. Each case is
asked with the official `anthropic` SDK and with raw HTTP (SSE read by a strict parser).
Prompts are kept short: this model reads ~115 prompt tokens a second on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.asking import Reply
from tests.support.asking import ask as ask_serve
from tests.support.config import config_text
from tests.support.llama import LlamaServer, free_port
from tests.support.qwen import qwen_llama_server
from tests.support.scripted_model import TOOLS
from tests.support.serve import REPO, ServeProcess

pytestmark = pytest.mark.e2e

ROUTE_MODELS = {"litellm": "claude-via-litellm", "native": "claude-via-native"}
SECRET_PATH = "/tmp/work/secret.txt"
SYSTEM = "You are a coding assistant. Use the tools to act."
READ_TOOL = TOOLS[0]
assert READ_TOOL["name"] == "Read"


@dataclass
class Bridge:
    serve: ServeProcess
    llama: LlamaServer


def write_config(path: Path, api_base: str) -> Path:
    """Both routes to the one llama-server, and the same server with the repair switched off."""
    path.write_text(config_text(
        proxy={"host": "127.0.0.1", "port": free_port()}, litellm={"port": free_port()},
        backends={"via_litellm": {"api_base": api_base}, "via_native": {"api_base": api_base, "route": "native"},
                  "plain": {"api_base": api_base, "repair_tool_calls": False}},
        aliases={ROUTE_MODELS["litellm"]: "via_litellm", ROUTE_MODELS["native"]: "via_native",
                 "claude-no-repair": "plain"}))
    return path


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    tmp = tmp_path_factory.mktemp("real-model")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
    with qwen_llama_server() as llama:
        with ServeProcess(write_config(tmp / "ccbridge.yaml", llama.api_base), env) as serve:
            yield Bridge(serve, llama)


def ask(bridge: Bridge, client: str, stream: bool, body: dict[str, Any]) -> Reply:
    return ask_serve(bridge.serve, client, stream, body, timeout=300)


def read_request(model: str, tools: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "max_tokens": 200, "temperature": 0, "system": SYSTEM,
                            "messages": [{"role": "user", "content": f"Read the file {SECRET_PATH}"}], **extra}
    body["tools"] = [READ_TOOL] if tools is None else tools
    if not body["tools"]:
        del body["tools"]
    return body


def text_of(message: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in message["content"] if b["type"] == "text")


MODES = [("sdk", False), ("sdk", True), ("raw", False), ("raw", True)]
MODE_IDS = ["sdk-whole", "sdk-stream", "raw-whole", "raw-stream"]


@pytest.mark.parametrize("client,stream", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_the_read_call_comes_back_as_tool_use(bridge: Bridge, route: str, client: str, stream: bool) -> None:
    reply = ask(bridge, client, stream, read_request(ROUTE_MODELS[route]))
    message, record = reply.message, reply.record
    calls = [b for b in message["content"] if b["type"] == "tool_use"]
    assert message["stop_reason"] == "tool_use", message
    assert [c["name"] for c in calls] == ["Read"], message
    assert calls[0]["input"]["file_path"] == SECRET_PATH
    assert calls[0]["id"].startswith("toolu_")
    assert not text_of(message).strip(), message  # the text the call was written as is gone
    # the model wrote it as text (FACTS): ccbridge's record says it repaired it, and shows the text
    assert record["tool_repairs"] == 1 and record["stop_reason"] == "tool_use", record
    assert '"Read"' in record["repaired_text"] and SECRET_PATH in record["repaired_text"]


def test_without_the_repair_the_same_answer_is_text(bridge: Bridge) -> None:
    """The control for the test above: the switch off, the model's own answer is JSON text."""
    reply = ask(bridge, "raw", True, read_request("claude-no-repair"))
    assert reply.message["stop_reason"] == "end_turn"
    assert [b["type"] for b in reply.message["content"]] == ["text"]
    written = text_of(reply.message)
    assert '"name": "Read"' in written and SECRET_PATH in written, written
    assert reply.record["tool_repairs"] == 0


@pytest.mark.parametrize("client,stream", [("sdk", False), ("raw", True)], ids=["sdk-whole", "raw-stream"])
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_the_tool_result_turn_is_answered(bridge: Bridge, route: str, client: str, stream: bool) -> None:
    """Claude Code's next request after it ran the tool: the repaired call as the assistant turn,
    then the tool's result. It reaches the model whole (the prompt grew by the call and the result)
    and is answered with a well-formed message. This 0.5B model then usually calls Read again
    (seen at temperature 0 with several prompts) rather than answer in words: a limit of the
    model; a repeated call is repaired like the first."""
    first = read_request(ROUTE_MODELS[route])
    call = ask(bridge, client, stream, first)
    tool_use = next(b for b in call.message["content"] if b["type"] == "tool_use")
    follow = {**first, "messages": [
        *first["messages"], {"role": "assistant", "content": call.message["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"],
                                      "content": "     1\tpelican\n"}]}]}
    reply = ask(bridge, client, stream, follow)
    assert reply.record["status"] == 200 and reply.record["error"] is None, reply.record
    assert reply.message["content"], reply.message
    assert reply.message["stop_reason"] in ("end_turn", "tool_use"), reply.message
    before, after = prompt_size(call.message), prompt_size(reply.message)
    assert after >= before + 20, (before, after)  # the call and the result were rendered into the prompt
    kinds = {b["type"] for b in reply.message["content"]}
    if reply.message["stop_reason"] == "tool_use":
        assert kinds == {"tool_use"} and reply.record["tool_repairs"] >= 1, reply.message
    else:
        assert kinds == {"text"} and text_of(reply.message).strip()


def prompt_size(message: dict[str, Any]) -> int:
    usage = message["usage"]
    return int(usage["input_tokens"]) + int(usage.get("cache_read_input_tokens") or 0)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_json_text_with_no_tools_offered_stays_text(bridge: Bridge, route: str, stream: bool) -> None:
    body = read_request(ROUTE_MODELS[route], tools=[], system="Answer with JSON only.", messages=[
        {"role": "user", "content": 'Write the JSON object {"name": "Read", "arguments": {"file_path": '
                                    f'"{SECRET_PATH}"}}}} and nothing else.'}])
    reply = ask(bridge, "raw", stream, body)
    assert [b["type"] for b in reply.message["content"]] == ["text"], reply.message
    assert '"Read"' in text_of(reply.message)
    assert reply.message["stop_reason"] == "end_turn" and reply.record["tool_repairs"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_a_call_to_a_tool_not_offered_stays_text(bridge: Bridge, route: str, stream: bool) -> None:
    """Only `Read` is offered; the model is asked to write a call to `Delete`: a near miss that
    must reach the client as the text the model wrote."""
    body = read_request(ROUTE_MODELS[route], messages=[
        {"role": "user", "content": f'Reply with exactly {{"name": "Delete", "arguments": {{"file_path": '
                                    f'"{SECRET_PATH}"}}}} and nothing else.'}])
    reply = ask(bridge, "raw", stream, body)
    assert all(b["type"] == "text" for b in reply.message["content"]), reply.message
    written = text_of(reply.message)
    assert "Delete" in written, written
    parsed = json.loads(written.strip().removeprefix("```json").strip("`\n "))
    assert parsed["name"] == "Delete"
    assert reply.message["stop_reason"] == "end_turn" and reply.record["tool_repairs"] == 0


def test_the_scorecard_says_calls_come_through_repair(bridge: Bridge) -> None:
    """The status API's probe (what the panel's llama-server screen shows) and `ccbridge doctor`,
    on the real model: tools rendered, calls written as text and repaired, no thinking, the
    context too small for Claude Code's prompt plus work (16k here)."""
    serve = bridge.serve
    for _ in range(20):  # a backend still busy with the last turn is probed on the next ask (as `m` in the panel)
        resp = httpx.post(f"{serve.url}/ccbridge/api/scorecards", json={}, timeout=600, trust_env=False)
        assert resp.status_code == 200, resp.text
        if all("lines" in c for c in resp.json()["scorecards"]):
            break
        time.sleep(0.5)
    cards = {c["backend"]: c for c in resp.json()["scorecards"]}
    assert set(cards) == {"via_litellm", "via_native", "plain"}, cards
    card = cards["via_native"]
    lines = {line["topic"]: line for line in card["lines"]}
    assert card["tool_calls"] == "repair", card
    assert lines["tools in the template"]["level"] == "ok"
    assert lines["thinking"]["level"] == "info"
    assert lines["context per slot"]["level"] == "warn" and "16,384" in lines["context per slot"]["found"]
    assert card["verdict"] == "warn"
    # kept out of the history: no request record for the probes
    assert not [r for r in serve.requests(50) if r["path"] == "/v1/chat/completions"]
    # the status carries the cards; a second probe of the same setup asks the model nothing
    assert {c["backend"] for c in serve.status()["scorecards"]} == set(cards)
    again = httpx.post(f"{serve.url}/ccbridge/api/scorecards", json={}, timeout=60, trust_env=False).json()
    assert [c["checked_at"] for c in again["scorecards"]] == [c["checked_at"] for c in resp.json()["scorecards"]]

    doctor = subprocess.run([sys.executable, "-m", "backend", "doctor", "--config", str(serve.config)],
                            capture_output=True, text=True, timeout=600, env=serve.env, cwd=REPO)
    out = doctor.stdout
    assert "ok    backend 'via_native' model: tool calls: the model writes its calls as JSON text; ccbridge " \
           "repairs them" in out, out
    assert "ok    backend 'via_native' model: tools in the template: the chat template renders" in out, out
    assert "warn  backend 'via_native' model: context per slot: 16,384 tokens" in out, out


def repaired_total(serve: ServeProcess, route: str) -> float:
    text = httpx.get(f"{serve.url}/metrics", timeout=10, trust_env=False).text
    name = f'ccbridge_tool_calls_repaired_total{{model="{ROUTE_MODELS[route]}",route="{route}"}} '
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_metrics_count_each_repaired_call(bridge: Bridge, route: str) -> None:
    before = repaired_total(bridge.serve, route)
    reply = ask(bridge, "raw", True, read_request(ROUTE_MODELS[route]))
    assert reply.record["tool_repairs"] == 1
    assert repaired_total(bridge.serve, route) == before + 1


ENVIRONMENT = ("# Environment\nYou have been invoked in the following environment:\n"
               " - Primary working directory: /tmp/work\n - Platform: linux\n - Shell: bash\n"
               "Today's date is 2026-12-06.")


def moved(serve: ServeProcess) -> int:
    """How many requests serve's front gave the shared-part-first layout (the proxy service's count)."""
    return int(next(s for s in serve.status()["services"] if s["name"] == "proxy")["shared_first_moved"])


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_the_shared_part_first_layout_gives_the_same_call(bridge: Bridge, tmp_path_factory: pytest.TempPathFactory,
                                                         route: str) -> None:
    """cache.shared_first moves Claude Code's "# Environment" system message ahead of the first prompt
    (backend/proxy/prompt.py). The model's answer must not get worse: the same request, as Claude Code
    2.1.332 lays it out, gives the same repaired call with the layout on (this bridge) and off."""
    body = read_request(ROUTE_MODELS[route])
    body["messages"] = [*body["messages"], {"role": "system", "content": ENVIRONMENT}]
    on = ask(bridge, "raw", True, body)
    tmp = tmp_path_factory.mktemp("layout-off")
    config = write_config(tmp / "ccbridge.yaml", bridge.llama.api_base)  # its own ports
    config.write_text(config.read_text() + "cache:\n  shared_first: false\n")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
    with ServeProcess(config, env) as serve:
        off = ask(Bridge(serve, bridge.llama), "raw", True, body)
        assert moved(serve) == 0
    assert moved(bridge.serve) >= 1
    calls = [[(b["name"], b["input"]["file_path"]) for b in r.message["content"] if b["type"] == "tool_use"]
             for r in (on, off)]
    assert calls[0] == calls[1] == [("Read", SECRET_PATH)], (on.message, off.message)
    assert on.record["tool_repairs"] == off.record["tool_repairs"] == 1
