"""An alias that names two llama-servers: sessions spread, keep their cache, survive a crash.

The real chain: Claude Code 2.1.332 -> ccbridge -> LiteLLM -> backend leg -> two llama-servers
(the tiny model, `-np 2`), `"*": [box-a, box-b]`. Four sessions, each in its own folder, take
turns (`claude -p`, then `claude -p -c`) in a rotating order; after round 2 the server most of
them are on is killed (SIGKILL), rounds 3 and 4 run on, then the server is started again, a
fifth session begins and the four take a fifth turn (`tests/support/groups.py`). The same flow with `groups: {balance:
round-robin}` (two sessions, two rounds) shows what a plain balancer costs. `bench/groups.py`
prints the figures side by side; this checks the outcomes.

Then, without Claude Code: a group of two native backends fails over in the front when one is
down; and a request whose client hung up while one member was reading its prompt is never
started on the other member (LiteLLM's fallback call is refused by the leg).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from backend.proxy.balance import rendezvous
from tests.support.claude import CLAUDE_VERSIONS
from tests.support.config import chain_config
from tests.support.groups import MEMBERS, GroupRun, Turn, group_chain, kill, run_groups
from tests.support.llama import LlamaServer, free_port
from tests.support.serve import ServeProcess, wait_for
from tests.support.sessions import served_turns

pytestmark = pytest.mark.e2e

VERSION = CLAUDE_VERSIONS[-1]
WARM = 0.95


@pytest.fixture(scope="module")
def affinity(tmp_path_factory, tiny_model) -> GroupRun:
    tmp = tmp_path_factory.mktemp("groups-session")
    with group_chain(tmp, tiny_model) as (serve, servers):
        return run_groups(VERSION, serve, servers, tmp / "homes", rounds=4, kill_after=2, revive=True, log=print)


@pytest.fixture(scope="module")
def round_robin(tmp_path_factory, tiny_model) -> GroupRun:
    tmp = tmp_path_factory.mktemp("groups-rr")
    with group_chain(tmp, tiny_model, balance="round-robin") as (serve, servers):
        # three rounds: Claude Code asks again after an empty answer (the tiny model's), and such a retry
        # can leave every second turn on its first server (round-robin counts requests); the rotating
        # order then puts a session's turns back to back in round 3
        return run_groups(VERSION, serve, servers, tmp / "homes", sessions=2, rounds=3, balance="round-robin",
                          log=print)


def test_no_request_failed_even_when_a_server_was_killed(affinity):
    assert affinity.killed in MEMBERS and len(affinity.turns) == 4 * 5 + 1
    assert all(t.ok for t in affinity.turns), [(t.session, t.round, t.exit_code, t.records) for t in affinity.turns]
    assert all(r["status"] == 200 and r["error"] is None for r in affinity.records), affinity.records
    # one turn per session per round on the same Claude Code session, `-c` included
    for session in range(4):
        ids = {r["session_id"] for t in affinity.of(session) for r in t.records}
        assert len(ids) == 1, (session, ids)


def test_new_sessions_spread_over_both_servers(affinity):
    first = [t.backend for t in affinity.turns if t.round == 1 and t.session < 4]
    assert sorted(first) == sorted(MEMBERS * 2), first


def test_sessions_keep_their_server_and_its_cache(affinity):
    """Every later turn on the server of the session's previous turn served >= 95 % of its prompt
    from llama-server's cache; before the kill no session changed servers."""
    warm = affinity.warm_turns()
    assert len(warm) >= 4 * 4 - 2, [(t.session, t.round, t.backend) for t in affinity.turns]
    low = [(t.session, t.round, t.backend, t.share) for t in warm if (t.share or 0) < WARM]
    assert not low, low
    assert all(t.round > affinity.kill_round for t in affinity.moved_turns())  # type: ignore[operator]


def test_the_killed_servers_sessions_moved_once_then_warm_again(affinity):
    killed, other = affinity.killed, next(m for m in MEMBERS if m != affinity.killed)
    were_there = {t.session for t in affinity.turns if t.round == 2 and t.backend == killed}
    assert len(were_there) == 2, were_there
    for session in were_there:
        third, fourth, fifth = (t for t in affinity.of(session) if t.round in (3, 4, 5))
        assert third.backend == fourth.backend == other
        assert (fourth.share or 0) >= WARM, fourth.records  # one cold turn, then warm again
        # the killed server is back (round 5): the session stays where its cache now is
        assert fifth.backend == other and (fifth.share or 0) >= WARM, fifth.records
    assert {t.session for t in affinity.moved_turns()} == were_there
    moved_in = {m["backend"]: m for m in affinity.status["groups"][0]["members"]}[other]["sessions_moved_in"]
    assert moved_in == 2


def test_a_revived_server_takes_new_sessions(affinity):
    newcomer = affinity.of(4)
    assert [t.backend for t in newcomer] == [affinity.killed]


def test_llama_servers_served_what_the_records_say(affinity):
    """ccbridge's records name the backend that answered: each server's own log (the killed one's
    before and after its restart) served exactly those requests, with those cached tokens."""
    for name in MEMBERS:
        answered = sorted((r for r in affinity.records if r["routed_backend"] == name), key=lambda r: r["started_at"])
        served = served_turns(affinity.logs[name])
        # llama-server's own timings, or (when the leg missed them, about 1 request in 20) its usage via LiteLLM
        cached = [r["backend_cache_n"] if r["backend_cache_n"] is not None else (r["cache_read_tokens"] or 0)
                  for r in answered]
        assert [t.cached_tokens for t in served] == cached, name


def test_status_and_metrics_show_each_backends_share_health_and_cache(affinity):
    (group,) = affinity.status["groups"]
    assert group["group"] == "box-a+box-b" and group["balance"] == "session"
    members = {m["backend"]: m for m in group["members"]}
    assert all(m["up"] for m in members.values())  # the killed one is back
    assert sum(m["requests"] for m in members.values()) == len(affinity.records)
    assert abs(sum(m["share"] for m in members.values()) - 1.0) < 1e-9
    assert all(0 < m["cache_share"] <= 1 for m in members.values())
    assert members[affinity.killed]["sessions"] == 1  # the newcomer (the others moved away and stayed)
    for family in ("ccbridge_group_backend_up", "ccbridge_group_backend_requests_total",
                   "ccbridge_group_backend_request_share", "ccbridge_group_backend_cache_share"):
        assert f'{family}{{backend="{affinity.killed}",group="box-a+box-b"}}' in affinity.metrics, family


def test_round_robin_loses_the_cache_that_affinity_keeps(round_robin, affinity):
    """The contrast: a plain balancer sends later turns to the other server, which holds only the
    prompt start the sessions share. (It counts requests: a retry by Claude Code in between can
    send a later turn back to its first server, so not every later turn moves; and a retry can have
    sent the session's prompt to the other server already, so a turn counts as moved only on a
    server that no request of its session reached before.)"""
    assert all(t.ok for t in round_robin.turns)

    def reached(turn: Turn) -> set[str]:
        mine = round_robin.of(turn.session)
        return {r["routed_backend"] for t in mine[:mine.index(turn)] for r in t.records}

    later = [t for t in round_robin.turns if t.round >= 2]
    moved = [t for t in later if t.backend not in reached(t)]
    assert moved, [(t.session, [r["routed_backend"] for r in t.records]) for t in round_robin.turns]
    assert max(t.share or 0 for t in moved) < 0.5 <= min(t.share or 0 for t in affinity.warm_turns())


# -- without Claude Code -------------------------------------------------------------------------
class Stall(ThreadingHTTPServer):
    """A backend whose /health answers ok but whose completions never answer: a long prompt being read.
    `posts` counts the calls that reached it."""

    daemon_threads = True

    def __init__(self) -> None:
        outer = self
        self.posts = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                outer.posts += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(30)  # the caller gives up first

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def small_groups(tmp_path_factory, tiny_model) -> Iterator[tuple[ServeProcess, dict[str, LlamaServer], Stall]]:
    tmp = tmp_path_factory.mktemp("groups-small")
    servers = {name: LlamaServer(tiny_model, ctx=8192, port=free_port(), extra_args=("--slots",))
               for name in ("good", "n-a", "n-b")}
    stall = Stall()
    try:
        for server in servers.values():
            server.start()
        config = tmp / "ccbridge.yaml"
        chain_config(config, {"stall": {"api_base": f"http://127.0.0.1:{stall.port}/v1", "model": "m"},
                              "good": {"api_base": servers["good"].api_base},
                              "n-a": {"api_base": servers["n-a"].api_base, "route": "native"},
                              "n-b": {"api_base": servers["n-b"].api_base, "route": "native"}},
                     aliases={"claude-native-*": ["n-a", "n-b"], "*": ["stall", "good"]})
        with ServeProcess(config, {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}) \
                as serve:
            yield serve, servers, stall
    finally:
        stall.close()
        for server in servers.values():
            server.stop()


def _ask(serve: ServeProcess, model: str, session: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{serve.url}/v1/messages", timeout=timeout, trust_env=False,
                      headers={"x-api-key": "k", "x-claude-code-session-id": session},
                      json={"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})


def _record(serve: ServeProcess, session: str) -> dict:
    got = wait_for(lambda: [r for r in serve.requests(50) if r["session_id"] == session], 10)
    assert got, serve.requests(5)
    return got[0]


def test_a_native_group_fails_over_in_the_front(small_groups):
    serve, servers, _stall = small_groups
    sessions = [f"native-session-{i}" for i in range(4)]
    first = {}
    for s in sessions:
        assert _ask(serve, "claude-native-1", s).status_code == 200
        first[s] = _record(serve, s)["routed_backend"]
    assert sorted(first.values()) == ["n-a", "n-a", "n-b", "n-b"]
    kill(servers["n-a"])  # before the monitor notices: the front finds out by connecting
    for s in sessions:
        resp = _ask(serve, "claude-native-1", s)
        assert resp.status_code == 200, resp.text
        assert _record(serve, s)["routed_backend"] == "n-b"
    members = {m["backend"]: m for g in serve.status()["groups"] if g["group"] == "n-a+n-b" for m in g["members"]}
    assert members["n-a"]["up"] is False and members["n-a"]["reason"], members["n-a"]
    assert members["n-b"]["sessions"] == 4


def test_a_hung_up_request_is_not_started_on_another_member(small_groups):
    """The client leaves while `stall` reads the prompt: its call is closed, and LiteLLM's fallback
    to `good` (the same request, the same pairing id) is refused by the leg: `good` never starts."""
    serve, servers, stall = small_groups
    session = next(f"hangup-{i}" for i in range(100)
                   if rendezvous(f"hangup-{i}", "stall") > rendezvous(f"hangup-{i}", "good"))
    refused_before = serve.status()["services"][0]["refused_retries"]
    # The client leaves once `stall` has the request (a fixed 2 s timeout once left before LiteLLM, on its
    # first call in a loaded CI run, had reached `stall` at all).
    body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    with socket.create_connection(("127.0.0.1", int(serve.url.rsplit(":", 1)[1])), timeout=60) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"x-api-key: k\r\nx-claude-code-session-id: %s\r\ncontent-length: %d\r\n\r\n%s"
                     % (session.encode(), len(body), body))
        wait_for(lambda: stall.posts >= 1, 60)
    record = _record(serve, session)
    assert record["client_hung_up"] and record["routed_backend"] == "stall" and stall.posts == 1
    time.sleep(3)  # time for LiteLLM to try the next member
    assert serve.status()["services"][0]["refused_retries"] >= refused_before + 1
    assert "launch_slot_" not in servers["good"].log_text()  # the model never started there
