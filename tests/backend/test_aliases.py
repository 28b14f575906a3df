"""Alias resolution: exact beats glob, file order, `*` last, brackets literal."""

from __future__ import annotations

import pytest

from backend.config.aliases import (
    CACHE_SIZE,
    AliasTable,
    compile_pattern,
    parse_target,
    validate_pattern,
)
from backend.config.model import AliasRule


def table(*pairs: tuple[str, str]) -> AliasTable:
    return AliasTable(AliasRule(p, t, t.split("/", 1)[0]) for p, t in pairs)


def target_of(t: AliasTable, model: str) -> str | None:
    rule = t.resolve(model)
    return rule.target if rule else None


def test_exact_beats_glob_even_when_glob_comes_first() -> None:
    t = table(("claude-opus-*", "glob"), ("claude-opus-4-8", "exact"))
    assert target_of(t, "claude-opus-4-8") == "exact"
    assert target_of(t, "claude-opus-4-6") == "glob"


def test_globs_in_file_order() -> None:
    t = table(("claude-*", "first"), ("claude-opus-*", "second"))
    assert target_of(t, "claude-opus-4-8") == "first"
    t = table(("claude-opus-*", "second"), ("claude-*", "first"))
    assert target_of(t, "claude-opus-4-8") == "second"
    assert target_of(t, "claude-haiku-4-5") == "first"


def test_catch_all_is_last_even_if_first_in_file() -> None:
    t = table(("*", "any"), ("claude-haiku-*", "small"), ("claude-opus-4-8", "big"))
    assert target_of(t, "claude-haiku-4-5") == "small"
    assert target_of(t, "claude-opus-4-8") == "big"
    assert target_of(t, "gpt-4o") == "any"
    assert target_of(t, "") == "any"
    assert t.catch_all is not None and t.catch_all.pattern == "*"


def test_no_match_without_catch_all() -> None:
    t = table(("claude-haiku-*", "small"))
    assert t.resolve("claude-opus-4-8") is None


def test_brackets_are_literal() -> None:
    t = table(("claude-opus-4-8[1m]", "long"), ("claude-*[1m]", "anylong"), ("*", "rest"))
    assert target_of(t, "claude-opus-4-8[1m]") == "long"
    assert target_of(t, "claude-sonnet-4-5[1m]") == "anylong"
    # fnmatch would read [1m] as a character class and match these:
    assert target_of(t, "claude-opus-4-81") == "rest"
    assert target_of(t, "claude-opus-4-8m") == "rest"
    assert target_of(t, "claude-opus-4-8") == "rest"
    assert target_of(t, "claude-sonnet-4-51") == "rest"


def test_unbalanced_bracket_patterns_do_not_match_wrongly() -> None:
    t = table(("claude-opus-4-8[1m", "open"), ("claude-opus-4-8]", "close"))
    assert t.resolve("claude-opus-4-8[1m]") is None
    assert target_of(t, "claude-opus-4-8[1m") == "open"
    assert target_of(t, "claude-opus-4-8]") == "close"
    g = table(("claude-opus-4-8[1m*", "glob"))
    assert target_of(g, "claude-opus-4-8[1m]") == "glob"
    assert g.resolve("claude-opus-4-81m]") is None


def test_question_mark_is_one_character() -> None:
    t = table(("claude-opus-4-?", "one"))
    assert target_of(t, "claude-opus-4-8") == "one"
    assert t.resolve("claude-opus-4-") is None
    assert t.resolve("claude-opus-4-10") is None


def test_other_regex_characters_are_literal() -> None:
    t = table(("a.b+c(d)|e^$\\{2}", "lit"))
    assert target_of(t, "a.b+c(d)|e^$\\{2}") == "lit"
    g = table(("a.b*", "g"))
    assert target_of(g, "a.bxyz") == "g"
    assert g.resolve("axbxyz") is None
    assert compile_pattern("x**y").pattern == "x.*y"


def test_case_sensitive() -> None:
    t = table(("claude-opus-*", "x"))
    assert t.resolve("Claude-Opus-4-8") is None


def test_duplicate_pattern_first_wins() -> None:
    t = table(("claude-*", "a"), ("claude-*", "b"))
    assert target_of(t, "claude-x") == "a"


def test_cache_is_bounded_and_consistent() -> None:
    t = table(("claude-haiku-*", "small"), ("*", "any"))
    for i in range(CACHE_SIZE * 2):
        assert target_of(t, f"model-{i}") == "any"
    assert len(t._cache) <= CACHE_SIZE
    assert target_of(t, "claude-haiku-4-5") == "small"
    assert target_of(t, "claude-haiku-4-5") == "small"


def test_parse_target() -> None:
    backends = {"local", "gpu"}
    assert parse_target("local", backends) == ("local", None)
    assert parse_target("local/qwen2.5-coder", backends) == ("local", "qwen2.5-coder")
    assert parse_target("gpu/Qwen/Qwen3-8B", backends) == ("gpu", "Qwen/Qwen3-8B")


@pytest.mark.parametrize("bad", ["remote", "remote/qwen", "Qwen/Qwen3-8B", "local/", "", " local"])
def test_parse_target_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_target(bad, {"local"})


def test_parse_target_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean 'local'"):
        parse_target("locl", {"local"})


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("claude-*", True),
        ("claude-opus-4-8[1m]", True),
        ("*", True),
        ("", False),
        ("   ", False),
        ("claude opus", False),
        ("claude-\x07", False),
        ("claude\n", False),
        ("x" * 300, False),
    ],
)
def test_validate_pattern(pattern: str, ok: bool) -> None:
    assert (validate_pattern(pattern) is None) is ok
