"""llama-server's prompt cache with the real Claude Code: new sessions, later turns, subagents.

    .venv/bin/python -m bench.cache [--quick] [--claude-version 2.1.330]

`python -m bench.suite` runs it too (its "prompt cache" rows). `--restart tiny|qwen`: the
"after a restart" rows instead (`bench/cache_restart.py`). The flow is
`tests/support/sessions.py`: in one folder, two `claude -p` sessions that each start a
general-purpose subagent, then `claude -p -c`: seven model requests, written by the
scripted Qwen3 model (`tests/support/scripted_model.py`) and served by the real
llama-server, started afresh for every route so that each flow starts cold.

Routes: "before", the billing line reaches llama-server (Claude Code straight to
llama-server's own /v1/messages; Claude Code -> LiteLLM alone), and "after", through
ccbridge (native route; LiteLLM route). llama-server settings (`SETTINGS`): `-np auto`
is its default (4 slots sharing one unified KV cache; when a task starts, idle slots are
saved to the host-RAM prompt cache and cleared), `-np 2` keeps two slots' caches apart;
each with the host-RAM prompt cache at its default (`--cache-ram 8192` MiB) and off
(`-cram 0`). LiteLLM alone runs with the first setting only. `--quick`: `-np auto` only,
without LiteLLM alone.

Figures are llama-server's own, from its log (prompt tokens served from its cache /
prompt tokens); through ccbridge they come from ccbridge's records, checked equal to
the log. "new session first turn" is the second session's first request (the first
session's ran cold), "subagent first turn" the second session's subagent's (after the
first session's subagent), "later turns" the worst of the later main-agent turns (each
session's turn after its subagent, and the `-c` turn).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import REPO, litellm_alone, machine, save, table

sys.path.insert(0, str(REPO))

DEFAULT_VERSION = "2.1.330"
CONTEXT = 131072  # a 2.1.330 main prompt is ~64k tokens for the byte-level vocabulary: two fit
BEFORE_DIRECT = "before: llama-server direct"
BEFORE_LITELLM = "before: LiteLLM alone"
AFTER_NATIVE = "ccbridge native"
AFTER_LITELLM = "ccbridge+LiteLLM"
AFTER_PINNED = "ccbridge+LiteLLM, pin_slots: true"
# label -> (--parallel, more flags); -1 is llama-server's own default ("auto")
SETTINGS: dict[str, tuple[int, tuple[str, ...]]] = {
    "-np auto": (-1, ()), "-np auto -cram 0": (-1, ("--cache-ram", "0")),
    "-np 2": (2, ()), "-np 2 -cram 0": (2, ("--cache-ram", "0"))}
FIGURES = {"new session first turn": ("B main 1",), "subagent first turn": ("B subagent 1",),
           "later turns": ("A main 2", "B main 2", "B main 3 (-c)")}
TARGETS = {"new session first turn": ">= 40 %", "subagent first turn": ">= 40 %", "later turns": ">= 95 %"}


@contextlib.contextmanager
def _endpoint(route: str, tmp: Path, env: dict[str, str], api_base: str) -> Iterator[tuple[str, str, Any]]:
    """(base URL for Claude Code, its API key, the ccbridge process or None) for one route."""
    from tests.support.serve import ServeProcess, write_chain_config

    if route == BEFORE_DIRECT:
        yield api_base.removesuffix("/v1"), "sk-test-local", None
    elif route == BEFORE_LITELLM:
        with litellm_alone(api_base) as (url, key):
            yield url, key, None
    else:
        extra = {AFTER_NATIVE: {"route": "native"}, AFTER_PINNED: {"pin_slots": True}}.get(route, {})
        config = write_chain_config(tmp / "ccbridge.yaml", api_base, **extra)
        with ServeProcess(config, env) as serve:
            yield serve.url, "sk-test-local", serve


def _flow(route: str, setting: tuple[int, tuple[str, ...]], tmp: Path, env: dict[str, str], version: str,
          model: Path) -> dict[str, Any]:
    from tests.support.scripted_model import scripted_llama_server
    from tests.support.sessions import flow_records, run_sessions

    tmp.mkdir(parents=True)
    env = {**env, "CCBRIDGE_DATA_DIR": str(tmp / "data")}  # this flow's records only
    parallel, flags = setting
    with scripted_llama_server(model, ctx=CONTEXT, parallel=parallel, extra_args=flags) as llama, \
            _endpoint(route, tmp, env, llama.api_base) as (url, key, serve):
        run = run_sessions(version, url, tmp / "home", llama.log_text, api_key=key)
        logged = {role: {"slot": t.slot, "cached": t.cached_tokens, "prompt": t.prompt_tokens}
                  for role, t in run.served.items()}
        out: dict[str, Any] = {"turns": logged, "sessions": run.session_ids}
        if serve is not None:  # through ccbridge: the figures from its records (and are they the log's?)
            records = flow_records(serve, run)
            if len(records) != len(logged):
                raise RuntimeError(f"{route}: {len(records)} records for {len(logged)} requests llama-server served")
            out["turns"] = {role: {**turn, **_record_counts(record)}
                            for (role, turn), record in zip(logged.items(), records, strict=True)}
            out["records_match_log"] = out["turns"] == logged
            out["subagent_flags"] = [r["subagent"] for r in records]
            out["billing_lines_removed"] = serve.status()["services"][0]["billing_lines_removed"]
    return out


def _record_counts(record: dict[str, Any]) -> dict[str, int]:
    """Cached and whole prompt tokens from a ccbridge record (llama-server's timings, else its usage)."""
    if record["backend_cache_n"] is not None and record["backend_prompt_n"] is not None:
        cached, fresh = record["backend_cache_n"], record["backend_prompt_n"]
    else:
        cached, fresh = record["cache_read_tokens"] or 0, record["input_tokens"] or 0
    return {"cached": cached, "prompt": cached + fresh}


def measure(tmp: Path, env: dict[str, str], quick: bool, version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """Run the flow on every route and setting; llama-server's counts by role, per setting and route."""
    from tests.support.scripted_model import subagent_script, write_scripted_model
    from tests.support.sessions import subagent_tool

    tmp.mkdir(parents=True, exist_ok=True)
    tool = subagent_tool(version)
    model = write_scripted_model(tmp / f"scripted-subagent-{tool}.gguf", subagent_script(tool))
    settings = dict(list(SETTINGS.items())[:1]) if quick else SETTINGS
    results: dict[str, Any] = {"claude_code": version, "subagent_tool": tool, "llama_ctx": CONTEXT,
                               "settings": {}}
    for n, (label, setting) in enumerate(settings.items()):
        routes = (BEFORE_DIRECT, AFTER_NATIVE, AFTER_LITELLM) if quick or n else (
            BEFORE_DIRECT, BEFORE_LITELLM, AFTER_NATIVE, AFTER_LITELLM, AFTER_PINNED)
        results["settings"][label] = {
            route: _flow(route, setting, tmp / f"cache-{n}-{i}", env, version, model)
            for i, route in enumerate(routes)}
    return results


def figure(turns: dict[str, dict[str, int]], name: str) -> dict[str, int]:
    """The turn a figure reports: for several turns, the one with the smallest share."""
    return min((turns[role] for role in FIGURES[name]), key=lambda t: t["cached"] / max(1, t["prompt"]))


def rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Table rows: per setting, figure and route, cache_n / prompt tokens and the share."""
    out = []
    for setting, routes in data["settings"].items():
        for name in FIGURES:
            for route, flow in routes.items():
                turn = figure(flow["turns"], name)
                share = 100 * turn["cached"] / max(1, turn["prompt"])
                target = "-" if route.startswith("before") else TARGETS[name]
                if flow.get("records_match_log") is False:
                    target += " (records differ from llama-server's log)"
                out.append((f"prompt cache {data['claude_code']} {setting}: {name}, {route}",
                            f"{turn['cached']:,} / {turn['prompt']:,} ({share:.1f} %)", target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="-np auto only, without LiteLLM alone")
    parser.add_argument("--claude-version", default=DEFAULT_VERSION, help="a Claude Code release in the tool cache")
    parser.add_argument("--restart", choices=("tiny", "qwen"),
                        help="instead: the after-a-restart rows (bench/cache_restart.py) for that model")
    args = parser.parse_args()
    if args.restart:
        from bench import cache_restart

        with tempfile.TemporaryDirectory() as tmp_name:
            found = cache_restart.measure(args.restart, cache_restart.DEFAULT_VERSION, Path(tmp_name))
        print(table([cache_restart.HEADER, *cache_restart.rows(found)]))
        print(f"saved {save(f'cache-restart-{args.restart}', found)}  machine: {json.dumps(machine())}")
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
        data = measure(tmp, env, args.quick, args.claude_version)
    print(table([("figure", "cache_n / prompt tokens", "target"), *rows(data)]))
    print(f"saved {save('cache', data)}  machine: {json.dumps(machine())}")


if __name__ == "__main__":
    main()
