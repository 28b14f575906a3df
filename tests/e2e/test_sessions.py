"""Claude Code sessions and subagents through ccbridge keep llama-server's prompt cache warm.

The real chain, once: Claude Code 2.1.330 -> ccbridge -> LiteLLM -> backend leg -> a recording
pass-through -> llama-server (`-np 2`, its default host-RAM prompt cache). The LiteLLM route is
the one where ccbridge's slot pinning takes effect (llama-server's /v1/messages drops `id_slot`).
Not `-np auto` (llama-server's default: 4 slots, one unified KV cache, idle slots cleared): there
the pinning loses the cache today (bench/cache.py has the figures). The model is the
scripted one (`subagent_script`): in one folder, two `claude -p` sessions each start a
general-purpose subagent, then `claude -p -c` continues the second (`tests/support/sessions.py`).
Seven requests: A main 1 (calls the subagent tool), A subagent 1 (answers), A main 2 (answers),
the same for B, then B main 3. The figures behind these checks are `bench/cache.py`'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.claude import CLAUDE_VERSIONS
from tests.support.recorder import RecordingForwarder
from tests.support.scripted_model import (
    SECOND_TASK,
    SECOND_TASK_MARKER,
    SUBAGENT_ANSWER_TEXT,
    SUBAGENT_MARKER,
    SUBAGENT_TASK,
    scripted_llama_server,
    subagent_script,
    write_scripted_model,
)
from tests.support.serve import ServeProcess, write_chain_config
from tests.support.sessions import (
    ROLES,
    SUBAGENT_ROLES,
    SessionsRun,
    flow_records,
    run_sessions,
    subagent_tool,
)

pytestmark = pytest.mark.e2e

VERSION = CLAUDE_VERSIONS[-1]
BILLING = "x-anthropic-billing-header"


@dataclass
class Flow:
    """What the flow left behind: Claude Code's results, ccbridge's records and status, what
    llama-server was sent, and its log."""

    run: SessionsRun
    tool: str
    records: list[dict[str, Any]]  # oldest first
    status: dict[str, Any]
    sent: list[dict[str, Any]]  # bodies of the chat completions llama-server got
    log: str
    llama_url: str


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> Iterator[Flow]:
    tmp = tmp_path_factory.mktemp("sessions")
    tool = subagent_tool(VERSION)
    model = write_scripted_model(tmp / "scripted-subagent.gguf", subagent_script(tool))
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
    with scripted_llama_server(model, ctx=131072, parallel=2) as llama, \
            RecordingForwarder(llama.base_url) as recorder:
        config = write_chain_config(tmp / "ccbridge.yaml", recorder.url + "/v1",
                                    pin_slots=True)  # what this test is about
        with ServeProcess(config, env) as serve:
            run = run_sessions(VERSION, serve.url, tmp / "home", llama.log_text)
            records = flow_records(serve, run)
            status = serve.status()
        yield Flow(run, tool, records, status, recorder.bodies("/chat/completions"), llama.log_text(),
                   llama.base_url)


def test_every_session_ran_its_subagent_and_answered(flow):
    assert [o["result"] for o in flow.run.outputs] == [SUBAGENT_ANSWER_TEXT] * 3
    assert len(flow.records) == len(ROLES), flow.records
    assert all(r["status"] == 200 and r["error"] is None for r in flow.records), flow.records
    first, second, continued = flow.run.session_ids
    assert first != second == continued  # `-c` goes on with the second session
    by_session = [r["session_id"] for r in flow.records]
    assert by_session == [first] * 3 + [second] * 4, by_session


def test_the_billing_line_never_reaches_llama_server(flow):
    """ccbridge removed one billing line per request, and none of what llama-server got holds one,
    while the system prompts that followed it are all there."""
    assert flow.status["services"][0]["billing_lines_removed"] == len(ROLES)
    assert len(flow.sent) == len(ROLES)
    for body in flow.sent:
        text = json.dumps(body)
        assert BILLING not in text
        assert body["messages"][0]["role"] == "system" and len(json.dumps(body["messages"][0])) > 1000
    assert [SUBAGENT_MARKER in json.dumps(body["messages"][0]) for body in flow.sent] == [
        role in SUBAGENT_ROLES for role in ROLES]


def test_subagent_requests_are_marked(flow):
    assert [r["subagent"] for r in flow.records] == [role in SUBAGENT_ROLES for role in ROLES]
    # each session's subagent got the task its main agent wrote
    tasks = {role: body["messages"] for role, body in zip(ROLES, flow.sent, strict=True) if role in SUBAGENT_ROLES}
    assert SUBAGENT_TASK in json.dumps(tasks["A subagent 1"]) and SECOND_TASK in json.dumps(tasks["B subagent 1"])


def test_main_agent_and_subagent_are_pinned_to_slots_of_their_own(flow):
    """Two slots: a session's main agent keeps one, its subagent gets the other, and llama-server
    used the slot it was asked for."""
    slots = {role: body.get("id_slot") for role, body in zip(ROLES, flow.sent, strict=True)}
    assert None not in slots.values(), slots
    assert slots["A main 1"] == slots["A main 2"] != slots["A subagent 1"], slots
    assert slots["B main 1"] == slots["B main 2"] == slots["B main 3 (-c)"] != slots["B subagent 1"], slots
    assert {role: turn.slot for role, turn in flow.run.served.items()} == slots
    assert flow.log.count("selected slot by id") == len(ROLES)


def test_later_turns_come_from_the_cache(flow):
    for role, record in zip(ROLES, flow.records, strict=True):
        if role in ("A main 2", "B main 2", "B main 3 (-c)"):
            assert record["cache_share"] >= 0.95, (role, record)


def test_a_new_session_and_a_new_subagent_reuse_what_they_share(flow):
    """Without the billing line the second session's first turn (and its subagent's) start like
    the first session's: ~80 % of their prompts came from the cache (0.1 % with it, bench/cache.py).
    The slot the pinner gave them held the other agent's prompt; llama-server's host-RAM prompt
    cache (`--cache-ram`, on by default) restored the matching one."""
    records = dict(zip(ROLES, flow.records, strict=True))
    assert records["A main 1"]["cache_share"] == records["A subagent 1"]["cache_share"] == 0.0
    assert records["B main 1"]["cache_share"] >= 0.4, records["B main 1"]
    assert records["B subagent 1"]["cache_share"] >= 0.4, records["B subagent 1"]
    # ccbridge's records agree with llama-server's log
    for role, record in records.items():
        turn = flow.run.served[role]
        assert (record["backend_cache_n"], record["backend_prompt_n"]) == (
            turn.cached_tokens, turn.prompt_tokens - turn.cached_tokens), role


def test_the_scripted_model_picks_its_turn_from_the_prompt(flow):
    """The model behind the flow, asked directly: a subagent call (with the second task when the
    prompt asks for it), and an answer where Claude Code's subagent prompt or a tool result is."""

    def raw(messages: list[dict[str, Any]]) -> str:
        resp = httpx.post(f"{flow.llama_url}/v1/chat/completions", timeout=60, trust_env=False, json={
            "messages": messages, "reasoning_format": "none", "max_tokens": 128})
        assert resp.status_code == 200, resp.text
        return resp.json()["choices"][0]["message"]["content"]

    first = raw([{"role": "user", "content": "Use a subagent."}])
    assert f'"name": "{flow.tool}"' in first and json.dumps(SUBAGENT_TASK) in first
    assert json.dumps(SECOND_TASK) in raw([{"role": "user", "content": f"Again {SECOND_TASK_MARKER}."}])
    assert raw([{"role": "system", "content": f"{SUBAGENT_MARKER}."}, {"role": "user", "content": SUBAGENT_TASK}]
               ).endswith(SUBAGENT_ANSWER_TEXT)
