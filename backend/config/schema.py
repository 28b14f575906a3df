"""What ccbridge.yaml may hold, declared as msgspec Structs, and msgspec's errors told in YAML terms.

Each field's type says what it accepts (kind, range, a pattern); its `Meta(description=...)` is the
"expected ..." of the message when the value does not fit. A field that is not in the file stays
UNSET, so the defaults live in one place: the dataclasses of `backend.config.model`, which
`backend.config.loader` builds from these. What a type cannot say (a URL that parses, an
environment variable that is set, a command line for the same port) the loader checks after.

msgspec was chosen by measuring (issue 22): it adds ~11-14 ms to an import of the loader, where
pydantic adds ~85 ms (~100 ms with these models built) and cattrs ~35 ms; it refuses "8082" for a
port and `true` for a number without being told (cattrs converts them). Its errors are text that
ends with the failing place (`- at `$.proxy.port``); `convert` follows that path through the
round-trip tree to the node, its line, and the field's description.
"""

import functools
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import msgspec
from msgspec import UNSET, Meta, UnsetType
from ruamel.yaml.scalarbool import ScalarBoolean

from backend.config.errors import (
    SECRET_KEYS,
    ConfigError,
    describe,
    key_path,
    node_line,
    unknown_key,
    value_line,
)

ENV_PREFIX = "os.environ/"
"""A value `os.environ/NAME` means: read it from the environment variable NAME."""

_TEXT = r"^\S(?:[\s\S]*\S)?$"  # not empty, no leading or trailing spaces
_FINITE = sys.float_info.max  # `le=` this refuses .inf (and gt=0 refuses .nan)


class Section(msgspec.Struct, forbid_unknown_fields=True):
    """A mapping of known keys; any other key is an error."""


Port = Annotated[int, Meta(ge=1, le=65535, description="a whole number from 1 to 65535")]
_URL = "an http:// or https:// URL with a host, e.g. "
Secret = Annotated[str, Meta(pattern=_TEXT, description=f"a key as text, or {ENV_PREFIX}VARIABLE")]
Flag = Annotated[bool, Meta(description="true or false")]
Route = Literal["litellm", "native"]
Balance = Literal["session", "round-robin", "litellm"]


class ProxySection(Section):
    host: Annotated[str, Meta(pattern=r"^[^\s/]+$",
                              description="a host name or IP address to listen on, e.g. 127.0.0.1")] | UnsetType = UNSET
    port: Port | UnsetType = UNSET
    api_key: Secret | None | UnsetType = UNSET
    upstream_timeout: Annotated[float, Meta(gt=0, le=_FINITE, description="a number of seconds above 0")] \
        | UnsetType = UNSET
    max_body_mb: Annotated[float, Meta(gt=0, le=_FINITE, description="a size in MiB above 0")] | UnsetType = UNSET
    allowed_hosts: Annotated[
        list[Annotated[str, Meta(pattern=r"^(?![^:]*:[^:]*$)[^\s/@?#\[\]]+$")]],  # one colon: a port
        Meta(description="a list of host names or addresses, e.g. [gpubox, gpubox.lan] (no http://, no port)"),
    ] | None | UnsetType = UNSET


class LiteLLMSection(Section):
    port: Port | UnsetType = UNSET
    url: Annotated[str, Meta(pattern=_TEXT, description=_URL + "http://127.0.0.1:4000")] | None | UnsetType = UNSET
    api_key: Secret | None | UnsetType = UNSET


class BackendSection(Section):
    api_base: Annotated[str, Meta(pattern=_TEXT, description="the server's OpenAI-compatible base URL, "
                                                               + _URL + "http://127.0.0.1:8080/v1")]
    model: Annotated[str, Meta(pattern=_TEXT, description="a model id, or auto (the first id from GET "
                                                          "{api_base}/models)")] | UnsetType = UNSET
    max_tokens: Annotated[int, Meta(ge=1, description="a whole number of tokens above 0, e.g. 32000")] \
        | None | UnsetType = UNSET
    api_key: Annotated[str, Meta(pattern=_TEXT, description=f"the backend's key as text, or {ENV_PREFIX}VARIABLE")] \
        | None | UnsetType = UNSET
    command: Annotated[str, Meta(pattern=_TEXT, description="a llama-server command line, e.g. llama-server -m "
                                                            "model.gguf -c 131072 --metrics")] \
        | None | UnsetType = UNSET
    route: Annotated[Route, Meta(description="litellm (through LiteLLM) or native (straight to llama-server's own "
                                             "/v1/messages)")] | UnsetType = UNSET
    pin_slots: Flag | UnsetType = UNSET
    repair_tool_calls: Flag | UnsetType = UNSET


class HistorySection(Section):
    path: Annotated[str, Meta(pattern=_TEXT, description="a file path for the SQLite history")] | None \
        | UnsetType = UNSET
    retention_days: Annotated[float, Meta(gt=0, le=_FINITE, description="a number of days above 0")] | UnsetType = UNSET
    max_rows: Annotated[int, Meta(ge=1, description="a whole number above 0")] | UnsetType = UNSET
    bodies: Flag | UnsetType = UNSET
    body_max_kb: Annotated[int, Meta(ge=1, description="a whole number of KB above 0")] | UnsetType = UNSET
    bodies_max_mb: Annotated[float, Meta(gt=0, le=_FINITE, description="a number of MB above 0")] | UnsetType = UNSET


class GroupsSection(Section):
    balance: Annotated[Balance, Meta(
        description="session (a Claude Code session stays on one backend: its prompt cache stays warm), "
                    "round-robin (each request to the next backend) or litellm (LiteLLM's router chooses, with "
                    "its own session affinity)")] | UnsetType = UNSET


class CacheSection(Section):
    shared_first: Flag | UnsetType = UNSET
    keep_slots: Flag | UnsetType = UNSET
    slot_files: Annotated[int, Meta(ge=1, description="a whole number above 0")] | UnsetType = UNSET
    slot_files_mb: Annotated[float, Meta(gt=0, le=_FINITE, description="a number of MiB above 0")] | UnsetType = UNSET
    warm: Flag | UnsetType = UNSET
    warm_families: Annotated[int, Meta(ge=0, description="a whole number, 0 or more")] | UnsetType = UNSET


def _mapping_of(name: str) -> Meta:
    return Meta(description=f"a mapping of {name} settings (indented key: value lines)")


class RootSection(Section):
    """The top level. `backends` and `aliases` have names chosen by the user: the loader reads them."""

    proxy: Annotated[ProxySection, _mapping_of("proxy")] | None | UnsetType = UNSET
    litellm: Annotated[LiteLLMSection, _mapping_of("litellm")] | None | UnsetType = UNSET
    backends: Any = UNSET
    aliases: Any = UNSET
    history: Annotated[HistorySection, _mapping_of("history")] | None | UnsetType = UNSET
    groups: Annotated[GroupsSection, _mapping_of("groups")] | None | UnsetType = UNSET
    cache: Annotated[CacheSection, _mapping_of("cache")] | None | UnsetType = UNSET


def keys(section: type[Section]) -> tuple[str, ...]:
    """The keys a section accepts, in the order they are declared (and listed in messages)."""
    return section.__struct_fields__


def given(section: Section) -> dict[str, Any]:
    """The fields the file set (not UNSET, not empty): keyword arguments for the model's dataclass."""
    values = ((name, getattr(section, name)) for name in section.__struct_fields__)
    return {name: value for name, value in values if value is not UNSET and value is not None}


# -- from a round-trip tree to a Section, and msgspec's errors back to lines ----------------------

S = TypeVar("S", bound=Section)
_ERROR = re.compile(r"^(?P<what>.*?)(?: - at (?P<in_key>`key` in )?`\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)((?:\[\d+\])*)")
_NAMED = re.compile(r"^Object (?P<kind>contains unknown|missing required) field `(?P<name>.*)`$", re.DOTALL)


def plain(node: Any) -> Any:
    """The tree as plain Python values: ruamel's ScalarFloat, ScalarInt, ScalarBoolean and string
    types are subclasses that msgspec (strict, rightly) does not take for float, int, bool and str."""
    if isinstance(node, Mapping):
        return {_scalar(key): plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    return _scalar(node)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool | ScalarBoolean):  # ScalarBoolean (an anchored true) is an int
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value  # None, a date, a complex key


def convert(node: Any, section: type[S], file: Path | None, prefix: tuple[str, ...] = (), *,
            expected: str | None = None, missing_line: int | None = None) -> S:
    """`node` (a round-trip mapping) as `section`; the first problem as a ConfigError with its line.

    `prefix` is the key path of `node`; `expected` says what `node` itself should be (when it is not
    a mapping); `missing_line` is where a missing required key is reported (default: the mapping's).
    """
    try:
        return msgspec.convert(plain(node), section)
    except msgspec.ValidationError as exc:
        try:
            error = _explain(str(exc), node, section, file, prefix, expected, missing_line)
        except (LookupError, TypeError, StopIteration):  # a message this code does not know: say it as it is
            error = ConfigError(str(exc), file=file, key=key_path(*prefix) or None, line=node_line(node))
        raise error from None


def _explain(message: str, node: Any, section: type[Section], file: Path | None, prefix: tuple[str, ...],
             expected: str | None, missing_line: int | None) -> ConfigError:
    """msgspec's message (`Expected `int` >= 1 - at `$.proxy.port``) as a ConfigError about the YAML.

    msgspec names the failing place as a path from the root; the same path through the round-trip
    tree finds the node, and ruamel's line numbers on it."""
    match = _ERROR.match(message)
    assert match is not None  # the pattern matches any text
    steps = [(name, [int(i) for i in re.findall(r"\d+", index)]) for name, index in _STEP.findall(match["path"] or "")]
    named = _NAMED.match(match["what"])
    if match["in_key"] or named:  # the path names the mapping that has a wrong, unknown or missing key
        holder, cls = _walk(node, section, [name for name, _ in steps])
        where = (*prefix, *(name for name, _ in steps))
        if match["in_key"]:  # a key that is not text (`1: x`)
            bad = next(key for key in holder if not isinstance(key, str))
            return unknown_key(holder, bad, keys(cls), where, file)
        assert named is not None
        if named["kind"] == "contains unknown":
            return unknown_key(holder, named["name"], keys(cls), where, file)
        line = missing_line if missing_line is not None else node_line(holder)
        return ConfigError(file=file, key=key_path(*where, named["name"]), line=line,
                           found=f"no {named['name']}", expected=expected_of(cls, named["name"]))
    if not steps:  # the node itself is not a mapping
        return ConfigError(file=file, key=key_path(*prefix) or "(top level)", line=node_line(node) or 1,
                           found=describe(node), expected=expected or "a mapping (key: value lines)")
    parent, cls = _walk(node, section, [name for name, _ in steps[:-1]])
    name, indexes = steps[-1]
    value = parent[name]
    for index in indexes:  # an item of a list
        value = value[index]
    secret = name in SECRET_KEYS
    found = describe(value, secret=secret)
    if isinstance(value, str) and value.strip() and value != value.strip():
        found += " with leading or trailing spaces"
    where = (*prefix, *(step for step, _ in steps))
    return ConfigError(file=file, key=key_path(*where), line=value_line(parent, name), found=found,
                       expected=expected_of(cls, name) or ("a different value" if secret else match["what"]))


def _walk(node: Any, cls: type[Section], names: list[str]) -> tuple[Any, type[Section]]:
    """The node and Section that `names` (field after field) lead to from `node` and `cls`."""
    for name in names:
        node, cls = node[name], _struct_of(_field_types(cls)[name])
    return node, cls


@functools.cache
def _field_types(cls: type[Section]) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _struct_of(hint: Any) -> type[Section]:
    """The Section inside a field's type (`Annotated[ProxySection, ...] | None | UnsetType`)."""
    for inner in _unwrap(hint):
        if isinstance(inner, type) and issubclass(inner, Section):
            return inner
    raise LookupError(f"no Section in {hint!r}")


def _unwrap(hint: Any) -> list[Any]:
    """A field's type, its union members and what they annotate, outermost first."""
    found = [hint]
    origin = typing.get_origin(hint)
    if origin is Annotated:
        found += _unwrap(typing.get_args(hint)[0])
    elif origin in (Union, types.UnionType):
        for arg in typing.get_args(hint):
            found += _unwrap(arg)
    return found


def expected_of(cls: type[Section], name: str) -> str | None:
    """The `description` of a field: what the message says it expects."""
    for inner in _unwrap(_field_types(cls).get(name)):
        if typing.get_origin(inner) is Annotated:
            for meta in inner.__metadata__:
                if isinstance(meta, Meta) and meta.description:
                    return str(meta.description)
    return None
