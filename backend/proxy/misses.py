"""Say why a request took less from llama-server's prompt cache than it should have.

llama-server reuses the longest prefix of the new prompt that some slot (or its host-RAM
cache) still holds. So when a turn misses, the cause is either that the prompt itself
changed early (a system block edited, the tool list changed, an earlier message edited,
a session started in another folder, whose "# Environment" block differs), or that the
cache no longer held the earlier prompt (llama-server restarted, another session took the
slot, a sliding-window model without `--swa-full`). ccbridge sees every body it routes, so
it compares this request's structure (system blocks, tools, messages: not tokens) with the
closest earlier one (the same session and prompt family first, then the same family,
then the backend's last) and names the first difference, or else what happened to the cache.

Only a short fingerprint of each routed body is kept (hashes; the system texts for the
character position), for the last `MAX_SHAPES` requests.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SHAPES = 64
LOW_SHARE = 0.5
"""A request with less than this share from cache is explained whenever an earlier one is known."""
SHORT_OF = 0.15
"""A request that took this much less than its structure allowed is explained too."""
_CWD = re.compile(r"Primary working directory: *(.+)")


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _texts(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class PromptShape:
    """The structure of one routed body: what a later one is compared with."""

    at: float
    backend: str
    session_id: str | None
    family: str | None
    system: tuple[str, ...]  # each system block's text (the billing line already gone)
    tools: tuple[tuple[str, str, int], ...]  # (name, digest, size) in order
    messages: tuple[tuple[str, str, int], ...]  # (role, digest, size) in order
    cwd: str | None  # Claude Code's "Primary working directory"

    @classmethod
    def of(cls, body: dict[str, Any], backend: str, session_id: str | None, family: str | None,
           at: float | None = None) -> PromptShape:
        system = body.get("system")
        blocks = (system,) if isinstance(system, str) else tuple(
            b["text"] for b in system if isinstance(b, dict) and isinstance(b.get("text"), str)
        ) if isinstance(system, list) else ()
        tools = tuple((str(t.get("name")), _digest(t), _size(t)) for t in body.get("tools") or ()
                      if isinstance(t, dict))
        messages = []
        cwd = None
        for m in body.get("messages") or ():
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            messages.append((str(m.get("role")), _digest(content), _size(content)))
            if cwd is None and m.get("role") == "system" and (found := _CWD.search(_texts(content))):
                cwd = found[1].strip()
        if cwd is None:
            for text in blocks:
                if found := _CWD.search(text):
                    cwd = found[1].strip()
                    break
        return cls(time.time() if at is None else at, backend, session_id, family, blocks, tools,
                   tuple(messages), cwd)

    @property
    def size(self) -> int:
        return sum(map(len, self.system)) + sum(t[2] for t in self.tools) + sum(m[2] for m in self.messages)


@dataclass(frozen=True, slots=True)
class Difference:
    """Where a prompt first differs from an earlier one, and how much of it came before."""

    text: str
    shared: float  # share of this prompt's size before the difference (what the cache could give)
    early: bool  # before the conversation (system, tools, folder): not a session's own new prompt


def _quote(text: str, at: int) -> str:
    snippet = text[at:at + 40].replace("\n", " ")
    return f"'{snippet}…'" if len(text) > at + 40 else f"'{snippet}'"


def first_difference(old: PromptShape, new: PromptShape) -> Difference | None:
    """The first structural difference of `new` from `old` (None: `new` extends `old`). A session in
    another folder is named as such wherever its prompt first differs (Claude Code 2.1.332 names the
    folder in a system block, its memory path, before the "# Environment" block)."""
    total = max(1, new.size)
    done = 0
    folder = ""
    if old.cwd and new.cwd and old.cwd != new.cwd:
        folder = f"a session in another folder: {new.cwd} (the earlier one ran in {old.cwd}); "
    for i, (a, b) in enumerate(zip(old.system, new.system, strict=False)):
        if a != b:
            at = next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            return Difference(f"{folder}system block {i + 1} changed at character {at:,}: {_quote(b, at)}",
                              (done + at) / total, True)
        done += len(b)
    if len(old.system) != len(new.system):
        return Difference(f"system blocks: {len(old.system)} before, {len(new.system)} now", done / total, True)
    if old.tools != new.tools:
        before, now = {t[0]: t[1] for t in old.tools}, {t[0]: t[1] for t in new.tools}
        parts = [f"{name} added" for name in now if name not in before]
        parts += [f"{name} removed" for name in before if name not in now]
        parts += [f"{name} changed" for name in now if name in before and before[name] != now[name]]
        if not parts:
            parts = ["their order changed"]
        same = next((n for n, (t, u) in enumerate(zip(old.tools, new.tools, strict=False)) if t != u),
                    min(len(old.tools), len(new.tools)))
        shared = (done + sum(t[2] for t in new.tools[:same])) / total
        return Difference(folder + "tools changed: " + ", ".join(parts), shared, True)
    done += sum(t[2] for t in new.tools)
    if folder:
        return Difference(folder + "Claude Code's \"# Environment\" block names the folder", done / total, True)
    for i, (was, now_m) in enumerate(zip(old.messages, new.messages, strict=False)):
        if was[:2] != now_m[:2]:
            if new.session_id != old.session_id or new.family != old.family:
                what = f"message {i + 1} ({now_m[0]}) differs from session {(old.session_id or '?')[:8]}'s"
            else:
                what = f"message {i + 1} ({now_m[0]}) was edited"
            return Difference(what, done / total, now_m[0] == "system")
        done += now_m[2]
    if len(new.messages) < len(old.messages):
        return Difference(f"the conversation is shorter than before ({len(new.messages)} messages, was "
                          f"{len(old.messages)}): compacted or rewound", done / total, False)
    return None


@dataclass(frozen=True, slots=True)
class CacheFacts:
    """What the bridge knows of a backend when a request ends."""

    came_up_at: float | None = None  # when its current llama-server process started
    restored_at: float | None = None  # when ccbridge last restored its slots
    swa_loses_prefix: bool = False  # sliding-window model without --swa-full


class MissExplainer:
    """Keeps the last shapes and names why a finished request missed (see the module docstring)."""

    def __init__(self, facts: Callable[[str], CacheFacts] = lambda backend: CacheFacts(),
                 max_shapes: int = MAX_SHAPES) -> None:
        self._facts = facts
        self._shapes: deque[PromptShape] = deque(maxlen=max_shapes)

    def _closest(self, shape: PromptShape) -> PromptShape | None:
        same_backend = [s for s in reversed(self._shapes) if s.backend == shape.backend]
        for match in (lambda s: s.session_id == shape.session_id and s.family == shape.family and s.session_id,
                      lambda s: s.family == shape.family,
                      lambda s: True):
            found = next((s for s in same_backend if match(s)), None)
            if found is not None:
                return found
        return None

    def explain(self, shape: PromptShape, cached: int | None, fresh: int | None) -> str | None:
        """Why `shape`'s request took `cached` of `cached + fresh` tokens from cache, when that is clearly
        less than it should have; None when it did not miss (or nothing earlier is known). Remembers it."""
        try:
            return self._explain(shape, cached, fresh)
        finally:
            self._shapes.append(shape)

    def _explain(self, shape: PromptShape, cached: int | None, fresh: int | None) -> str | None:
        if cached is None or fresh is None or cached + fresh <= 0:
            return None
        closest = self._closest(shape)
        if closest is None:
            return None
        share = cached / (cached + fresh)
        diff = first_difference(closest, shape)
        allowed = 1.0 if diff is None else diff.shared
        if share >= LOW_SHARE and share >= allowed - SHORT_OF:
            return None
        facts = self._facts(shape.backend)
        head = f"{round(share * 100)}% from cache"
        if facts.came_up_at is not None and closest.at < facts.came_up_at <= shape.at and (
                facts.restored_at is None or facts.restored_at < facts.came_up_at):
            when = time.strftime("%H:%M:%S", time.localtime(facts.came_up_at))
            return f"{head}: llama-server restarted at {when}, which emptied its cache (nothing was restored)"
        if facts.came_up_at is not None and closest.at < facts.came_up_at <= shape.at:
            when = time.strftime("%H:%M:%S", time.localtime(facts.came_up_at))
            return (f"{head}: llama-server restarted at {when}; ccbridge restored its slots, but they gave this "
                    "prompt nothing")
        if diff is not None and (diff.early or share >= allowed - SHORT_OF):
            return f"{head}: {diff.text}"
        between = [s for s in self._shapes if closest.at < s.at < shape.at and s.backend == shape.backend
                   and (s.session_id, s.family) != (shape.session_id, shape.family)]
        if between:
            other = between[-1]
            who = f"session {(other.session_id or 'without id')[:8]}"
            if other.session_id == shape.session_id:
                who = "this session's other agent (a subagent or side request)"
            return f"{head}: slot taken by {who} in between ({len(between)} request(s) since the earlier turn)"
        if facts.swa_loses_prefix:
            return (f"{head}: sliding-window model without --swa-full: llama-server kept only the last window, "
                    "so a prompt that differs before its end is read again")
        return (f"{head}, though about {round(allowed * 100)}% of it matches an earlier request"
                + (f" (up to where {diff.text})" if diff is not None else "")
                + ": llama-server no longer held that prompt (its slot was reused or cleared)")
