"""`ccbridge statusline`: the serve's per-session answer, the line it becomes, and the command's limits.

The command runs as Claude Code runs it (a child process, JSON on stdin,
ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN in its environment) against a
real bridge whose bus is fed the events the proxy publishes for a request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time

from backend.events import RequestFinished, RequestProgress, RequestRecord, RequestStarted
from backend.metrics.sessions import SessionBoard
from backend.statusline import render, short_model, split_url
from tests.support.front import run_with_bridge
from tests.support.serve import REPO

CCBRIDGE = str(REPO / ".venv" / "bin" / "ccbridge")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "NO_COLOR"))}
    return {**env, "ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "ccbridge-local", **extra}


async def _line(url: str, session: str, **env: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        CCBRIDGE, "statusline", stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(url, **env))
    out, _ = await proc.communicate(json.dumps({"session_id": session, "model": {"id": "x"}}).encode())
    assert proc.returncode == 0
    return out.decode().rstrip("\n")


def _record(rid: str, session: str, **kw: object) -> RequestRecord:
    values: dict = {"id": rid, "started_at": time.time() - 5, "method": "POST", "path": "/v1/messages",
                    "session_id": session, "routed_backend": "local", "status": 200, "duration_ms": 4000.0}
    values.update(kw)
    return RequestRecord(**values)


def test_the_line_follows_a_session_from_waiting_to_reading_to_generating_to_done(tmp_path):
    async def body(bridge, up, http):
        url, now = bridge.proxy_url, time.time()
        publish = bridge.bus.publish
        assert ANSI.sub("", await _line(url, "sess-a")).startswith("local")  # a session not seen yet
        publish(RequestStarted("r1", now, "POST", "/v1/messages", "claude-opus-ccbridge", "local", "sess-a"))
        publish(RequestStarted("r2", now, "POST", "/v1/messages", "claude-opus-ccbridge", "local", "sess-b"))
        assert "waiting" in await _line(url, "sess-a", NO_COLOR="1")
        publish(RequestProgress("r1", "prefill", now, 11_600, 5_234, 2_000, 8.4))
        reading = await _line(url, "sess-a")
        assert "reading 45% (5.2k/11.6k) ~8s" in ANSI.sub("", reading) and "cache 17%" in reading
        assert "\x1b[33m" in reading  # yellow while the prompt is read
        assert "waiting" in await _line(url, "sess-b", NO_COLOR="1")  # the other session's own request
        publish(RequestProgress("r1", "generating", now + 1))
        assert "generating" in await _line(url, "sess-a")
        publish(RequestFinished(_record("r1", "sess-a", output_tps=38.2, cache_share=0.81, input_tokens=2_200,
                                        cache_read_tokens=9_400, output_tokens=300)))
        done = await _line(url, "sess-a", NO_COLOR="1")
        assert "38 tok/s" in done and "cache 81%" in done and "\x1b[" not in done, done
        assert "waiting" in await _line(url, "sess-b", NO_COLOR="1")

    run_with_bridge(tmp_path, body)


def test_nothing_listening_and_a_serve_that_never_answers_give_a_short_line_in_time():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
    down = subprocess.run([CCBRIDGE, "statusline"], input="{}", capture_output=True, text=True,
                          env=_env(f"http://127.0.0.1:{port}", NO_COLOR="1"), timeout=10)
    assert down.returncode == 0 and down.stdout == f"ccbridge · down (nothing at 127.0.0.1:{port})\n"
    with socket.socket() as mute:  # accepts connections (the backlog) and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        began = time.monotonic()
        hung = subprocess.run([CCBRIDGE, "statusline"], input="{}", capture_output=True, text=True,
                              env=_env(f"http://127.0.0.1:{mute.getsockname()[1]}", NO_COLOR="1"), timeout=10)
        took = time.monotonic() - began
    assert hung.stdout == "ccbridge · no answer in 300 ms\n" and hung.returncode == 0
    assert took < 3.0, took  # 0.3 s plus the interpreter's start on a busy machine


def test_the_command_imports_neither_textual_nor_the_proxy_nor_an_http_library():
    code = ("import io, sys; sys.stdin = io.StringIO('{}'); from tui.launcher import main; main(['statusline']); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'aiohttp', 'httpx', "
            "'yaml', 'ruamel', 'orjson') or m.startswith(('backend.proxy', 'backend.bridge', 'http.client'))); "
            "print(bad)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=30,
                            env=_env("http://127.0.0.1:9", NO_COLOR="1"))
    assert result.stdout.splitlines()[-1] == "[]", result.stdout + result.stderr


def _view(**kw: object) -> dict:
    data: dict = {"known": True, "request": None, "last": None, "in_flight": 0, "services": [
        {"name": "litellm", "state": "ready"}],
        "backend": {"name": "local", "model": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "health": "ok",
                    "n_ctx_slot": 32768, "gen_tps": 38.4}}
    data.update(kw)
    return data


def test_render_each_state_within_80_columns():
    prefill = {"phase": "prefill", "prompt_total": 11_600, "prompt_done": 5_234, "prompt_cached": 9_400,
               "eta_s": 8.2, "elapsed_s": 40}
    line = render(_view(request=prefill))
    assert line == "local qwen2.5-coder-0.5b · reading 45% (5.2k/11.6k) ~8s · cache 81%"  # ctx: no room
    small = _view(request=prefill, backend={"name": "local", "model": "qwen2.5", "n_ctx_slot": 32768})
    assert render(small) == "local qwen2.5 · reading 45% (5.2k/11.6k) ~8s · cache 81% · ctx 11k/32k"
    assert render(_view(request={**prefill, "phase": "generating"})).startswith(
        "local qwen2.5-coder-0.5b · generating 38 tok/s · cache 81%")
    last = {"output_tps": 38.0, "cache_share": 0.81, "context_tokens": 23_400, "status": 200}
    assert render(_view(last=last)) == "local qwen2.5-coder-0.5b · 38 tok/s · cache 81% · ctx 23k/32k"
    assert render(_view(last={**last, "context_tokens": 31_000})).endswith("ctx 31k/32k")
    assert render(_view(last={**last, "status": 500, "error": "boom"})).startswith(
        "local qwen2.5-coder-0.5b · last call failed (500)")
    loading = _view(backend={"name": "local", "health": "loading"}, known=False)
    assert render(loading) == "local · llama-server loading"
    restarting = _view(services=[{"name": "litellm", "state": "restarting"}])
    assert render(restarting).startswith("local qwen2.5-coder-0.5b · LiteLLM restarting")
    assert render(_view(backend={"name": "local", "health": "unreachable"})) == "local · llama-server down"
    assert render(_view(known=False)) == "local qwen2.5-coder-0.5b · ready · ctx 32k"
    assert render(_view(last={"status": 200})) == "local qwen2.5-coder-0.5b · ready"
    assert render(_view(last={"status": 200}, backend={"name": "local", "health": "unreachable"})) == \
        "local · llama-server down"
    huge = _view(backend={"name": "a-very-long-backend-name", "model": "x" * 90, "n_ctx_slot": 131072},
                 request={**prefill, "eta_s": 7_300})
    for colored in (False, True):
        text = ANSI.sub("", render(huge, colored=colored))
        assert len(text) < 80 and "reading 45%" in text and "~2h" not in text, text
    assert "~121m40s" in render(huge)


def test_model_names_and_urls():
    assert short_model("/models/Qwen2.5-Coder-7B-Instruct-Q4_K_M.gguf") == "Qwen2.5-Coder-7B"
    assert short_model("gemma-3-270m-it-q8_0") == "gemma-3-270m"
    assert short_model("tiny") == "tiny" and short_model(None) is None
    assert split_url("http://127.0.0.1:8082") == ("127.0.0.1", 8082, "")
    assert split_url("http://[::1]:8082/") == ("::1", 8082, "")


def test_board_keeps_the_newest_request_of_a_session_and_its_last_finished_one():
    board = SessionBoard()
    board.on_event(RequestStarted("main", 1.0, "POST", "/v1/messages", "m", "local", "s"))
    board.on_event(RequestStarted("sub", 2.0, "POST", "/v1/messages", "m", "local", "s"))  # a subagent's
    assert board.view("s", now=3.0)["request"]["id"] == "sub"
    board.on_event(RequestFinished(_record("sub", "s", started_at=2.0, output_tps=10.0)))
    view = board.view("s", now=4.0)
    assert view["request"]["id"] == "main" and view["last"]["id"] == "sub"
    board.on_event(RequestFinished(_record("main", "s", started_at=1.0, backend_prompt_n=100, backend_cache_n=900,
                                           output_tokens=50)))
    view = board.view("s", now=5.0)
    assert view["request"] is None and view["last"]["id"] == "main" and view["last"]["context_tokens"] == 1050
    board.on_event(RequestStarted("c", 6.0, "POST", "/v1/messages/count_tokens", "m", "local", "s"))
    assert board.view("s")["request"] is None
    board.on_event(RequestFinished(_record("c", "s", path="/v1/messages/count_tokens")))
    assert board.view("s")["last"]["id"] == "main"  # a token count is not a model call
    assert board.view("other") == {"known": False, "request": None, "last": None, "in_flight": 0}
