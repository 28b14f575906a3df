"""Which backend of a group answers a request: session affinity over the healthy members.

An alias may name several backends (`"*": [box-a, box-b]`). Claude Code resends its whole
prompt every turn, and only the llama-server that served the session's last turn has it in
its cache (FACTS: 75 ms against 2,487 ms for 19,200 tokens), so a plain balancer that
sends turn 2 elsewhere throws the cache away. `GroupBalancer` keeps each Claude Code
session (`X-Claude-Code-Session-Id`; its subagents share the id) on one backend while that
backend is healthy, gives a new session the healthy member with the fewest active
sessions (ties by rendezvous hash of the session id, so the choice does not depend on
arrival order), and moves a session only when its backend fails: to the member that
answered instead. A member that comes back gets new sessions again; sessions that moved
stay where their cache now is.

LiteLLM 1.102.4's router has a session affinity of its own (`optional_pre_call_checks:
[session_affinity]`), but its pins live in the LiteLLM process (lost at each of ccbridge's
zero-loss LiteLLM restarts), the first pin wins for good (a session that failed over keeps
being sent back to its first backend, which is cold when it returns), and new sessions are
spread at random. So ccbridge chooses; LiteLLM fails over (the README, "Groups", has the
picture): each member of a group is the first choice of one LiteLLM model group
(`litellm_model`) that holds all members, the others at a higher `order`.

`BackendHealth` is what "healthy" means here: the newest of the monitor's `/health`
sample (every 2 s) and what real traffic saw (a connection the leg or the front could not
make; an answer).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.events import RequestRecord

GROUP_JOIN = "+"
"""Joins a group's members into its name (`box-a+box-b`); backend names cannot hold it."""
FIRST_CHOICE = "@"
"""Separates a group from the member a LiteLLM model group tries first (`box-a+box-b@box-b`)."""
ACTIVE_SESSION_S = 30 * 60.0
"""A session with a request in this many seconds counts as active on its backend (new sessions
go to the member with the fewest active ones)."""
MAX_SESSIONS = 10_000
"""Sessions remembered (least recently used dropped first)."""
MAX_PENDING = 4096
"""Requests in flight remembered between their choice and their record."""
UP_STATES = frozenset({"ok", "unknown"})
"""Monitor health states a member counts as up in (unknown: not probed yet; traffic will tell)."""


def group_name(members: Iterable[str]) -> str:
    """The name of the group of `members`, in their order: `box-a+box-b`."""
    return GROUP_JOIN.join(members)


def litellm_model(members: Sequence[str], first: str) -> str:
    """The LiteLLM model group that tries `first` first and fails over to the other members."""
    return f"{group_name(members)}{FIRST_CHOICE}{first}"


def failover_order(members: Sequence[str], first: str) -> list[str]:
    """`first`, then the other members in the order they follow it in the group (wrapping)."""
    at = members.index(first)
    return list(members[at:]) + list(members[:at])


def rendezvous(key: str, member: str) -> int:
    """Rendezvous (highest random weight) score of `member` for `key`: stable across restarts."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{member}".encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """Whether a backend takes new requests, why, and since when (unix time)."""

    up: bool
    reason: str | None = None
    since: float | None = None


@dataclass(slots=True)
class _Seen:
    """The newest thing real traffic saw of a backend: an answer (reason None) or a failure."""

    at: float
    reason: str | None


class BackendHealth:
    """The newest observation of each backend wins: the monitor's `/health` sample or traffic.

    `monitor(name)` gives (health state, detail, checked_at unix time) or None when the monitor has
    not sampled that backend. Traffic reports come from the backend leg (LiteLLM route) and the front
    (native route): `failed` when a connection could not be made, `answered` when the backend answered.
    """

    def __init__(self, monitor: Callable[[str], tuple[str, str | None, float | None] | None] = lambda name: None,
                 clock: Callable[[], float] = time.time) -> None:
        self._monitor = monitor
        self._clock = clock
        self._seen: dict[str, _Seen] = {}
        self._changed: dict[str, float] = {}
        self._last: dict[str, bool] = {}

    def failed(self, name: str, reason: str) -> None:
        """A call to `name` could not reach it (traffic; takes it out until it answers or the monitor sees it up)."""
        self._seen[name] = _Seen(self._clock(), reason)

    def answered(self, name: str) -> None:
        """`name` answered a call."""
        seen = self._seen.get(name)
        if seen is None or seen.reason is not None:
            self._seen[name] = _Seen(self._clock(), None)
        else:
            seen.at = self._clock()

    def of(self, name: str) -> MemberHealth:
        """The member's health now."""
        sample = self._monitor(name)
        seen = self._seen.get(name)
        up, reason = True, None
        if sample is not None:
            state, detail, checked_at = sample
            if state not in UP_STATES:
                up, reason = False, f"llama-server health: {state}" + (f" ({detail})" if detail else "")
            if seen is not None and (checked_at is None or seen.at >= checked_at):
                up, reason = seen.reason is None, seen.reason
        elif seen is not None:
            up, reason = seen.reason is None, seen.reason
        if self._last.get(name) != up:
            self._last[name] = up
            self._changed[name] = self._clock()
        return MemberHealth(up, reason, self._changed.get(name))

    def is_up(self, name: str) -> bool:
        return self.of(name).up


@dataclass(slots=True)
class _Session:
    member: str
    last: float


@dataclass(slots=True)
class _Pending:
    group: tuple[str, ...]
    session: str | None
    chosen: str


@dataclass(slots=True)
class _MemberCounts:
    answered: int = 0  # requests this member answered (status < 400)
    failed: int = 0  # requests that ended in an error with this member as the last one tried
    took_over: int = 0  # requests it answered that were meant for another member (failover)
    moved_in: int = 0  # sessions that moved to it from a failed member


@dataclass(slots=True)
class _GroupState:
    members: tuple[str, ...]
    counts: dict[str, _MemberCounts] = field(default_factory=dict)
    next_index: int = 0  # round-robin, and requests without a session


class GroupBalancer:
    """Chooses the member of a group for each request; learns from each finished request.

    `balance()` gives the mode: `session` (affinity, the default) or `round-robin`."""

    def __init__(self, health: BackendHealth, balance: Callable[[], str] = lambda: "session",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self._balance = balance
        self._clock = clock
        self._sessions: OrderedDict[tuple[tuple[str, ...], str], _Session] = OrderedDict()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._groups: dict[tuple[str, ...], _GroupState] = {}
        self.moves: list[tuple[str, str, str]] = []  # (session, from, to), newest last, bounded
        """Sessions moved off a failed member, for the log and the tests."""

    # -- choosing ----------------------------------------------------------
    def order(self, request_id: str, members: Sequence[str], session: str | None) -> list[str]:
        """The members to try for this request, the chosen one first (then the healthy ones, then the
        rest: a member the monitor thinks down may still answer)."""
        group = tuple(members)
        state = self._group(group)
        healthy = [m for m in group if self.health.is_up(m)] or list(group)
        if self._balance() == "round-robin" or session is None:
            chosen = healthy[state.next_index % len(healthy)]
            state.next_index += 1
        else:
            chosen = self._sticky(group, session, healthy)
        self._pending[request_id] = _Pending(group, session, chosen)
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        rest = sorted((m for m in group if m != chosen),
                      key=lambda m: (m not in healthy, -rendezvous(session or request_id, m)))
        return [chosen, *rest]

    def _sticky(self, group: tuple[str, ...], session: str, healthy: list[str]) -> str:
        now = self._clock()
        entry = self._sessions.get((group, session))
        if entry is not None and entry.member in healthy:
            entry.last = now
            self._sessions.move_to_end((group, session))
            return entry.member
        load = self.active_sessions(group)
        chosen = min(healthy, key=lambda m: (load.get(m, 0), -rendezvous(session, m)))
        if entry is not None:
            self._moved(group, session, entry.member, chosen)
        self._remember(group, session, chosen, now)
        return chosen

    def _remember(self, group: tuple[str, ...], session: str, member: str, now: float) -> None:
        self._sessions[(group, session)] = _Session(member, now)
        self._sessions.move_to_end((group, session))
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)

    def _moved(self, group: tuple[str, ...], session: str, old: str, new: str) -> None:
        if old == new:
            return
        self._group(group).counts.setdefault(new, _MemberCounts()).moved_in += 1
        self.moves.append((session, old, new))
        del self.moves[:-100]

    def active_sessions(self, group: tuple[str, ...]) -> dict[str, int]:
        """Sessions per member with a request in the last `ACTIVE_SESSION_S` seconds."""
        since = self._clock() - ACTIVE_SESSION_S
        counts: dict[str, int] = {}
        for (g, _session), entry in self._sessions.items():
            if g == group and entry.last >= since:
                counts[entry.member] = counts.get(entry.member, 0) + 1
        return counts

    def _group(self, group: tuple[str, ...]) -> _GroupState:
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _GroupState(group)
        return state

    # -- learning ----------------------------------------------------------
    def finished(self, record: RequestRecord) -> None:
        """A request ended: count it for the member that answered, and when that is not the one chosen
        (it failed over), the session now lives there."""
        pending = self._pending.pop(record.id, None)
        if pending is None:
            return
        state = self._group(pending.group)
        member = record.routed_backend if record.routed_backend in pending.group else pending.chosen
        counts = state.counts.setdefault(member, _MemberCounts())
        answered = record.status is not None and record.status < 400
        if not answered:
            counts.failed += 1
            return
        counts.answered += 1
        if member != pending.chosen and self._balance() == "session":  # (litellm: LiteLLM chose, not a failover)
            counts.took_over += 1
            if pending.session is not None:
                key = (pending.group, pending.session)
                entry = self._sessions.get(key)
                if entry is None or entry.member == pending.chosen:
                    self._moved(pending.group, pending.session, pending.chosen, member)
                    self._remember(pending.group, pending.session, member, self._clock())

    def forget(self, keep: Iterable[tuple[str, ...]]) -> None:
        """Drop groups (and their sessions) no alias names any more."""
        keep = set(keep)
        for group in [g for g in self._groups if g not in keep]:
            del self._groups[group]
        for key in [k for k in self._sessions if k[0] not in keep]:
            del self._sessions[key]

    # -- reporting ---------------------------------------------------------
    def snapshot(self, groups: Iterable[tuple[str, ...]]) -> list[dict[str, Any]]:
        """Per group: the balance mode and, per member, health, requests answered and their share,
        failovers and active sessions (the status API's `groups`)."""
        out = []
        for group in dict.fromkeys(tuple(g) for g in groups):
            state = self._group(group)
            sessions = self.active_sessions(group)
            total = sum(c.answered for c in state.counts.values())
            members = []
            for name in group:
                health = self.health.of(name)
                counts = state.counts.get(name, _MemberCounts())
                members.append({
                    "backend": name, "up": health.up, "reason": health.reason, "since": health.since,
                    "requests": counts.answered, "share": counts.answered / total if total else None,
                    "failed": counts.failed, "took_over": counts.took_over, "sessions_moved_in": counts.moved_in,
                    "sessions": sessions.get(name, 0),
                })
            out.append({"group": group_name(group), "members": members, "balance": self._balance(),
                        "requests": total})
        return out


def groups_of(rules: Iterable[Any]) -> list[tuple[str, ...]]:
    """The distinct groups (members in file order) the alias rules name."""
    return list(dict.fromkeys(tuple(r.members) for r in rules if len(r.members) > 1))
