"""Mutated Claude Code requests through the real chain, on both routes: never a 500.

The body is what the real Claude Code (2.1.330) sends for `claude -p`, captured at test
time (its prompt text is not committed here). Each mutation drops a field or gives it a
value of another type, somewhere in the body; the request goes through `ccbridge serve`
to LiteLLM and llama-server, or straight to llama-server (`route: native`). Every answer
must be a 200, or a 4xx in Anthropic format; a refusal must be a 400 that names the field.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from typing import Any

import httpx
import pytest

from tests.support.capture import capture_claude_turn
from tests.support.config import chain_config
from tests.support.llama import LlamaServer
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.e2e
PER_ROUTE = 60
WRONG_VALUES: tuple[Any, ...] = (None, True, 7, 2.5, "text", [], [1, "a"], {}, {"k": 1})


def _paths(node: Any, prefix: tuple = (), depth: int = 0) -> list[tuple]:
    """Every key/index path in the body down to a few levels (big strings are leaves)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = (*prefix, key)
        out.append(path)
        if depth < 5:
            out.extend(_paths(value, path, depth + 1))
    return out


def mutate(body: dict, rng: random.Random) -> tuple[dict, str]:
    """One mutation: a field dropped or given a value of another type."""
    out = copy.deepcopy(body)
    path = rng.choice(_paths(out))
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if rng.random() < 0.35:
        del parent[last]
        return out, f"drop {'.'.join(map(str, path))}"
    old = parent[last]
    value = rng.choice([v for v in WRONG_VALUES if type(v) is not type(old)])
    parent[last] = value
    return out, f"{'.'.join(map(str, path))} = {json.dumps(value)}"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("mutations")
    body = capture_claude_turn("2.1.330")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--slots",)) as llama:
        config = tmp / "ccbridge.yaml"
        chain_config(config, {"local": {"api_base": llama.api_base, "max_tokens": 16},
                              "nat": {"api_base": llama.api_base, "route": "native", "max_tokens": 16}},
                     aliases={"native-*": "nat", "*": "local"})
        with ServeProcess(config, env) as serve:
            yield serve, body


@pytest.mark.parametrize("route", ["litellm", "native"])
def test_mutated_claude_code_requests_never_get_a_500(served, route):
    serve, original = served
    rng = random.Random(f"ccbridge-{route}")
    outcomes: Counter[str] = Counter()
    problems = []
    with httpx.Client(timeout=120, trust_env=False) as client:
        for _ in range(PER_ROUTE):
            body, what = mutate(original, rng)
            if route == "native" and isinstance(body.get("model"), str):
                body["model"] = "native-" + body["model"]
            resp = client.post(f"{serve.url}/v1/messages?beta=true", json=body,
                               headers={"anthropic-version": "2023-06-01", "x-api-key": "k"})
            text = resp.text
            if resp.status_code == 200:
                outcomes["200"] += 1
                continue
            outcomes[str(resp.status_code)] += 1
            try:
                error = resp.json()["error"]
            except (ValueError, KeyError, TypeError):
                problems.append(f"{what}: {resp.status_code} not Anthropic-shaped: {text[:200]}")
                continue
            if resp.status_code >= 500:
                problems.append(f"{what}: {resp.status_code} {error.get('message', '')[:300]}")
            elif resp.status_code == 400 and error.get("type") != "invalid_request_error":
                problems.append(f"{what}: 400 of type {error.get('type')}: {error.get('message', '')[:200]}")
            elif resp.status_code == 400 and not _names_the_field(error.get("message", ""), what):
                problems.append(f"{what}: 400 does not name the field: {error.get('message', '')[:200]}")
    print(f"\n{route}: {PER_ROUTE} mutated Claude Code requests -> {dict(outcomes)}")
    assert not problems, "\n".join(problems)
    assert outcomes["200"] > 0 and outcomes["400"] > 0  # the mutations really exercised both sides


def _names_the_field(message: str, what: str) -> bool:
    """The refusal names the mutated field, or one on its path (as `messages.3.content`)."""
    field = what.removeprefix("drop ").split(" = ")[0]
    parts = field.split(".")
    return any(".".join(parts[:n]) in message for n in range(len(parts), 0, -1))
