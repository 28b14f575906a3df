"""Prompt-cache share per backend and per Claude Code session, folded from request records.

Claude Code resends its whole prompt every turn; llama-server is fast only
when it serves most of it from the slot's KV cache. The backend leg records
llama-server's `timings.cache_n` (served from cache) and `timings.prompt_n`
(processed) on each `RequestRecord` (the client's usage is the fallback); this module sums them and, when a later
turn of one session got little from the cache, says why when the records can
tell: another session (or a side request) used the slot in between and `-np`
is too small for that, or the previous turn filled the slot's context so it
shifted; or the model uses sliding-window attention and llama-server runs without
`--swa-full`, so a prompt that differs from the cached one before its end (a new
session's first turn, a subagent, a compacted one) could reuse none of it.
"""

from __future__ import annotations

import statistics
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from backend.events import RequestRecord
from backend.monitor.snapshot import CacheReport, CacheStats

LOW_SHARE = 0.5
"""A later turn serving less than this share of its prompt from cache counts as a miss."""
SIDE_REQUEST_RATIO = 0.5
"""A request whose prompt is under this share of its session's largest is a side request
(title, quick haiku call), not a turn of the conversation."""
CONTEXT_FULL = 0.9
"""A previous turn that used this share of the slot's context probably made it shift."""
COLD_SHARE = 0.05
"""A session's first turn serving less than this share after another session's prompt took nothing
from it (Claude Code sessions in one folder share their system prompt and tools)."""


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What the monitor knows of a backend's slots, for explaining misses."""

    total_slots: int | None = None
    n_ctx_slot: int | None = None
    cache_ram_mib: int | None = None
    """llama-server's --cache-ram when known from its command line (0: off; None: default or unknown)."""
    swa_window: int | None = None
    """The model's sliding window in tokens when it uses sliding-window attention (None: it does not,
    or its GGUF cannot be read here)."""
    swa_full: bool | None = None
    """llama-server runs with --swa-full (None: unknown)."""

    @property
    def swa_loses_prefix(self) -> bool:
        """A prompt that differs from the cached one before its end reuses none of it (SWA, no --swa-full)."""
        return bool(self.swa_window) and self.swa_full is not True


@dataclass(frozen=True, slots=True)
class Turn:
    """One request with llama-server timings, as folded here."""

    id: str
    at: float
    backend: str
    session_id: str | None
    prompt_tokens: int  # cache_n + prompt_n
    cached_tokens: int
    output_tokens: int | None
    prompt_tps: float | None
    ttft_ms: float | None
    conversation: bool  # part of the session's main conversation (not a side request)
    later: bool  # a conversation turn after the session's first
    other_sessions: tuple[str, ...] = ()  # other sessions that used the backend since this session's last turn
    side_between: int = 0  # side requests of this session in between
    prev_context: int | None = None  # prompt + output of this session's previous conversation turn
    first: bool = False  # the session's first conversation turn on this backend
    prev_other: tuple[str, int] | None = None  # (session, prompt + output) of the backend's previous
    # request when another session made it: what the slot held when this turn arrived
    miss_reason: str | None = None  # what the front named (proxy.misses): the prompt's own difference

    @property
    def share(self) -> float | None:
        """Cached / prompt tokens of this turn."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


def _short(session: str) -> str:
    return session if len(session) <= 12 else session[:8]


def _swa_cause(facts: SlotFacts) -> str:
    flag = ("llama-server runs without --swa-full, so it" if facts.swa_full is False else
            "unless llama-server runs with --swa-full (its flags cannot be read here), it")
    return (f"the model uses sliding-window attention ({facts.swa_window}-token window) and {flag} keeps only the "
            "last window of those layers: a prompt that differs from the cached one before its end (a new Claude "
            "Code session, a subagent, a compacted prompt) is read again in full")


SWA_FIX = ("restart llama-server with --swa-full (the sliding-window advice says how much KV memory it adds); "
           "new sessions and subagents then reuse the prompt start they share")


def explain_cold_start(turn: Turn, facts: SlotFacts) -> tuple[str, str] | None:
    """(reason, fix) for a session's first turn that took nothing from the previous session's prompt,
    when sliding-window attention explains it; None when it does not."""
    if turn.prev_other is None or not facts.swa_loses_prefix or not facts.swa_window:
        return None
    other, tokens = turn.prev_other
    if tokens <= facts.swa_window:
        return None  # the whole previous prompt fit in the window: nothing was dropped
    share = round((turn.share or 0.0) * 100)
    return (f"a new session's first turn served {share}% of its {turn.prompt_tokens} prompt tokens from cache "
            f"right after session {_short(other)}'s {tokens}-token prompt on backend '{turn.backend}': "
            + _swa_cause(facts), SWA_FIX)


def explain_miss(turn: Turn, facts: SlotFacts) -> tuple[str, str]:
    """(reason, fix) for a later turn that got little from the cache."""
    slots = facts.total_slots
    n_ctx = facts.n_ctx_slot
    share = turn.share or 0.0
    head = f"later turn served {round(share * 100)}% of its prompt from cache" if share else \
        "later turn served nothing from cache"
    if turn.prev_context and n_ctx and turn.prev_context >= CONTEXT_FULL * n_ctx:
        return (f"{head}: the previous turn used {turn.prev_context} of the slot's {n_ctx} tokens, so "
                "llama-server shifted the context and the cached prefix no longer matched",
                f"give each slot more context: restart llama-server with a larger -c (now {n_ctx} per slot"
                f"{f' x {slots} slots' if slots else ''}) or fewer -np; or /compact the session earlier")
    if turn.other_sessions:
        n_sessions = len(set(turn.other_sessions)) + 1
        others = ", ".join(_short(s) for s in sorted(set(turn.other_sessions)))
        ram = ("its host-memory prompt cache is off (--cache-ram 0): turn it back on (drop --cache-ram 0; "
               "the default keeps 8192 MiB) so a prompt pushed out of the slot comes back from memory"
               if facts.cache_ram_mib == 0 else
               "or raise --cache-ram (host memory that keeps prompts pushed out of a slot; default 8192 MiB)")
        if slots is not None and n_sessions > slots:
            want = n_sessions
            per = f" and -c {want * n_ctx} to keep {n_ctx} tokens per slot" if n_ctx else ""
            return (f"{head}: {n_sessions - 1} other session(s) ({others}) used backend '{turn.backend}' between "
                    f"this session's turns and it has only {slots} slot(s) (-np {slots}), so their prompts "
                    "replaced this session's cached one",
                    f"restart llama-server with -np {want}{per}; {ram}; or run one Claude Code session per "
                    "backend")
        swa = f"; {SWA_FIX}" if facts.swa_loses_prefix else ""
        return (f"{head}: other session(s) ({others}) used backend '{turn.backend}' in between; llama-server may "
                "have given this turn a slot that held another session's prompt",
                "keep one Claude Code session per backend, or give it more slots (-np) with -c scaled to match"
                + swa)
    if turn.side_between and (slots is None or slots <= 1):
        return (f"{head}: {turn.side_between} side request(s) of this session (title, sub-agent or quick "
                "model call with a different prompt) used the only slot in between",
                "restart llama-server with -np 2 (and -c doubled) so side requests get their own slot")
    if facts.swa_loses_prefix:
        return (f"{head}: the prompt changed before its end (a subagent, compaction, a changed system prompt or "
                "tool list) and " + _swa_cause(facts), SWA_FIX)
    return (f"{head}: not clear from here: no other request ran in between and the context was not full; "
            "the start of the prompt probably changed (compaction, a changed system prompt or tool list)",
            "nothing if it happens once; if every turn misses, check that nothing in front rewrites the prompt")


@dataclass
class _Session:
    turns: deque[Turn]
    max_prompt: int = 0
    last_conversation: dict[str, Turn] = field(default_factory=dict)  # per backend


class CacheFolder:
    """Folds request records into cache shares; thread-safe (records arrive from the event bus)."""

    def __init__(self, max_sessions: int = 200, max_turns: int = 100, backend_log: int = 2000) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._by_backend: dict[str, deque[Turn]] = {}
        self._max_sessions = max_sessions
        self._max_turns = max_turns
        self._backend_log = backend_log
        self.version = 0
        """Grows with every folded record: readers rebuild their report when it changed."""

    def add(self, record: RequestRecord) -> None:
        """Fold one finished request.

        llama-server's own timings (`backend_prompt_n`, `backend_cache_n`) are
        used when the leg saw them; otherwise the Anthropic usage the client got
        (`input_tokens` new, `cache_read_tokens` cached), as with an external
        LiteLLM that calls the backend directly. Records with neither are ignored.
        """
        if not record.routed_backend:
            return
        if record.backend_prompt_n is not None:
            cached = record.backend_cache_n or 0
            prompt = record.backend_prompt_n + cached
        elif record.input_tokens is not None and record.cache_read_tokens is not None:
            cached = record.cache_read_tokens
            prompt = record.input_tokens + cached
        else:
            return
        if prompt <= 0:
            return
        with self._lock:
            log = self._by_backend.setdefault(record.routed_backend, deque(maxlen=self._backend_log))
            sid = record.session_id
            session = self._session(sid) if sid else None
            conversation = True
            later = False
            others: tuple[str, ...] = ()
            side = 0
            prev_ctx = None
            first = False
            before = log[-1] if log else None
            prev_other = None
            if before is not None and before.session_id != sid:
                prev_other = (before.session_id or "(no session)",
                              before.prompt_tokens + (before.output_tokens or 0))
            if session is not None:
                conversation = prompt >= SIDE_REQUEST_RATIO * session.max_prompt
                prev = session.last_conversation.get(record.routed_backend)
                later = conversation and prev is not None
                first = conversation and prev is None
                if later and prev is not None:
                    since = prev.at
                    others = tuple(t.session_id or "(no session)" for t in log
                                   if t.at > since and t.at < record.started_at and t.session_id != sid)
                    side = sum(1 for t in session.turns
                               if not t.conversation and since < t.at < record.started_at
                               and t.backend == record.routed_backend)
                    prev_ctx = prev.prompt_tokens + (prev.output_tokens or 0)
            turn = Turn(
                id=record.id, at=record.started_at, backend=record.routed_backend, session_id=sid,
                prompt_tokens=prompt, cached_tokens=cached, output_tokens=record.output_tokens,
                prompt_tps=record.backend_prompt_tps, ttft_ms=record.ttft_ms, conversation=conversation,
                later=later, other_sessions=others, side_between=side, prev_context=prev_ctx,
                first=first, prev_other=prev_other, miss_reason=record.miss_reason,
            )
            log.append(turn)
            if session is not None:
                session.turns.append(turn)
                session.max_prompt = max(session.max_prompt, prompt)
                if conversation:
                    session.last_conversation[record.routed_backend] = turn
            self.version += 1

    def add_many(self, records: Iterable[RequestRecord]) -> None:
        """Fold records oldest first (e.g. from the history store at start)."""
        for record in sorted(records, key=lambda r: r.started_at):
            self.add(record)

    def _session(self, sid: str) -> _Session:
        session = self._sessions.get(sid)
        if session is None:
            session = _Session(deque(maxlen=self._max_turns))
            self._sessions[sid] = session
            while len(self._sessions) > self._max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(sid)
        return session

    def report(self, facts: Mapping[str, SlotFacts] | None = None, max_sessions: int = 50) -> CacheReport:
        """Per-backend and per-session rows (newest sessions first)."""
        facts = facts or {}
        with self._lock:
            backends = {name: list(log) for name, log in self._by_backend.items()}
            sessions = [(sid, list(s.turns)) for sid, s in reversed(self._sessions.items())][:max_sessions]
        by_backend = tuple(_stats(name, name, None, turns, facts) for name, turns in sorted(backends.items()))
        by_session = tuple(_stats(sid, turns[-1].backend, sid, turns, facts) for sid, turns in sessions if turns)
        by_session = tuple(sorted(by_session, key=lambda s: -(s.last_at or 0)))
        return CacheReport(by_backend=by_backend, by_session=by_session)


_NAMED_FIX = ("nothing if it happened once (a restart, a changed prompt); if it repeats, the request detail "
              "names each miss")


def _share(cached: int, prompt: int) -> float | None:
    return cached / prompt if prompt else None


def _stats(key: str, backend: str | None, session_id: str | None, turns: list[Turn],
           facts: Mapping[str, SlotFacts]) -> CacheStats:
    prompt = sum(t.prompt_tokens for t in turns)
    cached = sum(t.cached_tokens for t in turns)
    later = [t for t in turns if t.later]
    tps = [t.prompt_tps for t in turns if t.prompt_tps]
    ttfts = [t.ttft_ms for t in turns if t.ttft_ms is not None]
    low = [t for t in later if (t.share or 0.0) < LOW_SHARE]
    firsts = [t for t in turns if t.first and t.prev_other is not None]
    missed = [t for t in firsts if (t.share or 0.0) < COLD_SHARE]
    explained: list[tuple[float, str, str]] = []
    if low:
        last_low = low[-1]
        explained.append((last_low.at, *explain_miss(last_low, facts.get(last_low.backend, SlotFacts()))))
    for turn in reversed(missed):
        why = explain_cold_start(turn, facts.get(turn.backend, SlotFacts()))
        if why is not None:
            explained.append((turn.at, *why))
            break
    named = [t for t in turns if t.miss_reason]
    # a slot another session took is explained better above: with the slot count and the fix (-np, --cache-ram)
    if named and low and "slot taken by" in (named[-1].miss_reason or ""):
        named = []
    if named:  # compared with the earlier prompt itself: more precise than the heuristics above
        explained.append((named[-1].at + 1e-6, named[-1].miss_reason or "", _NAMED_FIX))
    reason = fix = None
    if explained:
        _at, reason, fix = max(explained, key=lambda e: e[0])
    last = turns[-1]
    return CacheStats(
        key=key,
        backend=backend,
        session_id=session_id,
        requests=len(turns),
        prompt_tokens=prompt,
        cached_tokens=cached,
        share=_share(cached, prompt),
        last_share=last.share,
        later_share=_share(sum(t.cached_tokens for t in later), sum(t.prompt_tokens for t in later)),
        prompt_tps=statistics.fmean(tps) if tps else None,
        ttft_ms=statistics.median(ttfts) if ttfts else None,
        last_ttft_ms=last.ttft_ms,
        low_turns=len(low),
        first_share=_share(sum(t.cached_tokens for t in firsts), sum(t.prompt_tokens for t in firsts)),
        missed_first_turns=len(missed),
        reason=reason,
        fix=fix,
        last_at=last.at,
    )
