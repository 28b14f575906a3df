"""Claude model name -> backend routing: the `aliases:` section of ccbridge.yaml.

Pattern semantics (deliberately not `fnmatch`):

* Only `*` (any run of characters, including none) and `?` (exactly one
  character) are wildcards. Everything else is literal, including `[` and `]`,
  so `claude-opus-4-8[1m]` and `claude-*[1m]` mean what they say.
* A wildcard-free pattern equal to the name wins over every glob.
* Otherwise globs are tried in file order; the first that matches wins.
* The bare catch-all `*` is tried last, wherever it appears in the file.
* Matching is case-sensitive.

`AliasTable.resolve()` runs once per request, so patterns are compiled once and
results are cached in a small bounded dict.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable

from backend.config.model import AliasRule

CATCH_ALL = "*"
"""The catch-all pattern: any model name Claude Code asks for."""

WILDCARDS = frozenset("*?")
"""The only characters with a special meaning in an alias pattern."""

CACHE_SIZE = 1024
"""Most model names whose resolution `AliasTable` remembers."""

MAX_PATTERN_LENGTH = 256
"""Longest accepted pattern (model names are short; this only stops accidents)."""

_BACKEND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")


def is_glob(pattern: str) -> bool:
    """True if `pattern` contains a wildcard (`*` or `?`)."""
    return any(ch in WILDCARDS for ch in pattern)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile an alias pattern into an anchored regex (`*` and `?` only; rest literal)."""
    parts: list[str] = []
    previous_star = False
    for ch in pattern:
        if ch == "*":
            if not previous_star:  # "**" is the same as "*"; avoid needless backtracking
                parts.append(".*")
            previous_star = True
            continue
        previous_star = False
        parts.append("." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def validate_pattern(pattern: str) -> str | None:
    """Return why `pattern` is not a usable alias pattern, or None if it is fine."""
    if not isinstance(pattern, str):
        return f"a pattern must be text, not {type(pattern).__name__}"
    if pattern == "":
        return "the pattern is empty"
    if pattern.strip() == "":
        return "the pattern is only whitespace"
    if any(ch.isspace() for ch in pattern):
        return "the pattern contains whitespace (Claude model names never do)"
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in pattern):
        return "the pattern contains a control character"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"the pattern is longer than {MAX_PATTERN_LENGTH} characters"
    return None


def validate_backend_name(name: str) -> str | None:
    """Return why `name` cannot name a backend, or None if it is fine.

    Letters, digits and `_ . : -`, starting with a letter or digit; in
    particular no `/`, which separates backend and model in an alias target.
    """
    if not isinstance(name, str) or not name:
        return "a backend name must be non-empty text"
    if not _BACKEND_NAME.fullmatch(name):
        return "use letters, digits and _ . : - only (no '/' or spaces), starting with a letter or digit"
    return None


def parse_target(target: str, backends: Collection[str]) -> tuple[str, str | None]:
    """Split an alias target into (backend, model or None).

    `local` -> ("local", None); `local/qwen2.5-coder` -> ("local", "qwen2.5-coder").
    Only the first `/` splits, and only when the part before it is a known
    backend, so the model may itself contain `/` (`local/Qwen/Qwen3-8B`).
    Raises ValueError (with a "did you mean" hint where one fits) otherwise.
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError("the target is empty; expected a backend name or backend/model")
    if target != target.strip():
        raise ValueError("the target has leading or trailing whitespace")
    if target in backends:
        return target, None
    head, sep, model = target.partition("/")
    if sep and head in backends:
        if not model or model != model.strip():
            raise ValueError(
                f"the model part after '{head}/' is empty or padded; expected {head}/<model id>"
            )
        return head, model
    known = ", ".join(sorted(backends)) or "(none defined)"
    hint = suggest(head, backends)
    hint_text = f" (did you mean '{hint}'?)" if hint else ""
    raise ValueError(f"unknown backend '{head}'{hint_text}; known backends: {known}")


GROUP_EXAMPLE = "[box-a, box-b]"


def group_text(members: Iterable[str]) -> str:
    """A group target as one line of text, the way YAML's flow style writes it: `[box-a, box-b]`."""
    return "[" + ", ".join(members) + "]"


def parse_members(items: Iterable[object], backends: Collection[str]) -> tuple[str, ...]:
    """The backends of a group target (a YAML list), checked: each a known backend, named once,
    by name only (a group's member answers with its own `model`). Raises ValueError saying what
    is wrong and what to write instead."""
    members: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"the member {item!r} is not a backend name; list backends by name, e.g. {GROUP_EXAMPLE}")
        backend, model = parse_target(item.strip(), backends)
        if model is not None:
            raise ValueError(f"the member '{item.strip()}' names a model; a group lists backends by name only "
                             f"(each answers with its own model): write '{backend}' and set "
                             f"backends.{backend}.model: {model}")
        if backend in members:
            raise ValueError(f"the backend '{backend}' is listed twice; name each backend of a group once")
        members.append(backend)
    if not members:
        known = ", ".join(sorted(backends)) or "(none defined)"
        raise ValueError(f"the list of backends is empty; name at least one, e.g. {GROUP_EXAMPLE} "
                         f"(known backends: {known})")
    return tuple(members)


def parse_alias_target(target: str, backends: Collection[str]) -> tuple[str, str | None, tuple[str, ...]]:
    """An alias target as the API and the panel write it: a backend, `backend/model`, or a group
    `[box-a, box-b]`. Returns (backend, model, members); for a group, backend is the first
    member and members all of them; otherwise members is empty. Raises ValueError."""
    text = target.strip() if isinstance(target, str) else target
    if isinstance(text, str) and text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"the group '{text}' has no closing ']'; write it as {GROUP_EXAMPLE}")
        inner = text[1:-1].strip()
        members = parse_members(inner.split(",") if inner else [], backends)
        return members[0], None, members if len(members) > 1 else ()
    backend, model = parse_target(target, backends)
    return backend, model, ()


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The closest of `choices` to `word` (difflib), or None if nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class AliasTable:
    """Precompiled alias rules with the resolution order described in the module docstring."""

    __slots__ = ("_rules", "_exact", "_globs", "_catch_all", "_cache")

    def __init__(self, rules: Iterable[AliasRule] = ()) -> None:
        """Compile `rules` (in file order). Duplicate patterns: the first one wins."""
        self._rules: tuple[AliasRule, ...] = tuple(rules)
        self._exact: dict[str, AliasRule] = {}
        self._globs: list[tuple[re.Pattern[str], AliasRule]] = []
        self._catch_all: AliasRule | None = None
        seen: set[str] = set()
        for rule in self._rules:
            if rule.pattern in seen:
                continue
            seen.add(rule.pattern)
            if rule.pattern == CATCH_ALL:
                self._catch_all = rule
            elif is_glob(rule.pattern):
                self._globs.append((compile_pattern(rule.pattern), rule))
            else:
                self._exact[rule.pattern] = rule
        self._cache: dict[str, AliasRule | None] = {}

    @property
    def rules(self) -> tuple[AliasRule, ...]:
        """The rules as given, in file order."""
        return self._rules

    @property
    def catch_all(self) -> AliasRule | None:
        """The bare `*` rule, if there is one."""
        return self._catch_all

    def __len__(self) -> int:
        """Number of rules as given."""
        return len(self._rules)

    def __repr__(self) -> str:
        """Short description for logs."""
        return f"AliasTable({len(self._rules)} rules)"

    def resolve(self, model: str) -> AliasRule | None:
        """The rule that routes `model`, or None if no rule matches."""
        cache = self._cache
        try:
            return cache[model]
        except KeyError:
            pass
        rule = self._lookup(model)
        if len(cache) >= CACHE_SIZE:
            # Drop the oldest entry (dicts keep insertion order): model names are
            # client-controlled, so the cache must not grow without bound.
            del cache[next(iter(cache))]
        cache[model] = rule
        return rule

    def _lookup(self, model: str) -> AliasRule | None:
        exact = self._exact.get(model)
        if exact is not None:
            return exact
        for regex, rule in self._globs:
            if regex.fullmatch(model):
                return rule
        return self._catch_all
