"""llama-server's prompt cache after a restart ccbridge makes: real Claude Code sessions, a managed
llama-server, its own `cache_n` as the measure.

    .venv/bin/python -m bench.cache_restart [--model tiny|qwen] [--claude-version 2.1.332]

`python -m bench.cache --restart` runs it too. One folder, one `ccbridge serve` (LiteLLM route),
one llama-server it runs (`command:`), in this order:

- A 1: the first session ever (cold); B 1: a new session (the "# Environment" block now comes
  from the cache too: `cache.shared_first`);
- restart with slots kept (`cache.keep_slots`, the default): B 2 continues B (`claude -p -c`),
  C 1 is a new session;
- restart with slots not kept and the warm-up on (`cache.warm`, one family): once the warm-up
  finished, C 2 continues C and D 1 is a new session;
- restart with neither (the state before this work): E 1 is a new session.

Per row: prompt tokens from cache / prompt tokens, the share, time to first token; plus the
slot restore's time against the time llama-server took to read A 1's prompt (recompute).
The real model (`--model qwen`, scripts/fetch_qwen.sh) reads prompts at ~115 tok/s on two
cores: one run takes ~10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import REPO, machine, save, table
from tests.support.config import write_config

sys.path.insert(0, str(REPO))

DEFAULT_VERSION = "2.1.332"
ROWS = (
    ("A 1", "first session ever (cold)", "-"),
    ("B 1", "new session, no restart", "first token <= 10 s (qwen)"),
    ("B 2 (-c)", "running session's next turn after a restart, slots restored", ">= 95 %"),
    ("C 1", "new session after a restart, slots restored", ">= 40 % tiny, >= 80 % qwen"),
    ("C 2 (-c)", "running session's next turn after a restart, warm-up", ">= 95 %"),
    ("D 1", "new session after a restart, warm-up", ">= 40 % tiny, >= 80 % qwen"),
    ("E 1", "new session after a restart, nothing kept (before)", "-"),
)


def _command(model: str, port: int, tmp: Path) -> str:
    from tests.support.llama import llama_server_binary

    if model == "qwen":
        from tests.support.qwen import SERVER_FLAGS, qwen_model

        return shlex.join([str(llama_server_binary()), "-m", str(qwen_model()), "-c", "32768", "-np", "1",
                           "-t", "2", *SERVER_FLAGS])
    from tests.support.tiny_model import write_tiny_model

    tiny = write_tiny_model(tmp / "tiny.gguf")
    return shlex.join([str(llama_server_binary()), "-m", str(tiny), "-c", "131072", "-np", "1", "-t", "1",
                       "-tb", "1"])


def _config(path: Path, command: str, ports: tuple[int, int, int], *, keep: bool, warm: bool) -> None:
    """ports: llama-server, the proxy, LiteLLM."""
    port, proxy_port, litellm_port = ports
    write_config(path, proxy={"host": "127.0.0.1", "port": proxy_port}, litellm={"port": litellm_port},
                 backends={"local": {"api_base": f"http://127.0.0.1:{port}/v1", "model": "auto", "command": command}},
                 cache={"keep_slots": keep, "warm": warm, "warm_families": 1})


def measure(model: str, version: str, tmp: Path) -> dict[str, Any]:
    from tests.support.claude import run_claude
    from tests.support.llama import free_port
    from tests.support.serve import ServeProcess

    ports = (free_port(), free_port(), free_port())
    command = _command(model, ports[0], tmp)
    config = tmp / "ccbridge.yaml"
    _config(config, command, ports, keep=True, warm=False)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    home = tmp / "home"
    rows: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"model": model, "claude_code": version, "command": command, "rows": rows}
    with ServeProcess(config, env) as serve:
        def llama() -> dict[str, Any]:
            return next(s for s in serve.status()["services"] if s["name"] == "llama:local")

        def wait_ready(old_pid: int | None = None) -> None:
            deadline = time.monotonic() + 300
            while (svc := llama())["state"] != "ready" or svc["pid"] == old_pid:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama-server not ready: {svc}")
                time.sleep(0.3)

        def claude(name: str, prompt: str, *args: str) -> None:
            began = time.time()
            result = run_claude(version, serve.url, prompt, home=home, args=args, timeout=1200,
                                extra_env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "24", "API_TIMEOUT_MS": "1200000"})
            deadline = time.monotonic() + 15
            while True:
                records = sorted((r for r in serve.requests(50) if r["path"] == "/v1/messages"
                                  and r["started_at"] >= began and r.get("backend_prompt_n") is not None),
                                 key=lambda r: r["started_at"])
                if records or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            if not records:
                raise RuntimeError(f"{name}: no record; exit {result.returncode}: {result.stderr[-1500:]}")
            first = records[0]
            cached, fresh = first["backend_cache_n"], first["backend_prompt_n"]
            ttft = first["ttft_ms"] if first["ttft_ms"] is not None else first["duration_ms"]  # no text: its end
            rows[name] = {"cached": cached, "prompt": cached + fresh, "ttft_ms": ttft,
                          "prompt_tps": first["backend_prompt_tps"], "miss_reason": first["miss_reason"],
                          "session": first["session_id"], "requests": len(records), "exit": result.returncode}
            print(f"{name}: {cached}/{cached + fresh} ttft {ttft:.0f} ms  {first['miss_reason'] or ''}",
                  flush=True)

        def restart() -> None:
            pid = llama()["pid"]
            resp = httpx.post(f"{serve.url}/ccbridge/api/services/llama:local/restart", json={}, timeout=600,
                              trust_env=False)
            resp.raise_for_status()
            wait_ready(pid)

        def reconfigure(*, keep: bool, warm: bool) -> None:
            _config(config, command, ports, keep=keep, warm=warm)
            time.sleep(2.5)  # the config watcher applies it (1 s interval)

        wait_ready()
        claude("A 1", "Hello world")
        claude("B 1", "What is in this folder?")
        restart()
        out["restore"] = serve.status()["slot_restores"].get("local")
        claude("B 2 (-c)", "Thanks. Say it once more.", "-c")
        claude("C 1", "Say hello.")
        reconfigure(keep=False, warm=True)
        restart()
        deadline = time.monotonic() + 1200
        while not any(w["cached_tokens"] is not None and not w["cancelled"] for w in serve.status()["warmups"]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no warm-up finished: {serve.status()['warmups']}")
            time.sleep(0.5)
        out["warmups"] = serve.status()["warmups"]
        claude("C 2 (-c)", "Thanks. Say it once more.", "-c")
        claude("D 1", "Say hi.")
        reconfigure(keep=False, warm=False)
        restart()
        claude("E 1", "Say hey.")
    a1 = rows["A 1"]
    if out.get("restore") and a1.get("prompt_tps"):
        out["recompute_ms"] = 1000.0 * (a1["prompt"] - a1["cached"]) / a1["prompt_tps"]
    return out


HEADER = ("figure", "cache_n / prompt tokens", "prompt read", "first token", "target")


def rows(data: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, label, target in ROWS:
        row = data["rows"].get(name)
        if row is None:
            continue
        share = 100 * row["cached"] / max(1, row["prompt"])
        read = (row["prompt"] - row["cached"]) / row["prompt_tps"] if row.get("prompt_tps") else None
        out.append((f"after a restart, {data['model']}: {label} ({name})",
                    f"{row['cached']:,} / {row['prompt']:,} ({share:.1f} %)",
                    "-" if read is None else f"{read:.1f} s", f"{row['ttft_ms'] / 1000:.1f} s", target))
    restore = data.get("restore") or {}
    if restore:
        out.append((f"after a restart, {data['model']}: slot restore ({restore.get('tokens', 0):,} tokens)",
                    f"{restore.get('restore_ms', 0):.0f} ms", f"recompute {data.get('recompute_ms', 0) / 1000:.1f} s",
                    "-", "-"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "qwen"), default="tiny")
    parser.add_argument("--claude-version", default=DEFAULT_VERSION)
    parser.add_argument("--show", type=Path, help="print the table of a saved result instead of measuring")
    args = parser.parse_args()
    if args.show:
        print(table([HEADER, *rows(json.loads(args.show.read_text()))]))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        os.environ.setdefault("CCBRIDGE_CONFIG_DIR", str(Path(tmp_name) / "c"))
        data = measure(args.model, args.claude_version, Path(tmp_name))
    print(table([HEADER, *rows(data)]))
    print(f"saved {save(f'cache-restart-{args.model}', data)}  machine: {json.dumps(machine())}")


if __name__ == "__main__":
    main()
