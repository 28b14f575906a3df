"""Four Claude Code sessions through ccbridge on a group of two llama-servers: the flow behind
`bench/groups.py` and `tests/e2e/test_groups.py`.

Two llama-servers (the tiny model, `-np 2`, one fixed port each) are backends `box-a` and
`box-b`; the catch-all alias names both (`"*": [box-a, box-b]`). Four sessions, each in a
folder (HOME) of its own, take turns in a rotating order (A B C D, then B C D A, ..., as
independent users do; with a fixed A B C D cycle over two servers, per-request round-robin
would send each session to the same server every time by accident): round 1 is `claude -p`
in each folder, every later round `claude -p -c` (which continues the folder's last session).
After `kill_after` rounds one server is killed (SIGKILL, as a crash); with `revive`, it is
started again on its port after the last round, a fifth session starts, and the four take
one more turn each (do the sessions that moved stay where their cache now is?). The outcome is
read from ccbridge's records: which backend answered each turn, and how much of its prompt
llama-server served from its cache (`cache_share`, from llama-server's own `timings`, which
the backend leg reads).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import config as cfg
from tests.support.claude import run_claude
from tests.support.llama import LlamaServer, free_port
from tests.support.serve import ServeProcess
from tests.support.sessions import served_turns

MEMBERS = ("box-a", "box-b")
FIRST_PROMPT = "Hello world"
LATER_PROMPT = "Say more."
# The tiny model answers in random bytes (50-400 tokens), which come back in the next prompt as up
# to three times as many tokens (U+FFFD for each invalid byte) that llama-server never cached: up to
# 7 % of a ~18k-token prompt. A nudge towards its end-of-sequence token (id 2) keeps answers at
# 5-60 tokens (measured), so the share measures the balancing, not the answer's length. (Capping
# max_tokens instead makes Claude Code stop with "response exceeded the output token maximum".)
SHORT_ANSWERS = ("--logit-bias", "2+0.5")


@dataclass
class Turn:
    """One `claude -p` run of one session and ccbridge's record of its model request."""

    session: int  # 0..3 (4: the session started after the revival)
    round: int  # 1-based
    exit_code: int
    records: list[dict[str, Any]]  # the run's /v1/messages requests, oldest first (Claude Code asks
    # again after an empty answer, which the tiny model sometimes gives)
    seconds: float

    @property
    def record(self) -> dict[str, Any] | None:
        """The turn's first request: the one that met the backend's cache as the last turn left it."""
        return self.records[0] if self.records else None

    @property
    def backend(self) -> str | None:
        return self.record["routed_backend"] if self.record else None

    @property
    def share(self) -> float | None:
        """ccbridge's `cache_share`; where the record has none (on the native route llama-server
        sometimes leaves out the event with the usage), the one llama-server's log gives."""
        if not self.record:
            return None
        share = self.record["cache_share"]
        return share if share is not None else self.record.get("log_cache_share")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and bool(self.records) and all(r["status"] == 200 for r in self.records)


@dataclass
class GroupRun:
    """Everything one flow left behind."""

    balance: str
    turns: list[Turn] = field(default_factory=list)
    killed: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)  # every /v1/messages record, oldest first
    metrics: str = ""
    kill_round: int | None = None  # the round after which `killed` was killed
    revived_round: int | None = None  # the round after `killed` was started again
    logs: dict[str, str] = field(default_factory=dict)  # each llama-server's log (the killed one: both lives)

    def of(self, session: int) -> list[Turn]:
        return [t for t in self.turns if t.session == session]

    def warm_turns(self) -> list[Turn]:
        """Turns 2+ of every session that the backend of its previous turn answered (a session's first
        turn on the backend it moved to after the kill is cold by nature: `moved_turns`)."""
        return [t for t in self.turns if (prev := self.previous(t)) is not None and prev.backend == t.backend]

    def moved_turns(self) -> list[Turn]:
        """Turns answered by another backend than the session's previous turn."""
        return [t for t in self.turns if (prev := self.previous(t)) is not None and prev.backend != t.backend]

    def previous(self, turn: Turn) -> Turn | None:
        mine = self.of(turn.session)
        at = mine.index(turn)
        return mine[at - 1] if at else None


def config_text(ports: dict[str, int], *, route: str = "litellm", balance: str = "session") -> str:
    native = {"route": "native"} if route == "native" else {}
    return cfg.config_text(proxy=cfg.loopback(), litellm={"port": free_port()},
                           backends={name: {"api_base": f"http://127.0.0.1:{port}/v1", **native}
                                     for name, port in ports.items()},
                           aliases={"*": list(ports)}, groups={"balance": balance},
                           # these runs hold ccbridge's records against each llama-server's own log, one to
                           # one: the warm-up a restarted member gets (replays, not requests;
                           # tests/e2e/test_warmup.py) stays off
                           cache={"warm": False})


@contextmanager
def group_chain(tmp: Path, model: Path, *, balance: str = "session", route: str = "litellm",
                parallel: int = 2, ctx: int = 131072) -> Iterator[tuple[ServeProcess, dict[str, LlamaServer]]]:
    """Two llama-servers of `model` on fixed ports and a `ccbridge serve` whose catch-all alias names both."""
    servers = {name: LlamaServer(model, ctx=ctx, parallel=parallel, port=free_port(),
                                 extra_args=("--slots", "--metrics", *SHORT_ANSWERS)) for name in MEMBERS}
    started: list[LlamaServer] = []
    try:
        for server in servers.values():
            started.append(server.start())
        config = tmp / "ccbridge.yaml"
        config.write_text(config_text({n: s.port for n, s in servers.items()}, route=route, balance=balance))
        env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "config"), "CCBRIDGE_DATA_DIR": str(tmp / "data")}
        with ServeProcess(config, env) as serve:
            yield serve, servers
    finally:
        for server in servers.values():
            server.stop()


def kill(server: LlamaServer) -> None:
    """SIGKILL, as a crash; the process is reaped and its log kept."""
    os.kill(server.pid, signal.SIGKILL)
    server.stop()


def _records_after(serve: ServeProcess, since: float, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The /v1/messages records that started after `since`, oldest first (each is written a moment
    after its answer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in serve.requests(20) if r["path"] == "/v1/messages" and r["started_at"] >= since]
        if got or time.monotonic() > deadline:
            return sorted(got, key=lambda r: r["started_at"])
        time.sleep(0.1)


def run_groups(version: str, serve: ServeProcess, servers: dict[str, LlamaServer], homes: Path, *,
               sessions: int = 4, rounds: int = 4, kill_after: int | None = None, revive: bool = False,
               balance: str = "session", log: Callable[[str], None] = lambda line: None) -> GroupRun:
    """`rounds` rounds of one turn per session, interleaved in a rotating order (A1 B1 C1 D1, B2 C2
    D2 A2, ...); after round `kill_after` the server most sessions are on is killed; with `revive`
    it is started again after the last round, one new session runs, then one more round of the
    others. Returns the turns and ccbridge's records."""
    run = GroupRun(balance)
    earlier: dict[str, str] = {}  # the killed server's log before its restart

    def turn(session: int, round_: int) -> None:
        since = time.time()
        t0 = time.monotonic()
        result = run_claude(version, serve.url, FIRST_PROMPT if round_ == 1 else LATER_PROMPT,
                            home=homes / f"session-{session}", timeout=240,
                            args=() if round_ == 1 else ("-c",),
                            extra_env={"ANTHROPIC_MODEL": "claude-opus-ccbridge"})
        records = _records_after(serve, since)
        run.turns.append(Turn(session, round_, result.returncode, records, time.monotonic() - t0))
        done = run.turns[-1]
        log(f"session {session} round {round_}: exit {result.returncode}, {done.backend}, "
            f"cache {done.share if done.share is None else round(done.share, 3)}, {done.seconds:.1f} s")
        if result.returncode != 0:
            log(f"  claude stderr: {result.stderr[-600:]}")

    for round_ in range(1, rounds + 1):
        for at in range(sessions):  # a rotating order: A B C D, then B C D A, ...
            turn((at + round_ - 1) % sessions, round_)
        if kill_after == round_:
            on = [t.backend for t in run.turns if t.round == round_]
            run.killed = max(servers, key=on.count)
            run.kill_round = round_
            log(f"killing {run.killed} (pid {servers[run.killed].pid})")
            kill(servers[run.killed])
            earlier[run.killed] = servers[run.killed].log_text()
    if revive and run.killed:
        servers[run.killed].start()
        deadline = time.monotonic() + 20  # the monitor samples every 2 s: wait until ccbridge sees it up
        while time.monotonic() < deadline and not _up(serve, run.killed):
            time.sleep(0.2)
        turn(sessions, 1)
        run.revived_round = rounds + 1
        for at in range(sessions):
            turn((at + rounds) % sessions, rounds + 1)
    run.status = serve.status()
    run.records = sorted((r for r in serve.requests(200) if r["path"] == "/v1/messages"),
                         key=lambda r: r["started_at"])
    run.metrics = httpx.get(f"{serve.url}/metrics", timeout=10, trust_env=False).text
    run.logs = {name: earlier.get(name, "") + server.log_text() for name, server in servers.items()}
    _add_log_shares(run)
    return run


def _add_log_shares(run: GroupRun) -> None:
    """Give each record the cache share llama-server's own log has for it (`log_cache_share`): the
    requests each server served, in order, are the records naming it, in order."""
    for name, text in run.logs.items():
        served = served_turns(text)
        mine = sorted((r for t in run.turns for r in t.records if r["routed_backend"] == name),
                      key=lambda r: r["started_at"])
        if len(served) == len(mine):
            for record, turn in zip(mine, served, strict=True):
                record["log_cache_share"] = turn.share


def _up(serve: ServeProcess, backend: str) -> bool:
    for group in serve.status().get("groups", []):
        for member in group["members"]:
            if member["backend"] == backend:
                return bool(member["up"])
    return False
