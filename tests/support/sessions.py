"""Two real Claude Code sessions, each starting a subagent, and a continuation: the flow behind
the prompt-cache benchmark (`bench/cache.py`) and its e2e test (`tests/e2e/test_sessions.py`).

The model is the scripted one (`scripted_model.subagent_script`): its first turn calls Claude
Code's subagent tool with `subagent_type: "general-purpose"`, the subagent (whose prompt has
`SUBAGENT_MARKER`) answers in text, and the main agent answers once the subagent's result is
in its prompt. So one `claude -p` makes three model requests, in this order: main turn 1 (the
tool call), subagent turn 1 (text), main turn 2 (text). `run_sessions` runs two such sessions
in one folder (their first prompts differ, so do their billing lines; the second session's
prompt asks for another task, so its subagent's billing line differs too) and then
`claude -p -c` (one more turn of the second session).

What llama-server itself did for each request is read from its log (`served_turns`): the slot,
the prompt's size and how much of it came from its cache. That works on every route, ccbridge
or not, so "before" (billing line kept) and "after" are measured alike.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.capture import capture_claude_turn
from tests.support.claude import run_claude
from tests.support.scripted_model import SECOND_TASK_MARKER, SUBAGENT_ANSWER_TEXT, SUBAGENT_MARKER
from tests.support.serve import ServeProcess

# chars 4, 7 and 20 of a first prompt go into the billing line's suffix: these differ at 20
FIRST_PROMPT = "Use a subagent to reply."
SECOND_PROMPT = f"Ask a subagent for another reply {SECOND_TASK_MARKER}."
CONTINUATION_PROMPT = "Thanks. Now say it once more."
# The requests the flow makes, in order (see the module docstring).
ROLES = ("A main 1", "A subagent 1", "A main 2", "B main 1", "B subagent 1", "B main 2", "B main 3 (-c)")
SUBAGENT_ROLES = frozenset({"A subagent 1", "B subagent 1"})

_SUBAGENT_TOOLS: dict[str, str] = {}


def subagent_tool(version: str) -> str:
    """The name of the tool Claude Code `version` starts subagents with (the one whose input schema
    has `subagent_type`), from a captured request; checks that no main prompt holds the markers."""
    if version not in _SUBAGENT_TOOLS:
        body = capture_claude_turn(version, FIRST_PROMPT)
        names = [tool["name"] for tool in body.get("tools", [])
                 if "subagent_type" in ((tool.get("input_schema") or {}).get("properties") or {})]
        if len(names) != 1:
            raise RuntimeError(f"Claude Code {version}: expected one tool with `subagent_type`, found {names}")
        text = json.dumps(body, ensure_ascii=False)
        for marker in (SUBAGENT_MARKER, SECOND_TASK_MARKER):
            if marker in text:
                raise RuntimeError(f"Claude Code {version}'s main prompt holds {marker!r}: the scripted model "
                                   "would answer its first turn instead of starting a subagent")
        _SUBAGENT_TOOLS[version] = names[0]
    return _SUBAGENT_TOOLS[version]


@dataclass(frozen=True)
class ServedTurn:
    """One request as llama-server's log tells it: the slot, prompt tokens in all and from cache."""

    slot: int
    task: int
    prompt_tokens: int
    cached_tokens: int

    @property
    def share(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


_LAUNCH = re.compile(r"launch_slot_: id +(\d+) \| task (\d+) \|")
_PROMPT = re.compile(r"print_timing: id +\d+ \| task (\d+) \| prompt eval time = .*/ +(\d+) tokens")
_EVAL = re.compile(r"print_timing: id +\d+ \| task (\d+) \| +eval time = .*/ +(\d+) tokens")
_RELEASE = re.compile(r"release: id +\d+ \| task (\d+) \| stop processing: n_tokens = (\d+)")


def served_turns(log: str) -> list[ServedTurn]:
    """The finished requests in llama-server's log, in the order they started.

    A slot holds the prompt plus all but the last generated token when it stops
    (`n_tokens` at release); `prompt eval` counts the prompt tokens it computed;
    the rest of the prompt came from its cache (a slot's own or `--cache-ram`'s)."""
    slots: dict[int, int] = {}
    computed: dict[int, int] = {}
    generated: dict[int, int] = {}
    held: dict[int, int] = {}
    for line in log.splitlines():
        if m := _LAUNCH.search(line):
            slots[int(m[2])] = int(m[1])
        elif m := _PROMPT.search(line):
            computed[int(m[1])] = int(m[2])
        elif m := _EVAL.search(line):
            generated[int(m[1])] = int(m[2])
        elif m := _RELEASE.search(line):
            held[int(m[1])] = int(m[2])
    turns = []
    for task, slot in slots.items():
        if task in held and task in computed and task in generated:
            prompt = held[task] - max(0, generated[task] - 1)
            turns.append(ServedTurn(slot, task, prompt, prompt - computed[task]))
    return turns


@dataclass
class SessionsRun:
    """The outcome of `run_sessions`: Claude Code's outputs and llama-server's turns, by role."""

    outputs: list[dict[str, Any]]  # the `result` line of each claude run
    served: dict[str, ServedTurn]
    session_ids: list[str]


class FlowFailed(AssertionError):
    """Claude Code or the chain did not do what the flow expects; the message says what happened."""


def _claude(version: str, base_url: str, prompt: str, home: Path, tool: str, model: str, api_key: str,
            extra: tuple[str, ...] = ()) -> dict[str, Any]:
    result = run_claude(version, base_url, prompt, home=home, timeout=300, api_key=api_key,
                        extra_env={"ANTHROPIC_MODEL": model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
                                   "CLAUDE_CODE_SUBAGENT_MODEL": model},
                        args=(*extra, "--allowedTools", tool, "--output-format", "stream-json", "--verbose"))
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip().startswith("{")]
    final = lines[-1] if lines else {}
    if result.returncode != 0 or final.get("type") != "result" or final.get("result") != SUBAGENT_ANSWER_TEXT:
        raise FlowFailed(f"claude -p {prompt!r} {' '.join(extra)}: exit {result.returncode}, last line {final}\n"
                         f"stdout tail: {result.stdout[-1500:]}\nstderr tail: {result.stderr[-1500:]}")
    return final


def wait_served_turns(log: Callable[[], str], count: int, timeout: float = 10) -> list[ServedTurn]:
    """`served_turns` once `count` are in the log (or after `timeout`): llama-server writes a request's
    last lines a moment after its answer has gone out."""
    deadline = time.monotonic() + timeout
    while len(turns := served_turns(log())) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return turns


def run_sessions(version: str, base_url: str, home: Path, log: Callable[[], str], *,
                 model: str = "local", api_key: str = "sk-test-local") -> SessionsRun:
    """Two sessions with a subagent each, then `claude -p -c`, all in `home`/work, against `base_url`;
    `log` gives llama-server's log text (read after each run, so the roles line up)."""
    tool = subagent_tool(version)
    outputs: list[dict[str, Any]] = []
    served: list[ServedTurn] = []
    expected = (3, 3, 1)
    for (prompt, extra), count in zip(((FIRST_PROMPT, ()), (SECOND_PROMPT, ()), (CONTINUATION_PROMPT, ("-c",))),
                                      expected, strict=True):
        outputs.append(_claude(version, base_url, prompt, home, tool, model, api_key, extra))
        turns = wait_served_turns(log, len(served) + count)
        if len(turns) != len(served) + count:
            raise FlowFailed(f"claude -p {prompt!r}: llama-server served {len(turns) - len(served)} requests, "
                             f"expected {count}: {turns[len(served):]}")
        served = turns
    return SessionsRun(outputs, dict(zip(ROLES, served, strict=True)),
                       [str(o.get("session_id")) for o in outputs])


def flow_records(serve: ServeProcess, run: SessionsRun) -> list[dict[str, Any]]:
    """ccbridge's records of the flow's model requests, oldest first (each is written a moment
    after its answer, so this waits up to 10 s for all of them)."""
    count, sessions = len(run.served), set(run.session_ids)
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in serve.requests(50) if r["path"] == "/v1/messages" and r["session_id"] in sessions]
        if len(records) >= count or time.monotonic() > deadline:
            return sorted(records, key=lambda r: r["started_at"])
        time.sleep(0.1)
