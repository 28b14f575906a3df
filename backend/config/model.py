"""The typed configuration ccbridge runs on, built from `ccbridge.yaml`.

Frozen dataclasses: a running bridge holds one `Config` and swaps it whole
when the file or the API changes it, so readers never see half an edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The front proxy Claude Code talks to."""

    host: str = "127.0.0.1"
    """Address to listen on. Loopback by default; anything else needs `api_key`."""
    port: int = 8082
    """Port for Claude Code's ANTHROPIC_BASE_URL."""
    api_key: str | None = None
    """If set, clients must send it as `x-api-key` or `Authorization: Bearer`."""
    upstream_timeout: float = 600.0
    """Seconds to wait for LiteLLM's first byte (long prompts on a CPU are slow)."""
    max_body_mb: float = 32.0
    """Largest request body accepted, in MiB (Claude Code's turns are ~50-100 KB)."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (besides loopback and `host` itself) that clients may address ccbridge by, e.g. the
    machine's name for a bind other machines reach. Any other name in a request's `Host` is refused:
    that is what a web page using DNS rebinding sends."""


@dataclass(frozen=True, slots=True)
class LiteLLMConfig:
    """LiteLLM, either started and supervised by ccbridge or already running."""

    port: int = 4000
    """Port for the LiteLLM that ccbridge starts on 127.0.0.1."""
    url: str | None = None
    """Use this already running LiteLLM (or any Anthropic-compatible server); start nothing."""
    api_key: str | None = None
    """Key for the server at `url` (otherwise the client's own key is passed through)."""


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One OpenAI-compatible model server (usually llama-server)."""

    name: str
    api_base: str
    """Base URL including /v1, e.g. http://127.0.0.1:8080/v1."""
    model: str = "auto"
    """Model id to ask for; `auto` = the first id from GET {api_base}/models."""
    max_tokens: int | None = None
    """Cap on max_tokens (Claude Code asks for 64000-128000)."""
    api_key: str | None = None
    """Key the backend itself wants (llama-server --api-key); never logged."""
    command: str | None = None
    """Optional llama-server command line: ccbridge starts and supervises it (service
    `llama:<name>`; --host/--port are added from api_base when missing)."""
    route: str = "litellm"
    """`litellm` (default): through LiteLLM. `native`: straight to llama-server's own
    Anthropic endpoint (/v1/messages), skipping LiteLLM."""
    pin_slots: bool = False
    """Ask llama-server for a slot per Claude session and prompt family (`id_slot`, LiteLLM
    route only: llama-server's /v1/messages drops it). Off by default: measured with real
    Claude Code sessions and subagents (bench/cache.py), llama-server's own choice (prompt
    similarity, plus its host-RAM prompt cache) kept every target, and pinning lost the
    cache with `-np auto`, where idle slots are cleared."""
    repair_tool_calls: bool = True
    """Turn a tool call the model wrote as JSON text (small models do: a ```json fence, no
    `<tool_call>` tags) into the `tool_use` block it meant, when the name is a tool the request
    offered and the arguments pass its schema; anything else stays text. False: pass text as is."""


@dataclass(frozen=True, slots=True)
class AliasRule:
    """Claude model name pattern -> backend (or backend/model)."""

    pattern: str
    target: str
    backend: str
    model: str | None = None
    """Explicit model from a `backend/model` target; None means the backend's model."""
    members: tuple[str, ...] = ()
    """The backends of a group target (`[box-a, box-b]`), in file order; empty for one backend.
    `backend` is then the first member."""

    @property
    def is_group(self) -> bool:
        """True when the target names several backends (a group balanced between them)."""
        return len(self.members) > 1

    @property
    def backends(self) -> tuple[str, ...]:
        """Every backend this rule can send a request to."""
        return self.members or (self.backend,)


BALANCE_MODES = ("session", "round-robin", "litellm")
"""How a group spreads requests: `session` keeps each Claude Code session on one backend
(its prompt cache stays warm); `round-robin` sends each request to the next backend; `litellm`
lets LiteLLM's router choose, with its own session affinity."""


@dataclass(frozen=True, slots=True)
class GroupsConfig:
    """How an alias that names several backends (`"*": [box-a, box-b]`) spreads its requests."""

    balance: str = "session"
    """`session` (default): all requests of one Claude Code session go to the same healthy
    backend, new sessions to the one with the fewest sessions. `round-robin`: each request to the
    next healthy backend (a plain balancer: later turns lose llama-server's prompt cache).
    `litellm`: LiteLLM's router chooses (shuffle, its `session_affinity` pre-call check, its
    failover within the group); groups of `route: native` backends keep `session`."""


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Request records in SQLite."""

    path: str | None = None
    """SQLite file; default is history.sqlite3 in the user's data dir."""
    retention_days: float = 30.0
    max_rows: int = 200_000
    bodies: bool = True
    """Keep each request's body as the client sent it and the answer (secrets redacted), so the
    detail view shows them and "copy as curl" replays the real request. False: counts only."""
    body_max_kb: int = 256
    """Longest body kept; a longer one is cut, and the record says how long it was."""
    bodies_max_mb: float = 256.0
    """All kept bodies together; the oldest go first."""


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """What ccbridge does to keep llama-server's prompt cache warm (section `cache:`)."""

    shared_first: bool = True
    """Move the `system` messages Claude Code sends right after the first user prompt (2.1.332:
    "# Environment", the same for every session in a folder) ahead of that prompt, so a new
    session reuses them from the cache. False: the body goes as Claude Code sent it."""
    keep_slots: bool = True
    """For a llama-server ccbridge runs (`command:`): add `--slot-save-path` (under the data dir),
    save its slots before a restart ccbridge makes, restore them once it is back."""
    slot_files: int = 8
    """Most slot files kept per backend (the newest win)."""
    slot_files_mb: float = 4096.0
    """Most MiB of slot files kept per backend; older or larger ones are removed."""
    warm: bool = True
    """When a llama-server comes up with nothing cached (first start, a restart without restored slots,
    a crash, a server restarted by hand), replay the latest prompt of the most recent prompt families
    with max_tokens 1 while no user request is in flight; a user request cancels it at once."""
    warm_families: int = 2
    """How many prompt families (a main agent, each subagent type) per backend a warm-up replays."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything in ccbridge.yaml, validated."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    litellm: LiteLLMConfig = field(default_factory=LiteLLMConfig)
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    aliases: tuple[AliasRule, ...] = ()
    history: HistoryConfig = field(default_factory=HistoryConfig)
    groups: GroupsConfig = field(default_factory=GroupsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    source: Path | None = None
    """File this was read from (None when built in code)."""
