"""llama-server's prompt cache across a restart ccbridge makes: real Claude Code sessions, a managed
llama-server (the tiny model), llama-server's own `cache_n` as the measure.

Session A runs one turn; the server is restarted through the control API (as the panel's `r` does);
then `claude -p -c` continues A and a new session B starts in the same folder. With `cache.keep_slots`
(the default) ccbridge saved the slot before the restart and restored it once the new process was
healthy: A's next turn reuses its previous prompt, B's first turn the part sessions share. Without it
the restart empties the cache (measured: 6 of 21,217 tokens for B) and the record says why.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.claude import CLAUDE_VERSIONS, run_claude
from tests.support.config import chain_config
from tests.support.llama import free_port, llama_server_binary
from tests.support.serve import ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

VERSION = CLAUDE_VERSIONS[-1]


@dataclass
class Restarted:
    """Each Claude Code run's record (oldest first), the status after, ccbridge's log."""

    records: dict[str, dict[str, Any]]
    status: dict[str, Any]
    log: str


def _first_record(serve: ServeProcess, since: float) -> dict[str, Any]:
    """The first model request that started after `since` (Claude Code may send more: a reply cut at
    max_tokens is continued), waiting a moment for it to be recorded."""
    deadline = time.monotonic() + 15
    while True:
        records = [r for r in serve.requests(50) if r["path"] == "/v1/messages" and r["status"] == 200
                   and r.get("backend_prompt_n") is not None and r["started_at"] >= since]
        if records or time.monotonic() > deadline:
            assert records, "no record of the run"
            return min(records, key=lambda r: r["started_at"])
        time.sleep(0.2)


def _ms(value: float | None) -> str:
    """A time for the log line; None when the answer had no text (a one-token reply can be empty)."""
    return "-" if value is None else f"{value:.0f} ms"


def restart_flow(tmp: Path, tiny_model: Path, keep_slots: bool) -> Restarted:
    """A 1, a restart, then (slots kept) A 2 with -c and B 1 in the same folder, or (neither slots kept
    nor warm-up) B 1 and C 1 in another folder."""
    port = free_port()
    command = shlex.join([str(llama_server_binary()), "-m", str(tiny_model), "-c", "131072", "-np", "1",
                          "-t", "1", "-tb", "1"])
    config = tmp / "ccbridge.yaml"
    chain_config(config, {"local": {"api_base": f"http://127.0.0.1:{port}/v1", "model": "auto", "command": command}},
                 cache={"keep_slots": keep_slots, "warm": keep_slots})  # not kept: nothing at all (the state before)
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    home = tmp / "home"
    runs: dict[str, dict[str, Any]] = {}
    with ServeProcess(config, env) as serve:
        def claude(name: str, prompt: str, *args: str, folder: Path = home) -> None:
            since = time.time()
            result = run_claude(VERSION, serve.url, prompt, home=folder, args=args, timeout=300)
            assert result.returncode == 0, (name, result.stdout[-2000:], result.stderr[-2000:], serve.log()[-3000:])
            runs[name] = record = _first_record(serve, since)
            print(f"{name}: {record['backend_cache_n']} of {record['backend_cache_n'] + record['backend_prompt_n']} "
                  f"from cache, first token {_ms(record['ttft_ms'])}; miss: {record['miss_reason']}")

        def llama() -> dict[str, Any]:
            return next(s for s in serve.status()["services"] if s["name"] == "llama:local")

        deadline = time.monotonic() + 120
        while llama()["state"] != "ready":
            assert time.monotonic() < deadline, llama()
            time.sleep(0.2)
        claude("A 1", "Hello world")
        pid = llama()["pid"]
        resp = httpx.post(f"{serve.url}/ccbridge/api/services/llama:local/restart", json={}, timeout=120,
                          trust_env=False)
        assert resp.status_code == 200, resp.text
        deadline = time.monotonic() + 120
        while (svc := llama())["state"] != "ready" or svc["pid"] == pid:
            assert time.monotonic() < deadline, svc
            time.sleep(0.2)
        if keep_slots:
            claude("A 2 (-c)", "Go on.", "-c")
        claude("B 1", "What is in this folder?")
        if not keep_slots:
            claude("C 1 (other folder)", "What is in this folder?", folder=tmp / "other-home")
        status = serve.status()
        log = serve.log()
    assert len({runs["A 1"]["session_id"], runs["B 1"]["session_id"]}) == 2
    if keep_slots:
        assert runs["A 1"]["session_id"] == runs["A 2 (-c)"]["session_id"]
    return Restarted(runs, status, log)


@pytest.fixture(scope="module")
def kept(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    yield restart_flow(tmp_path_factory.mktemp("kept"), tiny_model, keep_slots=True)


def share(record: dict[str, Any]) -> float:
    cached, new = record["backend_cache_n"], record["backend_prompt_n"]
    return cached / (cached + new)


def test_slots_saved_and_restored_around_a_restart(kept):
    restore = kept.status["slot_restores"]["local"]
    assert restore["slots"] == 1 and restore["tokens"] > 10_000 and not restore["failed"], restore
    assert restore["worked"] is True and restore["note"] is None, restore


def test_the_running_session_and_a_new_one_keep_the_cache_across_the_restart(kept):
    assert share(kept.records["A 2 (-c)"]) >= 0.95, kept.records["A 2 (-c)"]
    assert share(kept.records["B 1"]) >= 0.40, kept.records["B 1"]


@pytest.fixture(scope="module")
def cold(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    yield restart_flow(tmp_path_factory.mktemp("cold"), tiny_model, keep_slots=False)


def test_without_kept_slots_the_restart_is_named_as_the_miss_and_so_is_another_folder(cold):
    """The record (and so the API, the export and the detail view) says why: the restart emptied the
    cache; a session in another folder differs at its "# Environment" block."""
    assert cold.status["slot_restores"] == {}
    b1 = cold.records["B 1"]
    assert share(b1) < 0.05, b1
    assert "llama-server restarted at" in (b1["miss_reason"] or ""), b1
    c1 = cold.records["C 1 (other folder)"]
    assert "another folder" in (c1["miss_reason"] or ""), (share(c1), c1)
