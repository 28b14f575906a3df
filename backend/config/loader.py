"""Read and validate ccbridge.yaml into a typed `Config`.

The file is parsed round-trip (ruamel keeps every node's line), each section is checked against
its declaration in `backend.config.schema` (msgspec), and what a type cannot say is checked here:
URLs, environment variables, backend names, alias targets, loopback without a key. Every problem
becomes a `ConfigError` (backend.config.errors) naming the file, the key path, the line, what was
found and what was expected.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from backend import paths
from backend.config import _files
from backend.config.aliases import (
    GROUP_EXAMPLE,
    group_text,
    parse_alias_target,
    parse_members,
    validate_backend_name,
    validate_pattern,
)
from backend.config.default import DEFAULT_CONFIG_TEXT
from backend.config.errors import (
    ConfigError,
    describe,
    describe_list,
    key_line,
    key_path,
    node_line,
    value_line,
    yaml_error,
)
from backend.config.model import (
    LOOPBACK_HOSTS,
    AliasRule,
    BackendConfig,
    CacheConfig,
    Config,
    GroupsConfig,
    HistoryConfig,
    LiteLLMConfig,
    ProxyConfig,
)
from backend.config.schema import (
    ENV_PREFIX,
    BackendSection,
    RootSection,
    convert,
    expected_of,
    given,
    keys,
)

__all__ = [  # what other modules import from here (some of it lives in errors.py and default.py)
    "DEFAULT_CONFIG_TEXT",
    "ConfigError",
    "command_problem",
    "config_from_tree",
    "describe",
    "ensure_config",
    "key_path",
    "load_config",
    "parse_config",
    "parse_yaml",
    "read_text",
    "yaml_error",
]


def config_from_tree(tree: Any, file: Path | None = None) -> Config:
    """Validate an already parsed round-trip tree (see `parse_yaml`) into a Config."""
    sections = ", ".join(keys(RootSection))
    if tree is None:
        raise ConfigError(file=file, key="(top level)", line=1, found="an empty file",
                          expected=f"the sections {sections} (at least backends and aliases)")
    if not isinstance(tree, Mapping):
        raise ConfigError(file=file, key="(top level)", line=node_line(tree) or 1, found=describe(tree),
                          expected=f"a mapping with the sections {sections}")
    root = convert(tree, RootSection, file)
    proxy = _proxy(root, tree, file)
    litellm = _litellm(root, tree, file)
    backends = _backends(root, tree, file)
    return Config(
        proxy=proxy,
        litellm=litellm,
        backends=backends,
        aliases=_aliases(tree, backends, file),
        history=HistoryConfig(**given(root.history)) if root.history else HistoryConfig(),
        groups=GroupsConfig(**given(root.groups)) if root.groups else GroupsConfig(),
        cache=CacheConfig(**given(root.cache)) if root.cache else CacheConfig(),
        source=file,
    )


def _proxy(root: RootSection, tree: Any, file: Path | None) -> ProxyConfig:
    if not root.proxy:
        return ProxyConfig()
    node, kw = tree["proxy"], given(root.proxy)
    if "api_key" in kw:
        kw["api_key"] = _env_secret(kw["api_key"], node, "proxy.api_key", file)
    if "allowed_hosts" in kw:
        kw["allowed_hosts"] = tuple(name.lower().rstrip(".") for name in kw["allowed_hosts"])
    config = ProxyConfig(**kw)
    if config.host not in LOOPBACK_HOSTS and not config.api_key:
        raise ConfigError(
            file=file,
            key="proxy.host",
            line=value_line(node, "host"),
            found=describe(config.host) + " (not loopback) and no proxy.api_key",
            expected="a loopback address (" + ", ".join(sorted(LOOPBACK_HOSTS)) + ")",
            hint="Listening on another address needs proxy.api_key, or anyone who can "
            "reach it can use your models",
        )
    return config


def _litellm(root: RootSection, tree: Any, file: Path | None) -> LiteLLMConfig:
    if not root.litellm:
        return LiteLLMConfig()
    node, kw = tree["litellm"], given(root.litellm)
    if "url" in kw:
        kw["url"] = _url(kw["url"], node, "url", ("litellm",), type(root.litellm), file)
    if "api_key" in kw:
        kw["api_key"] = _env_secret(kw["api_key"], node, "litellm.api_key", file)
    return LiteLLMConfig(**kw)


def _required_section(tree: Any, key: str, file: Path | None, expected: str) -> Mapping[Any, Any]:
    """The non-empty mapping under `key`; a ConfigError naming its line (or the file's) otherwise."""
    if key not in tree:
        raise ConfigError(file=file, key=key, line=node_line(tree) or 1, found=f"no {key} section",
                          expected=expected)
    node = tree[key]
    if not isinstance(node, Mapping) or not node:
        raise ConfigError(file=file, key=key, line=value_line(tree, key), found=describe(node), expected=expected)
    return node


def _backends(root: RootSection, tree: Any, file: Path | None) -> dict[str, BackendConfig]:
    node = _required_section(tree, "backends", file,
                             "at least one backend, e.g.\n  local:\n    api_base: http://127.0.0.1:8080/v1")
    result: dict[str, BackendConfig] = {}
    for name, entry in node.items():
        reason = validate_backend_name(name) if isinstance(name, str) else "not text"
        if reason:
            raise ConfigError(file=file, key=key_path("backends", name), line=key_line(node, name),
                              found=f"the backend name {describe(name)}", expected=reason)
        if not isinstance(entry, Mapping):
            raise ConfigError(file=file, key=key_path("backends", name), line=value_line(node, name),
                              found=describe(entry),
                              expected="a mapping with at least api_base, e.g. api_base: http://127.0.0.1:8080/v1")
        prefix = ("backends", str(name))
        kw = given(convert(entry, BackendSection, file, prefix, missing_line=key_line(node, name)))
        kw["api_base"] = _url(kw["api_base"], entry, "api_base", prefix, BackendSection, file)
        problem = command_problem(kw["command"], kw["api_base"]) if "command" in kw else None
        if problem:
            raise ConfigError(file=file, key=key_path(*prefix, "command"), line=value_line(entry, "command"),
                              found=describe(kw["command"]), expected=f"a command line llama-server can run: {problem}")
        result[str(name)] = BackendConfig(name=str(name), **kw)
    return result


def _url(value: str, node: Any, key: str, prefix: tuple[str, ...], section: type, file: Path | None) -> str:
    """`value` (text already) as a URL ccbridge can call, without a trailing slash."""
    problem = None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        problem = str(exc)
    else:
        if parts.scheme not in ("http", "https"):
            problem = "no http:// or https:// scheme"
        elif not parts.hostname:
            problem = "no host"
        elif any(ch.isspace() for ch in value):
            problem = "whitespace inside the URL"
        elif parts.fragment or parts.query:
            problem = "a query or fragment (?... or #...)"
    if problem:
        raise ConfigError(file=file, key=key_path(*prefix, key), line=value_line(node, key),
                          found=f"{describe(value)} ({problem})", expected=expected_of(section, key))
    return value.rstrip("/")


def _env_secret(value: str, node: Any, path: str, file: Path | None) -> str:
    """A key, or the value of the environment variable an `os.environ/NAME` value names."""
    if not value.startswith(ENV_PREFIX):
        return value
    name = value[len(ENV_PREFIX) :]
    resolved = os.environ.get(name)
    if not name or not resolved:
        raise ConfigError(
            file=file,
            key=path,
            line=value_line(node, "api_key"),
            found=f'"{value}", but the environment variable {name or "(no name)"} is unset or empty',
            expected=f"{ENV_PREFIX}VARIABLE naming a variable that is set, or the key itself",
        )
    return resolved


def _aliases(tree: Any, backends: dict[str, BackendConfig], file: Path | None) -> tuple[AliasRule, ...]:
    first = next(iter(backends))
    node = _required_section(tree, "aliases", file, f'at least one alias, e.g.\n  "*": {first}')
    rules: list[AliasRule] = []
    for pattern, target in node.items():
        path = key_path("aliases", str(pattern))
        if not isinstance(pattern, str):
            raise ConfigError(file=file, key=path, line=key_line(node, pattern),
                              found=f"the pattern {describe(pattern)}",
                              expected='a Claude model name pattern as text, e.g. "claude-haiku-*" (quote it)')
        reason = validate_pattern(pattern)
        if reason:
            raise ConfigError(file=file, key=path, line=key_line(node, pattern),
                              found=f"the pattern {describe(pattern)} ({reason})",
                              expected='a Claude model name pattern, e.g. "claude-haiku-*"')
        line = value_line(node, pattern)
        expected_target = f"a backend name ({', '.join(backends)}), backend/model, or a list {GROUP_EXAMPLE}"
        if isinstance(target, list):
            try:
                members = parse_members(target, backends)
            except ValueError as exc:
                raise ConfigError(file=file, key=path, line=line, found=f"the group {describe_list(target)} ({exc})",
                                  expected=f"a list of backend names, e.g. {GROUP_EXAMPLE}") from None
            _check_group_routes(members, backends, path, line, file)
            rules.append(AliasRule(str(pattern), group_text(members), members[0], None,
                                   members if len(members) > 1 else ()))
            continue
        if not isinstance(target, str):
            raise ConfigError(file=file, key=path, line=line, found=describe(target), expected=expected_target)
        try:
            backend, model, members = parse_alias_target(str(target), backends)
        except ValueError as exc:
            raise ConfigError(file=file, key=path, line=line, found=f'the target "{target}" ({exc})',
                              expected=expected_target) from None
        _check_group_routes(members, backends, path, line, file)
        rules.append(AliasRule(str(pattern), str(target), backend, model, members))
    return tuple(rules)


def _check_group_routes(members: tuple[str, ...], backends: dict[str, BackendConfig], path: str,
                        line: int | None, file: Path | None) -> None:
    """A group's backends share one route: LiteLLM fails over between LiteLLM backends, the front
    between native ones; a request cannot switch from one to the other."""
    routes = {backends[m].route for m in members}
    if len(routes) > 1:
        native = [m for m in members if backends[m].route == "native"]
        other = [m for m in members if backends[m].route != "native"]
        raise ConfigError(file=file, key=path, line=line,
                          found=f"the group {group_text(members)}, which mixes route: native "
                          f"({', '.join(native)}) and route: litellm ({', '.join(other)})",
                          expected="backends of one route in a group",
                          hint=f"Set the same route on all of them (backends.{native[0]}.route), or make two aliases")


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def parse_yaml(text: str, file: Path | None = None) -> Any:
    """Parse `text` round-trip (with line info); syntax errors become ConfigError."""
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise yaml_error(exc, text, file) from None


def parse_config(text: str, path: Path | None = None) -> Config:
    """Validate the text of a ccbridge.yaml; `path` is only used in messages and `source`."""
    return config_from_tree(parse_yaml(text, path), path)


def read_text(path: Path) -> str:
    """Read a config file as UTF-8 (a BOM is allowed); problems become ConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "file not found",
            file=path,
            expected="a ccbridge.yaml (run ccbridge once to create the default one)",
        ) from None
    except IsADirectoryError:
        raise ConfigError("this is a directory", file=path, expected="a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"cannot read it ({exc.strerror or exc})", file=path) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            "not UTF-8 text",
            file=path,
            line=line,
            found=f"the byte 0x{data[exc.start]:02x}",
            expected="a UTF-8 text file",
        ) from None


def load_config(path: Path) -> Config:
    """Read and validate `path`; raises ConfigError explaining any problem."""
    path = Path(path)
    return parse_config(read_text(path), path)


def ensure_config(path: Path | None = None) -> tuple[Config, bool]:
    """Load the config file, creating the default one first if it is missing.

    Returns (config, created). Never overwrites an existing file: an invalid
    existing file raises ConfigError and is left exactly as it is.
    """
    path = Path(path) if path is not None else paths.default_config_file()
    if path.exists():
        return load_config(path), False
    created = _files.write_new(path, DEFAULT_CONFIG_TEXT, _files.default_mode())
    return load_config(path), created


def command_problem(command: str, api_base: str) -> str | None:
    """Why a backend's `command` cannot serve its `api_base` (unparsable, empty, another --port)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"the command line cannot be split ({exc})"
    if not argv:
        return "the command line is empty"
    try:
        parts = urlsplit(api_base)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--port" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--port=") else None)
        if value is not None and value != str(port):
            return f"it says --port {value} but api_base uses port {port}: make them the same, or drop --port"
    return None
