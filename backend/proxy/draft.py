"""A request's record while it is in flight: typed, so a misspelt field is a type error."""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass, fields
from typing import Any

from backend.events import RequestRecord
from backend.proxy.misses import PromptShape
from backend.proxy.sse import timings_fields
from backend.proxy.toolrepair import Repair, ToolCatalog

_RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
_USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "stop_reason")


@dataclass(slots=True)
class RequestDraft:
    """Everything the front learns about one request; frozen into a `RequestRecord` at the end.

    The fields named like `RequestRecord`'s are copied into it; the others
    (`t0`, `first_at`, `sent_status`, `assemble`, `family`) are
    bookkeeping for the request's lifecycle.
    """

    id: str
    started_at: float
    method: str
    path: str
    t0: float  # time.monotonic() at arrival
    session_id: str | None = None
    client_version: str | None = None
    requested_model: str | None = None
    alias_rule: str | None = None
    routed_backend: str | None = None
    routed_model: str | None = None
    stream: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    ttft_ms: float | None = None
    stop_reason: str | None = None
    client_hung_up: bool = False
    error: str | None = None
    backend_calls: int = 0
    subagent: bool = False
    tool_repairs: int = 0
    repaired_text: str | None = None
    # lifecycle bookkeeping, not recorded
    tools: ToolCatalog | None = None  # the request's tools, when its answer may need a tool-call repair
    first_at: float | None = None  # monotonic time of the first content delta
    sent_status: int | None = None  # status of a streamed response already sent
    assemble: bool = False  # a plain request the native route asked llama-server to stream
    request_body: bytes | None = None  # as the client sent it, when bodies are kept
    answer: list[bytes] | None = None  # the streamed answer's bytes so far (up to `answer_room`)
    answer_room: int = 0  # bytes of the answer still to keep

    def keep_answer(self, data: bytes) -> None:
        """Keep the start of a streamed answer (the bodies store cuts at the same length)."""
        if self.answer is not None and self.answer_room > 0:
            self.answer.append(data[: self.answer_room])
            self.answer_room -= len(data)

    family: str | None = None  # the system prompt's family (see prompt.prompt_family)
    shape: PromptShape | None = None  # the routed body's structure, to say why the cache missed

    @property
    def agent_key(self) -> str | None:
        """Who the request belongs to, for slot pinning: the Claude session, with its
        main agent and each kind of subagent apart (one session id, different prompts)."""
        if self.session_id is None:
            return None
        return f"{self.session_id}/{self.family}" if self.family else self.session_id

    def repaired(self, repair: Repair | None) -> None:
        """Note a tool-call repair of the answer (see proxy.toolrepair)."""
        if repair is not None:
            self.tool_repairs += len(repair.blocks)
            self.repaired_text = repair.trace()
            self.stop_reason = "tool_use"

    def fail(self, message: str) -> None:
        """Note why the request failed; the first reason wins."""
        if not self.error:
            self.error = message

    def merge_usage(self, usage: dict[str, Any]) -> None:
        """Token counts and stop reason from a stream or a body; an earlier error is kept."""
        for name in _USAGE_FIELDS:
            value = usage.get(name)
            if value is not None:
                setattr(self, name, value)
        if usage.get("error"):
            self.fail(usage["error"])

    def to_record(self, status: int | None, timings: dict[str, Any] | None = None,
                  end: float | None = None) -> RequestRecord:
        end = time.monotonic() if end is None else end
        values = dict(zip(_COPIED, _copied(self), strict=True))
        values.update(status=status, duration_ms=(end - self.t0) * 1000.0)
        if self.first_at is not None and self.output_tokens and end > self.first_at:
            values["output_tps"] = self.output_tokens / (end - self.first_at)
        values.update(timings_fields(timings))
        values["cache_share"] = cache_share(values)
        return RequestRecord(**values)


# the record's fields the draft has, read in one call (to_record runs once per request)
_COPIED = tuple(name for name in _RECORD_FIELDS if name in {f.name for f in fields(RequestDraft)})
_copied = operator.attrgetter(*_COPIED)


def cache_share(values: dict[str, Any]) -> float | None:
    """The share of the prompt llama-server served from its cache (0..1), or None.

    From llama-server's own timings where the backend leg read them (LiteLLM
    route), otherwise from the usage it reported (its Anthropic usage splits the
    prompt into `input_tokens` and `cache_read_input_tokens`: the native route)."""
    cached, new = values.get("backend_cache_n"), values.get("backend_prompt_n")
    if cached is None or new is None:
        cached, new = values.get("cache_read_tokens"), values.get("input_tokens")
    if cached is None or new is None or cached + new <= 0:
        return None
    return cached / (cached + new)
