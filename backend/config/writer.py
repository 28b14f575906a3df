"""Edit ccbridge.yaml the way a careful person would: keep comments, order and quoting.

`ConfigDocument` holds a ruamel.yaml round-trip tree. Edits change only the
part they name; everything else is written back as it was. `save()` validates
first (an invalid edit raises ConfigError and the file is not touched), keeps
the previous file as `ccbridge.yaml.bak` and replaces the file atomically.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    ScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from backend.config import _files
from backend.config.aliases import CATCH_ALL, group_text, validate_pattern
from backend.config.loader import (
    ConfigError,
    config_from_tree,
    key_path,
    parse_config,
    read_text,
    yaml_error,
)
from backend.config.model import Config

_INDENTED_KEY = re.compile(r"^( +)[^ #\-]")


def _detect_indent(text: str) -> int:
    """Indentation of the first nested mapping key in `text` (2 if none)."""
    for line in text.splitlines():
        match = _INDENTED_KEY.match(line)
        if match:
            return max(1, min(len(match.group(1)), 8))
    return 2


def _round_trip_yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.allow_duplicate_keys = False
    yaml.width = 4096  # never re-wrap long values or comments
    indent = _detect_indent(text)
    yaml.indent(mapping=indent, sequence=indent + 2, offset=indent)
    if text.lstrip().startswith("---"):
        yaml.explicit_start = True
    return yaml


@dataclass
class _Comments:
    """The comment attached after one mapping entry, split in two parts."""

    eol: str = ""
    """End-of-line comment of the entry itself (`# ...\n`), or empty."""
    column: int = 0
    """Column of the end-of-line comment, to keep its alignment."""
    after: str = ""
    """Whole lines that follow the entry (they describe the next entry)."""


def _split_comment(cmap: CommentedMap, key: Any) -> _Comments:
    entry = cmap.ca.items.get(key)
    token = entry[2] if entry and len(entry) > 2 else None
    if token is None:
        return _Comments()
    value = str(token.value)
    column = getattr(getattr(token, "start_mark", None), "column", 0) or 0
    if value.startswith("#"):
        newline = value.find("\n")
        if newline == -1:
            return _Comments(value + "\n", column, "")
        return _Comments(value[: newline + 1], column, value[newline + 1 :])
    if value.startswith("\n"):
        return _Comments("", 0, value[1:])
    return _Comments("", 0, value)


def _set_comment(cmap: CommentedMap, key: Any, eol: str, column: int, after: str) -> None:
    if not eol and not after:
        entry = cmap.ca.items.get(key)
        if entry is not None and len(entry) > 2:
            entry[2] = None
            if not any(entry):
                cmap.ca.items.pop(key, None)
        return
    value = (eol or "\n") + after
    token = CommentToken(value, CommentMark(column if eol else 0))
    entry = cmap.ca.items.get(key)
    if entry is None:
        cmap.ca.items[key] = [None, None, token, None]
    else:
        while len(entry) < 4:
            entry.append(None)
        entry[2] = token


def _rebuild(cmap: CommentedMap, items: Sequence[tuple[Any, Any]]) -> None:
    """Replace the entries of `cmap` with `items`, moving comments with their entries.

    Each entry keeps its end-of-line comment; whole comment lines above an
    entry move with it; lines after the last entry (blank lines, the next
    section's heading comment) stay at the end.
    """
    old_keys = list(cmap.keys())
    parts = {key: _split_comment(cmap, key) for key in old_keys}
    above: dict[Any, str] = {}
    for previous, key in zip(old_keys, old_keys[1:], strict=False):
        above[key] = parts[previous].after
    trailer = parts[old_keys[-1]].after if old_keys else ""
    old_first = old_keys[0] if old_keys else None
    # Comment lines above a removed entry are kept: they move to the next
    # surviving entry (or the end), so an edit never loses the user's text.
    surviving = {key for key, _ in items}
    carry = ""
    for key in old_keys:
        if key in surviving:
            if carry:
                above[key] = carry + above.get(key, "")
                carry = ""
        else:
            carry += above.pop(key, "")
    trailer = carry + trailer
    for key in old_keys:
        del cmap[key]
        cmap.ca.items.pop(key, None)
    new_keys = [key for key, _ in items]
    for key, value in items:
        cmap[key] = value
    if new_keys and new_keys[0] != old_first and above.get(new_keys[0]):
        # The lines above the new first entry go under the section's own comment.
        head = cmap.ca.comment[0] if cmap.ca.comment else None
        if head is not None:
            head.value = str(head.value) + above[new_keys[0]]
    for index, key in enumerate(new_keys):
        part = parts.get(key, _Comments())
        after = above.get(new_keys[index + 1], "") if index + 1 < len(new_keys) else trailer
        _set_comment(cmap, key, part.eol, part.column, after)


def _like(old: Any, new: Any) -> Any:
    """`new`, quoted the way `old` was if both are text."""
    if isinstance(new, str) and not isinstance(new, ScalarString):
        if isinstance(old, DoubleQuotedScalarString):
            return DoubleQuotedScalarString(new)
        if isinstance(old, SingleQuotedScalarString):
            return SingleQuotedScalarString(new)
    return new


def _target_node(target: str) -> Any:
    """An alias target as written in the file: a group's text `[box-a, box-b]` becomes a YAML list
    in flow style (what a person would write); anything else stays text."""
    text = target.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return target
    seq = CommentedSeq(item.strip() for item in text[1:-1].split(",") if item.strip())
    seq.fa.set_flow_style()
    return seq


def _to_node(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, CommentedMap):
        node = CommentedMap()
        for key, item in value.items():
            node[key] = _to_node(item)
        return node
    if isinstance(value, tuple):
        return [_to_node(item) for item in value]
    return value


class ConfigDocument:
    """An editable ccbridge.yaml that keeps the user's comments, key order and quoting."""

    def __init__(self, text: str, path: Path | None = None) -> None:
        """Parse `text` (syntax errors raise ConfigError); `path` is where save() writes."""
        self.path = Path(path) if path is not None else None
        self._yaml = _round_trip_yaml(text)
        try:
            data = self._yaml.load(text)
        except YAMLError as exc:
            raise yaml_error(exc, text, self.path) from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise ConfigError(
                file=self.path,
                key="(top level)",
                line=1,
                found=f"a {type(data).__name__}",
                expected="a mapping with the sections proxy, litellm, backends, aliases",
            )
        self._data: CommentedMap = data
        self._disk_text: str | None = None

    @classmethod
    def load(cls, path: Path) -> ConfigDocument:
        """Read `path` for editing (it need not be valid yet; `to_config()` checks)."""
        path = Path(path)
        text = read_text(path)
        document = cls(text, path)
        document._disk_text = text
        return document

    @property
    def data(self) -> CommentedMap:
        """The round-trip tree (for reading; edit through the methods)."""
        return self._data

    # -- aliases ---------------------------------------------------------

    def _aliases_node(self) -> CommentedMap:
        node = self._data.get("aliases")
        if not isinstance(node, CommentedMap):
            node = CommentedMap()
            self._data["aliases"] = node
        return node

    def aliases(self) -> list[tuple[str, str]]:
        """The alias entries as (pattern, target), in file order."""
        node = self._data.get("aliases")
        if not isinstance(node, Mapping):
            return []
        return [(str(key), group_text(str(v) for v in value) if isinstance(value, list) else str(value))
                for key, value in node.items()]

    @staticmethod
    def _check_rule(pattern: str, target: str) -> None:
        reason = validate_pattern(pattern)
        if reason:
            raise ConfigError(
                key=key_path("aliases", str(pattern)),
                found=f'the pattern "{pattern}" ({reason})',
                expected='a Claude model name pattern, e.g. "claude-haiku-*"',
            )
        if not isinstance(target, str) or not target.strip():
            raise ConfigError(
                key=key_path("aliases", pattern),
                found=f"the target {target!r}",
                expected="a backend name, backend/model, or a group [box-a, box-b]",
            )

    def _pattern_key(self, node: CommentedMap, pattern: str) -> Any:
        for key in node:
            if key == pattern:
                return key  # keep the original key object (and its quoting)
        return DoubleQuotedScalarString(pattern)

    def set_aliases(self, rules: Sequence[tuple[str, str]]) -> None:
        """Replace the whole aliases mapping with `rules` (in this order).

        Entries that already existed keep their quoting and comments.
        """
        seen: set[str] = set()
        for pattern, target in rules:
            self._check_rule(pattern, target)
            if pattern in seen:
                raise ConfigError(
                    key=key_path("aliases", pattern),
                    found="the same pattern twice",
                    expected="each pattern once",
                )
            seen.add(pattern)
        node = self._aliases_node()
        items = []
        for pattern, target in rules:
            key = self._pattern_key(node, pattern)
            value = _target_node(target)
            items.append((key, _like(node[key], value) if key in node else value))
        _rebuild(node, items)

    def add_alias(self, pattern: str, target: str, before_catch_all: bool = True) -> None:
        """Add `pattern -> target`; an existing pattern just gets the new target in place.

        A new pattern goes before the bare `*` catch-all if there is one and
        `before_catch_all` is true, else at the end.
        """
        self._check_rule(pattern, target)
        node = self._aliases_node()
        if pattern in node:
            key = self._pattern_key(node, pattern)
            node[key] = _like(node[key], _target_node(target))
            return
        items = list(node.items())
        new = (DoubleQuotedScalarString(pattern), _target_node(target))
        keys = [str(key) for key, _ in items]
        if before_catch_all and pattern != CATCH_ALL and CATCH_ALL in keys:
            items.insert(keys.index(CATCH_ALL), new)
        else:
            items.append(new)
        _rebuild(node, items)

    def remove_alias(self, pattern: str) -> bool:
        """Remove `pattern`; returns False if there was no such entry."""
        node = self._data.get("aliases")
        if not isinstance(node, CommentedMap) or pattern not in node:
            return False
        _rebuild(node, [(key, value) for key, value in node.items() if key != pattern])
        return True

    # -- any value -------------------------------------------------------

    def set_value(self, dotted_key: str | Sequence[str], value: Any) -> None:
        """Set one value, e.g. `set_value("proxy.port", 9000)`; None removes the key.

        Give a sequence of parts (`["backends", "10.0.0.2-8080", "model"]`)
        when a name contains a dot. Missing mappings on the way are created.
        """
        parts = dotted_key.split(".") if isinstance(dotted_key, str) else list(dotted_key)
        if not parts or any(not isinstance(p, str) or not p for p in parts):
            raise ConfigError(key=str(dotted_key), found="an empty key part", expected="a.b.c")
        node: Any = self._data
        for index, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                if value is None:
                    return  # removing something under a missing section: nothing to do
                child = CommentedMap()
                node[part] = child
            elif not isinstance(child, CommentedMap):
                raise ConfigError(
                    key=key_path(*parts[: index + 1]),
                    found=f"a {type(child).__name__} value",
                    expected=f"a mapping to hold {key_path(*parts)}",
                )
            node = child
        last = parts[-1]
        if value is None:
            if last in node:
                _rebuild(node, [(k, v) for k, v in node.items() if k != last])
            return
        if last in node:
            node[last] = _like(node[last], _to_node(value))
        else:
            node[last] = _to_node(value)

    # -- output ----------------------------------------------------------

    def dump_text(self) -> str:
        """The document as YAML text, comments and all."""
        stream = io.StringIO()
        self._yaml.dump(self._data, stream)
        return stream.getvalue()

    def to_config(self) -> Config:
        """Validate the edited document; raises ConfigError (nothing is written)."""
        return parse_config(self.dump_text(), self.path)

    def has_api_key(self) -> bool:
        """True if the document sets an api_key (proxy, litellm or any backend)."""
        for section in ("proxy", "litellm"):
            node = self._data.get(section)
            if isinstance(node, Mapping) and node.get("api_key") is not None:
                return True
        backends = self._data.get("backends")
        if isinstance(backends, Mapping):
            for entry in backends.values():
                if isinstance(entry, Mapping) and entry.get("api_key") is not None:
                    return True
        return False

    def save(self, path: Path | None = None, *, force: bool = False) -> Path | None:
        """Validate, back up the old file as `<name>.bak`, and write atomically.

        Keeps the file's mode (0600 if the document holds an api_key). Refuses
        (ConfigError) if the file changed on disk since `load()`, or if `path`
        is some other existing file, unless `force`. Returns the backup path
        (None if there was no previous file).
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ConfigError("no file to save to", expected="a path")
        text = self.dump_text()
        config_from_tree(self._yaml.load(text), target)  # validate before touching anything
        try:
            current: str | None = read_text(target)
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except ConfigError:
            if target.exists():
                raise
            current, mode = None, _files.default_mode()
        if current is not None and not force:
            same_file = self.path is not None and target == self.path
            if not same_file or self._disk_text is None:
                raise ConfigError(
                    "the file exists and was not loaded into this document",
                    file=target,
                    hint="Load it first, or save with force=True to replace it",
                )
            if current != self._disk_text:
                raise ConfigError(
                    "the file changed on disk since it was loaded",
                    file=target,
                    hint="Reload it and edit again, or save with force=True to replace it",
                )
        if self.has_api_key():
            mode = _files.SECRET_MODE
        target.parent.mkdir(parents=True, exist_ok=True)
        backup = _files.replace_with_backup(target, text, mode)
        self.path = target
        self._disk_text = text
        return backup
