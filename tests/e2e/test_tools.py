"""Tool calls and thinking through ccbridge, from a real llama-server, on both routes.

The model is `tests/support/scripted_model.py`: its weights make it write a
fixed Qwen3-style text (`<think>...</think>` then two `<tool_call>` JSON calls;
after a tool result, reasoning and a text answer). Everything else is real:
llama-server parses that text with its own template analyser (`--jinja`) and
reasoning parser, LiteLLM (own venv) translates OpenAI <-> Anthropic on the
`litellm` route, llama-server's own `/v1/messages` does it on the `native`
route, and ccbridge sits in front of both. Each case is asked with the
official `anthropic` SDK and with raw HTTP (SSE read by a strict parser),
streaming and not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.asking import Reply
from tests.support.asking import ask as ask_serve
from tests.support.claude import CLAUDE_VERSIONS, run_claude
from tests.support.config import chain_config
from tests.support.llama import LlamaServer
from tests.support.scripted_model import (
    ANSWER_REASONING,
    ANSWER_TEXT,
    ANSWER_TURN_OUTPUT_TOKENS,
    TOOL_CALLS,
    TOOL_TURN,
    TOOL_TURN_OUTPUT_TOKENS,
    TOOL_TURN_REASONING,
    TOOLS,
    model_output,
    scripted_llama_server,
    write_scripted_model,
)
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.e2e

# Claude model name -> the backend (and so the route) ccbridge sends it to.
ROUTE_MODELS = {"litellm": "claude-via-litellm", "native": "claude-via-native"}
QUESTION = "What is this machine's host name, and what time is it?"
TOOL_RESULTS = {"Read": "     1\tbuildhost\n", "Bash": "Thu Nov 26 12:00:00 UTC 2026"}


@dataclass
class Bridge:
    """One scripted llama-server and one `ccbridge serve` with a backend per route."""

    serve: ServeProcess
    llama: LlamaServer


def write_two_route_config(path: Path, api_base: str) -> Path:
    """A config with the same llama-server behind both routes, chosen by model name."""
    return chain_config(path, {"via_litellm": {"api_base": api_base, "model": "auto"},
                               "via_native": {"api_base": api_base, "model": "auto", "route": "native"}},
                        aliases={ROUTE_MODELS["litellm"]: "via_litellm", ROUTE_MODELS["native"]: "via_native"})


@pytest.fixture(scope="module")
def bridge(tmp_path_factory) -> Iterator[Bridge]:
    tmp = tmp_path_factory.mktemp("tools")
    model = write_scripted_model(tmp / "scripted-qwen3.gguf")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
    with scripted_llama_server(model) as llama:
        config = write_two_route_config(tmp / "ccbridge.yaml", llama.api_base)
        with ServeProcess(config, env) as serve:
            yield Bridge(serve, llama)


# -- asking --------------------------------------------------------------------
def ask(bridge: Bridge, client: str, stream: bool, body: dict[str, Any]) -> Reply:
    """Send one Messages request through ccbridge with the SDK or raw httpx (tests/support/asking.py)."""
    return ask_serve(bridge.serve, client, stream, body)


def first_turn(route: str, **extra: Any) -> dict[str, Any]:
    """The first request; `thinking` as Claude Code 2.1.197-2.1.332 send it."""
    return {"model": ROUTE_MODELS[route], "max_tokens": 2048, "tools": TOOLS, "thinking": {"type": "adaptive"},
            "messages": [{"role": "user", "content": QUESTION}], **extra}


def follow_up(first: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """The next request, as Claude Code sends it: the assistant turn as it came, then the tool results."""
    results = [{"type": "tool_result", "tool_use_id": block["id"], "content": TOOL_RESULTS[block["name"]]}
               for block in reply["content"] if block["type"] == "tool_use"]
    return {**first, "messages": [*first["messages"], {"role": "assistant", "content": reply["content"]},
                                  {"role": "user", "content": results}]}


# -- what llama-server itself counted --------------------------------------------
def prompt_tokens(bridge: Bridge, route: str, reply: Reply, body: dict[str, Any]) -> int:
    """The prompt's size by llama-server: its timings (through the leg) on the LiteLLM route,
    its own token counter for the same Anthropic body on the native route."""
    if route == "litellm":
        record = reply.record
        assert record["backend_prompt_n"] is not None, record
        return record["backend_prompt_n"] + (record["backend_cache_n"] or 0)
    resp = httpx.post(f"{bridge.llama.base_url}/v1/messages/count_tokens", json=body, timeout=30, trust_env=False)
    assert resp.status_code == 200, resp.text
    return resp.json()["input_tokens"]


def prompt_in_usage(message: dict[str, Any]) -> int:
    usage = message["usage"]
    return usage["input_tokens"] + (usage.get("cache_read_input_tokens") or 0)


def check_record(reply: Reply, route: str, stream: bool) -> None:
    """ccbridge's record says what the client got."""
    record, usage = reply.record, reply.message["usage"]
    assert record["status"] == 200 and record["error"] is None, record
    assert record["routed_backend"] == f"via_{route}" and record["stream"] is stream
    assert record["stop_reason"] == reply.message["stop_reason"], record
    assert record["output_tokens"] == usage["output_tokens"], (record, usage)
    assert record["input_tokens"] == usage["input_tokens"], (record, usage)
    assert (record["cache_read_tokens"] or 0) == (usage.get("cache_read_input_tokens") or 0), (record, usage)


# -- the tests ---------------------------------------------------------------------
def test_the_model_writes_its_script_as_plain_text(bridge):
    """Without tools and with reasoning left unparsed, llama-server returns the model's raw text:
    this is exactly what its tool-call and reasoning parsers get to parse below."""
    resp = httpx.post(f"{bridge.llama.api_base}/chat/completions", timeout=30, trust_env=False, json={
        "messages": [{"role": "user", "content": QUESTION}], "reasoning_format": "none", "max_tokens": 64})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["message"]["content"] == model_output(TOOL_TURN)
    assert body["usage"]["completion_tokens"] == TOOL_TURN_OUTPUT_TOKENS


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client", ["sdk", "raw"])
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_tool_use_then_tool_result(bridge, route, client, stream):
    body = first_turn(route)
    reply = ask(bridge, client, stream, body)
    message = reply.message

    # The first turn: thinking, then both tool calls, as the model wrote them.
    assert [b["type"] for b in message["content"]] == ["thinking", "tool_use", "tool_use"], message
    assert message["content"][0]["thinking"].strip() == TOOL_TURN_REASONING
    calls = message["content"][1:]
    assert [(c["name"], c["input"]) for c in calls] == [(t.name, t.arguments) for t in TOOL_CALLS]
    assert all(c["id"] for c in calls) and calls[0]["id"] != calls[1]["id"]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == TOOL_TURN_OUTPUT_TOKENS
    first_prompt = prompt_tokens(bridge, route, reply, body)
    assert prompt_in_usage(message) == first_prompt > 500  # the tool definitions are in the prompt
    check_record(reply, route, stream)

    # The follow-up carries both tool results; the model answers in text only if a
    # `<tool_response>` reached its prompt (see scripted_model.py).
    body = follow_up(body, message)
    reply = ask(bridge, client, stream, body)
    message = reply.message
    assert [b["type"] for b in message["content"]] == ["thinking", "text"], message
    assert message["content"][0]["thinking"].strip() == ANSWER_REASONING
    assert message["content"][1]["text"] == ANSWER_TEXT
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == ANSWER_TURN_OUTPUT_TOKENS
    results = sum(len(text) for text in TOOL_RESULTS.values())  # one token per character here
    assert prompt_in_usage(message) == prompt_tokens(bridge, route, reply, body) > first_prompt + results
    check_record(reply, route, stream)


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_tool_choice_any_constrains_the_model_with_a_grammar(bridge, route):
    """`tool_choice: any` becomes OpenAI `required`: llama-server then samples under its tool-call
    grammar (not lazily); the scripted calls fit it, so they come through unchanged."""
    reply = ask(bridge, "raw", False, first_turn(route, tool_choice={"type": "any"}))
    assert [(c["name"], c["input"]) for c in reply.message["content"] if c["type"] == "tool_use"] == [
        (t.name, t.arguments) for t in TOOL_CALLS]
    assert reply.message["stop_reason"] == "tool_use"
    check_record(reply, route, False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_thinking_enabled_keeps_its_thinking_block(bridge, route, stream):
    """`thinking: {"type": "enabled"}` (a budget; what Claude Code sends when thinking is forced on)
    must not lose the reasoning. LiteLLM 1.102.4 sends such a request for an `openai/` model to the
    OpenAI Responses API (`/v1/responses`) unless the model is marked as not reasoning, and drops
    llama-server's reasoning on the way back."""
    reply = ask(bridge, "raw", stream, first_turn(route, thinking={"type": "enabled", "budget_tokens": 1024}))
    assert [b["type"] for b in reply.message["content"]] == ["thinking", "tool_use", "tool_use"], reply.message
    assert reply.message["content"][0]["thinking"].strip() == TOOL_TURN_REASONING
    if route == "litellm":  # it went to chat completions, where the leg reads llama-server's timings
        assert reply.record["backend_prompt_n"] is not None, reply.record


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_thinking_disabled_reaches_the_template(bridge, route):
    """`thinking: {"type": "disabled"}` turns the template's thinking off (Qwen3 then ends the prompt
    with an empty `<think></think>`), and the model goes straight to its tool calls."""
    reply = ask(bridge, "raw", False, first_turn(route, thinking={"type": "disabled"}))
    assert [b["type"] for b in reply.message["content"]] == ["tool_use", "tool_use"], reply.message
    assert reply.message["usage"]["output_tokens"] == TOOL_TURN_OUTPUT_TOKENS - 4  # no <think>...</think>\n\n


@pytest.mark.parametrize("version", CLAUDE_VERSIONS)
@pytest.mark.parametrize("route", ["litellm", "native"])
def test_claude_code_runs_the_tool_loop(bridge, route, version):
    """Claude Code itself: it gets the two calls, really runs Read and Bash, sends the results
    back, and prints the model's answer. Only Read and Bash are offered (`--tools`), which keeps
    its prompt near 19k tokens (one token per character with this vocabulary)."""
    serve = bridge.serve
    before = {r["id"] for r in serve.requests(50)}
    model = ROUTE_MODELS[route]
    result = run_claude(version, serve.url, QUESTION, timeout=240,
                        extra_env={"ANTHROPIC_MODEL": model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": model},
                        args=("--tools", "Read,Bash", "--allowedTools", "Read,Bash",
                              "--output-format", "stream-json", "--verbose"))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-2000:]}\n{serve.log()[-2000:]}"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    blocks = [(line["type"], block) for line in lines if line["type"] in ("assistant", "user")
              for block in line["message"]["content"] if isinstance(block, dict)]
    uses = [b for kind, b in blocks if kind == "assistant" and b["type"] == "tool_use"]
    assert [(u["name"], u["input"]) for u in uses] == [(t.name, t.arguments) for t in TOOL_CALLS], blocks
    results = {b["tool_use_id"]: b for kind, b in blocks if kind == "user" and b["type"] == "tool_result"}
    assert set(results) == {u["id"] for u in uses}, blocks
    bash = results[uses[1]["id"]]
    assert not bash.get("is_error") and "UTC" in str(bash["content"]), bash  # `date -u` really ran
    thoughts = [b["thinking"].strip() for kind, b in blocks if b["type"] == "thinking"]
    assert thoughts == [TOOL_TURN_REASONING, ANSWER_REASONING], blocks
    assert lines[-1]["type"] == "result" and lines[-1]["result"] == ANSWER_TEXT, lines[-1]

    records = [r for r in serve.requests(20) if r["id"] not in before and r["path"] == "/v1/messages"][::-1]
    assert [(r["status"], r["stop_reason"], r["output_tokens"]) for r in records] == [
        (200, "tool_use", TOOL_TURN_OUTPUT_TOKENS), (200, "end_turn", ANSWER_TURN_OUTPUT_TOKENS)], records
    assert all(r["routed_backend"] == f"via_{route}" and r["session_id"] for r in records)
    assert records[1]["cache_read_tokens"] > 10000  # the second turn reuses the first one's prompt
