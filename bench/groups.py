"""Several llama-servers behind one alias: session affinity against plain round-robin.

    .venv/bin/python -m bench.groups          # about 12 minutes; --quick: without the native route

Two llama-servers (the tiny model, `-np 2`, `--logit-bias 2+0.5` for short answers) behind
`"*": [box-a, box-b]`; four real Claude Code sessions (2.1.332), each in its own folder, take
turns in a rotating order (`claude -p`, then `claude -p -c`); after round 2 the server most
sessions are on is killed (SIGKILL), rounds 3 and 4 run on, then it is started again, a fifth
session begins and the four take a fifth turn (`tests/support/groups.py`). The same run with
`groups: {balance: round-robin}` (each request to the next server) is what a plain balancer
gives; with `balance: litellm`, LiteLLM's router chooses with its own `session_affinity`.
Figures come from ccbridge's records: which backend answered each turn and the share of its
prompt llama-server served from its cache (its `timings.cache_n`, which the backend leg reads;
on the native route, where llama-server sometimes leaves out the usage, its log:
`tests/support/sessions.py::served_turns`). `bench.suite` runs it too. Prints one table;
writes bench/results/groups-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import REPO, machine, save, table

sys.path.insert(0, str(REPO))

VERSION = "2.1.332"
VARIANTS = {  # label -> (balance, route)
    "ccbridge affinity": ("session", "litellm"),
    "round-robin": ("round-robin", "litellm"),
    "LiteLLM session_affinity": ("litellm", "litellm"),
    "ccbridge affinity, native": ("session", "native"),
}


def measure(tmp: Path, quick: bool, version: str = VERSION) -> dict[str, Any]:
    """The flow once per variant; per turn: session, round, backend, cache share, TTFT, status."""
    from tests.support.groups import group_chain, run_groups
    from tests.support.tiny_model import write_tiny_model

    tmp.mkdir(parents=True, exist_ok=True)
    model = write_tiny_model(tmp / "tiny.gguf")
    out: dict[str, Any] = {"claude_code": version, "variants": {}}
    for label, (balance, route) in VARIANTS.items():
        if quick and route == "native":
            continue
        where = tmp / label.replace(" ", "-").replace(",", "")
        where.mkdir()
        with group_chain(where, model, balance=balance, route=route) as (serve, servers):
            run = run_groups(version, serve, servers, where / "homes", rounds=4, kill_after=2, revive=True,
                             balance=balance, log=lambda line, label=label: print(f"  [{label}] {line}"))
        out["variants"][label] = {
            "balance": balance, "route": route, "killed": run.killed, "kill_round": run.kill_round,
            "revived_round": run.revived_round,
            "turns": [{"session": t.session, "round": t.round, "exit": t.exit_code, "backend": t.backend,
                       "share": t.share, "ttft_ms": t.record["ttft_ms"] if t.record else None,
                       "statuses": [r["status"] for r in t.records], "seconds": t.seconds,
                       "previous": prev.backend if (prev := run.previous(t)) else None}
                      for t in run.turns],
            "groups": run.status.get("groups"),
        }
    return out


def _pct(values: list[float | None]) -> str:
    """min / median of the known shares (a share neither the record nor the log had is left out, and counted)."""
    known = [v for v in values if v is not None]
    text = f"{100 * min(known):.1f} / {100 * statistics.median(known):.1f} %" if known else "-"
    return text + (f" ({len(values) - len(known)} unknown)" if len(known) < len(values) else "")


def summary(variant: dict[str, Any]) -> dict[str, str]:
    """The figures of one variant, as table cells."""
    turns = variant["turns"]
    kill_round = variant["kill_round"]
    later = [t for t in turns if t["previous"] is not None]
    before = [t["share"] for t in later if t["round"] <= kill_round]
    stayed = [t["share"] for t in later if t["round"] > kill_round and t["backend"] == t["previous"]]
    moved = [t for t in later if t["round"] > kill_round and t["backend"] != t["previous"]]
    killed_sessions = {t["session"] for t in turns if t["round"] == kill_round and t["backend"] == variant["killed"]}
    after_move = [t["share"] for t in turns if t["session"] in killed_sessions and t["round"] == kill_round + 2]
    first_round = [t["backend"] for t in turns if t["round"] == 1 and t["session"] < 4]
    failed = sum(1 for t in turns if t["exit"] != 0 or any(s != 200 for s in t["statuses"]))
    newcomer = [t["backend"] for t in turns if t["session"] == 4]
    back = [t for t in turns if t["round"] == variant["revived_round"] and t["session"] in killed_sessions]
    ttft = [t["ttft_ms"] for t in later if t["ttft_ms"] is not None and t["round"] <= kill_round]
    switched = sum(1 for t in later if t["round"] <= kill_round and t["backend"] != t["previous"])
    return {
        "spread": " / ".join(f"{first_round.count(b)} {b}" for b in sorted(set(first_round))),
        "before": _pct(before),
        "switched": f"{switched} of {sum(1 for t in later if t['round'] <= kill_round)}",
        "failed": f"{failed} of {sum(len(t['statuses']) for t in turns)} requests",
        "moved": (f"{len(killed_sessions)} sessions; first turn there {_pct([t['share'] for t in moved])}"
                  if moved else f"{len(killed_sessions)} sessions; none changed server"),
        "after_move": _pct(after_move),
        "stayed": _pct(stayed),
        "newcomer": ", ".join(b or "-" for b in newcomer) + (" (the revived one)" if newcomer == [variant["killed"]]
                                                             else ""),
        "ttft": f"{statistics.median(ttft):.0f} ms" if ttft else "-",
        "back": (", ".join(sorted({t["backend"] or "-" for t in back}))
                 + f"; cache {_pct([t['share'] for t in back])}" if back else "-"),
    }


ROWS = (
    ("spread", "new sessions per server (round 1)", "2 / 2"),
    ("before", "turns 2+ before the kill: cache share min / median", ">= 95 %"),
    ("switched", "turns 2+ before the kill on another server than the last", "0"),
    ("failed", "failed requests (a server killed after round 2)", "0"),
    ("moved", "the killed server's sessions", "one cold turn"),
    ("after_move", "  their next turn: cache share min / median", ">= 95 %"),
    ("stayed", "turns after the kill on the last turn's server: min / median", ">= 95 %"),
    ("newcomer", "a new session after the server came back went to", "the revived one"),
    ("back", "  the moved sessions' next turn then went to", "where they moved, >= 95 %"),
    ("ttft", "time to first token, turns 2+ before the kill, p50", "-"),
)


def rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table: one row per figure, one column per variant, then the target."""
    labels = list(data["variants"])
    cells = {label: summary(data["variants"][label]) for label in labels}
    out: list[tuple[str, ...]] = [("figure (two llama-servers, four Claude Code sessions)", *labels, "target")]
    for key, name, target in ROWS:
        out.append((name, *(cells[label][key] for label in labels), target))
    return out


def suite_rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The same figures as `bench.suite`'s three-column rows."""
    out = []
    for label, variant in data["variants"].items():
        cells = summary(variant)
        for key, name, target in ROWS:
            out.append((f"groups, {label}: {name.strip()}", cells[key], target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="without the native route")
    parser.add_argument("--claude-version", default=VERSION, help="a Claude Code release in the tool cache")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        data = measure(Path(tmp_name), args.quick, args.claude_version)
    print(table(rows(data)))
    print(f"saved {save('groups', data)}  machine: {json.dumps(machine())}")


if __name__ == "__main__":
    main()
