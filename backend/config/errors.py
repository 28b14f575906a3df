"""ConfigError and the pieces of its messages: how a found value is shown, a key path, a line.

Every problem with a config file becomes a `ConfigError` that names the file, the key path
(`backends.local.api_base`), the 1-based line, what was found and what was expected, so a person
can fix the file without reading code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from backend.config.aliases import suggest

SECRET_KEYS = frozenset({"api_key"})
"""Keys whose text is never shown in a message (`describe(..., secret=True)`)."""

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_YAML_INDICATORS = "*&!?%@`|>"


class ConfigError(Exception):
    """A problem with a configuration file, explained for the person who edits it.

    Attributes hold the parts: `file`, `key` (dotted path), `line` and
    `column` (1-based), `found`, `expected` and an optional `hint`.
    """

    def __init__(
        self,
        problem: str | None = None,
        *,
        file: Path | str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: int | None = None,
        found: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        """Build the message from the parts (`problem` replaces found/expected if given)."""
        self.file = Path(file) if file is not None else None
        self.key = key
        self.line = line
        self.column = column
        self.found = found
        self.expected = expected
        self.hint = hint
        self.problem = problem
        super().__init__(self._format())

    def _format(self) -> str:
        where: list[str] = []
        if self.file is not None:
            where.append(str(self.file))
        if self.line is not None:
            where.append(f"line {self.line}")
            if self.column is not None:
                where.append(f"column {self.column}")
        text = ", ".join(where)
        if self.key:
            text = f"{text}: {self.key}" if text else self.key
        body: list[str] = []
        if self.problem:
            body.append(self.problem)
        if self.found is not None:
            body.append(f"found {self.found}")
        if self.expected is not None:
            body.append(f"expected {self.expected}")
        message = f"{text}: {'; '.join(body)}" if text else "; ".join(body)
        if self.hint:
            message += f". {self.hint}"
        return message


def describe(value: Any, *, secret: bool = False) -> str:
    """How a found value is shown in an error (secrets by type only)."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a yes/no value)"
    if isinstance(value, int):
        return f"the number {int(value)}"
    if isinstance(value, float):
        return f"the number {float(value)!r}"
    if isinstance(value, str):
        if secret:
            return "text (not shown)"
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'the text "{shown}"'
    if isinstance(value, Mapping):
        return "a mapping (key: value lines)"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def describe_list(items: list[Any]) -> str:
    """A YAML list as found, for an error message: `[box-a, box-b]`."""
    return "[" + ", ".join(str(item) for item in items) + "]"


def key_path(*parts: Any) -> str:
    """Dotted key path for messages; parts with unusual characters are quoted."""
    shown = []
    for part in parts:
        text = str(part)
        shown.append(text if _PLAIN_KEY.fullmatch(text) else f'"{text}"')
    return ".".join(shown)


# -- where a node is: ruamel keeps 0-based (line, column) on every mapping and list ---------------


def key_line(node: Any, key: Any) -> int | None:
    """1-based line of `key` in the round-trip mapping `node` (None for a plain dict)."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


def value_line(node: Any, key: Any) -> int | None:
    """1-based line of the value under `key` (the key's line when the value has none)."""
    try:
        return int(node.lc.value(key)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return key_line(node, key)


def node_line(node: Any) -> int | None:
    """1-based line where a round-trip mapping or list starts."""
    try:
        return int(node.lc.line) + 1
    except (AttributeError, TypeError):
        return None


def unknown_key(node: Any, key: Any, allowed: Iterable[str], prefix: tuple[str, ...],
                file: Path | None) -> ConfigError:
    """A key the section does not have, with the closest one it does ("Did you mean ...?")."""
    allowed = tuple(allowed)
    guess = suggest(str(key), allowed)
    return ConfigError(
        file=file,
        key=key_path(*prefix, str(key)),
        line=key_line(node, key),
        found=f'an unknown key "{key}"',
        expected="one of: " + ", ".join(allowed),
        hint=f"Did you mean '{guess}'?" if guess else None,
    )


def yaml_error(exc: YAMLError, text: str, file: Path | None) -> ConfigError:
    """Turn a ruamel parse error into a ConfigError with line and column."""
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    mark = problem_mark or context_mark
    problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
    context = getattr(exc, "context", None)
    line = column = None
    hint = None
    lines = text.splitlines()
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
        # Look at the reported line, the context line and the line before.
        candidates = [mark.line, getattr(context_mark, "line", -1), mark.line - 1]
        for index in candidates:
            source = lines[index] if 0 <= index < len(lines) else ""
            start = source.lstrip()[:1]
            if start and start in _YAML_INDICATORS:
                hint = (
                    f'Line {index + 1}: a key or value that starts with "{start}" '
                    'must be quoted, e.g. "*": local'
                )
                break
            if "\t" in source[: len(source) - len(source.lstrip())]:
                hint = f"Line {index + 1}: indent with spaces, not tabs"
                break
    found = str(problem)
    if context and isinstance(exc, MarkedYAMLError):
        found = f"{problem} ({context})"
    if found.startswith("found "):
        found = found[len("found ") :]
    return ConfigError(
        "YAML syntax error",
        file=file,
        line=line,
        column=column,
        found=found,
        expected="valid YAML (key: value lines, indented with spaces)",
        hint=hint,
    )
