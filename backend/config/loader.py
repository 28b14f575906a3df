"""Read and validate ccbridge.yaml into a typed `Config`.

Every problem becomes a `ConfigError` that names the file, the key path
(`backends.local.api_base`), the 1-based line, what was found and what was
expected, so a person can fix the file without reading code.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from backend import paths
from backend.config import _files
from backend.config.aliases import (
    GROUP_EXAMPLE,
    group_text,
    parse_alias_target,
    parse_members,
    suggest,
    validate_backend_name,
    validate_pattern,
)
from backend.config.model import (
    BALANCE_MODES,
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

DEFAULT_CONFIG_TEXT = """\
# ccbridge.yaml: how ccbridge routes Claude Code -> LiteLLM -> your model server.
# ccbridge wrote this file on first start and never overwrites it; edit it freely
# (when ccbridge edits it for you, your comments are kept and the previous
# version is saved as ccbridge.yaml.bak).
# Docs: the "Configuration" section of ccbridge's README.md.
proxy:
  host: 127.0.0.1      # loopback by default
  port: 8082
  # api_key: ...       # optional: clients must send it (x-api-key or Bearer)
litellm:
  port: 4000           # ccbridge starts and supervises LiteLLM on 127.0.0.1:port
  # url: http://127.0.0.1:4000   # instead: use an already running LiteLLM (or any
  #                               # Anthropic-compatible server); start nothing
backends:
  local:
    api_base: http://127.0.0.1:8080/v1
    model: auto        # auto = first id from GET {api_base}/models
    # max_tokens: 32000  # optional cap: Claude Code asks for 64000-128000
    # command: llama-server -m /path/to/model.gguf -c 131072 --metrics   # optional: ccbridge runs it
aliases:               # Claude model name pattern -> backend name (or backend/model)
  "claude-haiku-*": local
  "*": local           # catch-all: any model Claude Code asks for
"""
"""The file `ensure_config()` writes when there is none."""

ENV_PREFIX = "os.environ/"
"""A value `os.environ/NAME` means: read it from the environment variable NAME."""

SECTIONS: dict[str, tuple[str, ...]] = {
    "proxy": ("host", "port", "api_key", "upstream_timeout", "max_body_mb", "allowed_hosts"),
    "litellm": ("port", "url", "api_key"),
    "backends": (),  # free-form names
    "aliases": (),  # free-form patterns
    "history": ("path", "retention_days", "max_rows", "bodies", "body_max_kb", "bodies_max_mb"),
    "groups": ("balance",),
    "cache": ("shared_first", "keep_slots", "slot_files", "slot_files_mb", "warm", "warm_families"),
}
"""Top-level sections and the keys each accepts."""

BACKEND_KEYS = ("api_base", "model", "max_tokens", "api_key", "command", "route", "pin_slots",
                "repair_tool_calls")
ROUTES = ("litellm", "native")
"""Keys one `backends.<name>` entry accepts."""

_SECRET_KEYS = frozenset({"api_key"})
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


def key_path(*parts: str) -> str:
    """Dotted key path for messages; parts with unusual characters are quoted."""
    shown = []
    for part in parts:
        text = str(part)
        shown.append(text if _PLAIN_KEY.fullmatch(text) else f'"{text}"')
    return ".".join(shown)


class _Checker:
    """Walks the round-trip YAML tree and builds a Config, failing with line numbers."""

    def __init__(self, file: Path | None) -> None:
        self.file = file

    # -- helpers ---------------------------------------------------------

    @staticmethod
    def key_line(node: Any, key: Any) -> int | None:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return None

    @staticmethod
    def value_line(node: Any, key: Any) -> int | None:
        try:
            return int(node.lc.value(key)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return _Checker.key_line(node, key)

    @staticmethod
    def node_line(node: Any) -> int | None:
        try:
            return int(node.lc.line) + 1
        except (AttributeError, TypeError):
            return None

    def fail(
        self,
        key: str,
        line: int | None,
        found: str | None,
        expected: str | None,
        hint: str | None = None,
        problem: str | None = None,
    ) -> ConfigError:
        return ConfigError(
            problem,
            file=self.file,
            key=key,
            line=line,
            found=found,
            expected=expected,
            hint=hint,
        )

    def check_keys(self, node: Any, allowed: tuple[str, ...], *prefix: str) -> None:
        for key in node:
            if key in allowed:
                continue
            guess = suggest(str(key), allowed)
            hint = f"Did you mean '{guess}'?" if guess else None
            raise self.fail(
                key_path(*prefix, str(key)),
                self.key_line(node, key),
                f'an unknown key "{key}"',
                "one of: " + ", ".join(allowed),
                hint,
            )

    def section(self, root: Any, name: str) -> Any:
        """The mapping under a section (an empty section counts as empty), or None."""
        if name not in root:
            return None
        value = root[name]
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(
                name,
                self.value_line(root, name),
                describe(value),
                f"a mapping of {name} settings (indented key: value lines)",
            )
        return value

    def integer(self, node: Any, key: str, path: str, lo: int, hi: int | None, what: str) -> int:
        value = node[key]
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (value < lo or (hi is not None and value > hi)):
            ok = False
        if not ok:
            raise self.fail(path, self.value_line(node, key), describe(value), what)
        return int(value)

    def port(self, node: Any, key: str, path: str) -> int:
        return self.integer(node, key, path, 1, 65535, "a whole number from 1 to 65535")

    def number(self, node: Any, key: str, path: str, what: str) -> float:
        value = node[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and (not math.isfinite(float(value)) or float(value) <= 0):
            ok = False
        if not ok:
            raise self.fail(path, self.value_line(node, key), describe(value), what)
        return float(value)

    def text(self, node: Any, key: str, path: str, what: str, *, secret: bool = False) -> str:
        value = node[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, self.value_line(node, key), describe(value, secret=secret), what)
        if value != value.strip():
            raise self.fail(
                path,
                self.value_line(node, key),
                describe(value, secret=secret) + " with leading or trailing spaces",
                what,
            )
        return str(value)

    def optional_text(self, node: Any, key: str, path: str, what: str, **kw: Any) -> str | None:
        if key not in node or node[key] is None:
            return None
        return self.text(node, key, path, what, **kw)

    def url(self, node: Any, key: str, path: str, example: str) -> str:
        what = f"an http:// or https:// URL with a host, e.g. {example}"
        value = self.text(node, key, path, what)
        line = self.value_line(node, key)
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
            raise self.fail(path, line, f"{describe(value)} ({problem})", what)
        return value.rstrip("/")

    def host_names(self, node: Any, key: str, path: str) -> tuple[str, ...]:
        """A list of host names or addresses, each as a client puts it in `Host` (no scheme, no port)."""
        what = "a list of host names or addresses, e.g. [gpubox, gpubox.lan] (no http://, no port)"
        value = node[key]
        if isinstance(value, str) or not isinstance(value, list):
            raise self.fail(path, self.value_line(node, key), describe(value), what)
        names: list[str] = []
        for item in value:
            bad = not isinstance(item, str) or not item.strip() or any(
                ch.isspace() or ch in "/@?#[]" for ch in item) or (item.count(":") == 1)
            if bad:
                raise self.fail(path, self.value_line(node, key), describe(item), what)
            names.append(item.lower().rstrip("."))
        return tuple(names)

    def env_secret(self, node: Any, key: str, path: str) -> str | None:
        value = self.optional_text(
            node, key, path, f"a key as text, or {ENV_PREFIX}VARIABLE", secret=True
        )
        if value is None or not value.startswith(ENV_PREFIX):
            return value
        name = value[len(ENV_PREFIX) :]
        resolved = os.environ.get(name)
        if not name or not resolved:
            raise self.fail(
                path,
                self.value_line(node, key),
                f'"{value}", but the environment variable {name or "(no name)"} is unset or empty',
                f"{ENV_PREFIX}VARIABLE naming a variable that is set, or the key itself",
            )
        return resolved

    # -- sections --------------------------------------------------------

    def build(self, root: Any) -> Config:
        if root is None:
            raise self.fail(
                "(top level)",
                1,
                "an empty file",
                "the sections " + ", ".join(SECTIONS) + " (at least backends and aliases)",
            )
        if not isinstance(root, Mapping):
            raise self.fail(
                "(top level)",
                self.node_line(root) or 1,
                describe(root),
                "a mapping with the sections " + ", ".join(SECTIONS),
            )
        self.check_keys(root, tuple(SECTIONS))
        proxy = self.proxy(root)
        litellm = self.litellm(root)
        backends = self.backends(root)
        aliases = self.aliases(root, backends)
        history = self.history(root)
        groups = self.groups(root)
        cache = self.cache(root)
        return Config(
            proxy=proxy,
            litellm=litellm,
            backends=backends,
            aliases=aliases,
            history=history,
            groups=groups,
            cache=cache,
            source=self.file,
        )

    def proxy(self, root: Any) -> ProxyConfig:
        node = self.section(root, "proxy")
        if node is None:
            return ProxyConfig()
        self.check_keys(node, SECTIONS["proxy"], "proxy")
        kw: dict[str, Any] = {}
        if "host" in node:
            kw["host"] = self.text(
                node, "host", "proxy.host", "an address to listen on, e.g. 127.0.0.1"
            )
            if any(ch.isspace() for ch in kw["host"]) or "/" in kw["host"]:
                raise self.fail(
                    "proxy.host",
                    self.value_line(node, "host"),
                    describe(kw["host"]),
                    "a host name or IP address, e.g. 127.0.0.1",
                )
        if "port" in node:
            kw["port"] = self.port(node, "port", "proxy.port")
        kw["api_key"] = self.env_secret(node, "api_key", "proxy.api_key")
        if "upstream_timeout" in node:
            kw["upstream_timeout"] = self.number(
                node, "upstream_timeout", "proxy.upstream_timeout", "a number of seconds above 0"
            )
        if "max_body_mb" in node:
            kw["max_body_mb"] = self.number(
                node, "max_body_mb", "proxy.max_body_mb", "a size in MiB above 0"
            )
        if "allowed_hosts" in node and node["allowed_hosts"] is not None:
            kw["allowed_hosts"] = self.host_names(node, "allowed_hosts", "proxy.allowed_hosts")
        config = ProxyConfig(**kw)
        if config.host not in LOOPBACK_HOSTS and not config.api_key:
            raise self.fail(
                "proxy.host",
                self.value_line(node, "host"),
                describe(config.host) + " (not loopback) and no proxy.api_key",
                "a loopback address (" + ", ".join(sorted(LOOPBACK_HOSTS)) + ")",
                "Listening on another address needs proxy.api_key, or anyone who can "
                "reach it can use your models",
            )
        return config

    def litellm(self, root: Any) -> LiteLLMConfig:
        node = self.section(root, "litellm")
        if node is None:
            return LiteLLMConfig()
        self.check_keys(node, SECTIONS["litellm"], "litellm")
        kw: dict[str, Any] = {}
        if "port" in node:
            kw["port"] = self.port(node, "port", "litellm.port")
        if "url" in node and node["url"] is not None:
            kw["url"] = self.url(node, "url", "litellm.url", "http://127.0.0.1:4000")
        kw["api_key"] = self.env_secret(node, "api_key", "litellm.api_key")
        return LiteLLMConfig(**kw)

    def backends(self, root: Any) -> dict[str, BackendConfig]:
        expected = "at least one backend, e.g.\n  local:\n    api_base: http://127.0.0.1:8080/v1"
        if "backends" not in root:
            raise self.fail("backends", self.node_line(root) or 1, "no backends section", expected)
        node = root["backends"]
        if not isinstance(node, Mapping) or not node:
            raise self.fail("backends", self.value_line(root, "backends"), describe(node), expected)
        result: dict[str, BackendConfig] = {}
        for name, entry in node.items():
            path = key_path("backends", str(name))
            reason = validate_backend_name(name) if isinstance(name, str) else "not text"
            if reason:
                raise self.fail(
                    path,
                    self.key_line(node, name),
                    f"the backend name {describe(name)}",
                    reason,
                )
            if not isinstance(entry, Mapping):
                raise self.fail(
                    path,
                    self.value_line(node, name),
                    describe(entry),
                    "a mapping with at least api_base, e.g. api_base: http://127.0.0.1:8080/v1",
                )
            self.check_keys(entry, BACKEND_KEYS, "backends", name)
            if "api_base" not in entry:
                raise self.fail(
                    key_path("backends", name, "api_base"),
                    self.key_line(node, name),
                    "no api_base",
                    "the server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1",
                )
            kw: dict[str, Any] = {
                "name": name,
                "api_base": self.url(
                    entry,
                    "api_base",
                    key_path("backends", name, "api_base"),
                    "http://127.0.0.1:8080/v1",
                ),
            }
            if "model" in entry:
                kw["model"] = self.text(
                    entry,
                    "model",
                    key_path("backends", name, "model"),
                    "a model id, or auto (the first id from GET {api_base}/models)",
                )
            if "max_tokens" in entry and entry["max_tokens"] is not None:
                kw["max_tokens"] = self.integer(
                    entry,
                    "max_tokens",
                    key_path("backends", name, "max_tokens"),
                    1,
                    None,
                    "a whole number of tokens above 0, e.g. 32000",
                )
            kw["api_key"] = self.optional_text(
                entry,
                "api_key",
                key_path("backends", name, "api_key"),
                f"the backend's key as text, or {ENV_PREFIX}VARIABLE",
                secret=True,
            )
            kw["command"] = self.optional_text(
                entry,
                "command",
                key_path("backends", name, "command"),
                "a llama-server command line, e.g. llama-server -m model.gguf -c 131072 --metrics",
            )
            problem = command_problem(kw["command"], kw["api_base"]) if kw["command"] else None
            if problem:
                raise self.fail(key_path("backends", name, "command"), self.value_line(entry, "command"),
                                describe(kw["command"]), f"a command line llama-server can run: {problem}")
            if "route" in entry:
                route = entry["route"]
                if route not in ROUTES:
                    raise self.fail(key_path("backends", name, "route"), self.value_line(entry, "route"),
                                    describe(route), "litellm (through LiteLLM) or native (straight to "
                                    "llama-server's own /v1/messages)")
                kw["route"] = route
            if "pin_slots" in entry:
                if not isinstance(entry["pin_slots"], bool):
                    raise self.fail(key_path("backends", name, "pin_slots"), self.value_line(entry, "pin_slots"),
                                    describe(entry["pin_slots"]), "true or false")
                kw["pin_slots"] = entry["pin_slots"]
            if "repair_tool_calls" in entry:
                if not isinstance(entry["repair_tool_calls"], bool):
                    raise self.fail(key_path("backends", name, "repair_tool_calls"),
                                    self.value_line(entry, "repair_tool_calls"),
                                    describe(entry["repair_tool_calls"]), "true or false")
                kw["repair_tool_calls"] = entry["repair_tool_calls"]
            result[str(name)] = BackendConfig(**kw)
        return result

    def aliases(self, root: Any, backends: dict[str, BackendConfig]) -> tuple[AliasRule, ...]:
        first = next(iter(backends))
        expected = f'at least one alias, e.g.\n  "*": {first}'
        if "aliases" not in root:
            raise self.fail("aliases", self.node_line(root) or 1, "no aliases section", expected)
        node = root["aliases"]
        if not isinstance(node, Mapping) or not node:
            raise self.fail("aliases", self.value_line(root, "aliases"), describe(node), expected)
        rules: list[AliasRule] = []
        for pattern, target in node.items():
            path = key_path("aliases", str(pattern))
            if not isinstance(pattern, str):
                raise self.fail(
                    path,
                    self.key_line(node, pattern),
                    f"the pattern {describe(pattern)}",
                    'a Claude model name pattern as text, e.g. "claude-haiku-*" (quote it)',
                )
            reason = validate_pattern(pattern)
            if reason:
                raise self.fail(
                    path,
                    self.key_line(node, pattern),
                    f"the pattern {describe(pattern)} ({reason})",
                    'a Claude model name pattern, e.g. "claude-haiku-*"',
                )
            expected_target = f"a backend name ({', '.join(backends)}), backend/model, or a list {GROUP_EXAMPLE}"
            if isinstance(target, list):
                try:
                    members = parse_members(target, backends)
                except ValueError as exc:
                    raise self.fail(path, self.value_line(node, pattern), f"the group {describe_list(target)} ({exc})",
                                    f"a list of backend names, e.g. {GROUP_EXAMPLE}") from None
                self.check_group_routes(members, backends, path, self.value_line(node, pattern))
                rules.append(AliasRule(str(pattern), group_text(members), members[0], None,
                                       members if len(members) > 1 else ()))
                continue
            if not isinstance(target, str):
                raise self.fail(path, self.value_line(node, pattern), describe(target), expected_target)
            try:
                backend, model, members = parse_alias_target(str(target), backends)
            except ValueError as exc:
                raise self.fail(
                    path,
                    self.value_line(node, pattern),
                    f'the target "{target}" ({exc})',
                    expected_target,
                ) from None
            self.check_group_routes(members, backends, path, self.value_line(node, pattern))
            rules.append(AliasRule(str(pattern), str(target), backend, model, members))
        return tuple(rules)

    def check_group_routes(self, members: tuple[str, ...], backends: dict[str, BackendConfig], path: str,
                           line: int | None) -> None:
        """A group's backends share one route: LiteLLM fails over between LiteLLM backends, the front
        between native ones; a request cannot switch from one to the other."""
        routes = {backends[m].route for m in members}
        if len(routes) > 1:
            native = [m for m in members if backends[m].route == "native"]
            other = [m for m in members if backends[m].route != "native"]
            raise self.fail(path, line, f"the group {group_text(members)}, which mixes route: native "
                            f"({', '.join(native)}) and route: litellm ({', '.join(other)})",
                            "backends of one route in a group",
                            f"Set the same route on all of them (backends.{native[0]}.route), or make two aliases")

    def groups(self, root: Any) -> GroupsConfig:
        node = self.section(root, "groups")
        if node is None:
            return GroupsConfig()
        self.check_keys(node, SECTIONS["groups"], "groups")
        kw: dict[str, Any] = {}
        if "balance" in node:
            if node["balance"] not in BALANCE_MODES:
                raise self.fail("groups.balance", self.value_line(node, "balance"), describe(node["balance"]),
                                "session (a Claude Code session stays on one backend: its prompt cache stays "
                                "warm), round-robin (each request to the next backend) or litellm (LiteLLM's "
                                "router chooses, with its own session affinity)")
            kw["balance"] = node["balance"]
        return GroupsConfig(**kw)

    def cache(self, root: Any) -> CacheConfig:
        node = self.section(root, "cache")
        if node is None:
            return CacheConfig()
        self.check_keys(node, SECTIONS["cache"], "cache")
        kw: dict[str, Any] = {}
        for key in ("shared_first", "keep_slots", "warm"):
            if key in node:
                if not isinstance(node[key], bool):
                    raise self.fail(f"cache.{key}", self.value_line(node, key), describe(node[key]), "true or false")
                kw[key] = node[key]
        if "slot_files" in node:
            kw["slot_files"] = self.integer(node, "slot_files", "cache.slot_files", 1, None, "a whole number above 0")
        if "slot_files_mb" in node:
            kw["slot_files_mb"] = self.number(node, "slot_files_mb", "cache.slot_files_mb", "a number of MiB above 0")
        if "warm_families" in node:
            kw["warm_families"] = self.integer(node, "warm_families", "cache.warm_families", 0, None,
                                               "a whole number, 0 or more")
        return CacheConfig(**kw)

    def history(self, root: Any) -> HistoryConfig:
        node = self.section(root, "history")
        if node is None:
            return HistoryConfig()
        self.check_keys(node, SECTIONS["history"], "history")
        kw: dict[str, Any] = {}
        kw["path"] = self.optional_text(
            node, "path", "history.path", "a file path for the SQLite history"
        )
        if "retention_days" in node:
            kw["retention_days"] = self.number(
                node, "retention_days", "history.retention_days", "a number of days above 0"
            )
        if "max_rows" in node:
            kw["max_rows"] = self.integer(
                node, "max_rows", "history.max_rows", 1, None, "a whole number above 0"
            )
        if "bodies" in node:
            if not isinstance(node["bodies"], bool):
                raise self.fail("history.bodies", self.value_line(node, "bodies"), describe(node["bodies"]),
                                "true or false")
            kw["bodies"] = node["bodies"]
        if "body_max_kb" in node:
            kw["body_max_kb"] = self.integer(
                node, "body_max_kb", "history.body_max_kb", 1, None, "a whole number of KB above 0"
            )
        if "bodies_max_mb" in node:
            kw["bodies_max_mb"] = self.number(
                node, "bodies_max_mb", "history.bodies_max_mb", "a number of MB above 0"
            )
        return HistoryConfig(**kw)


def describe_list(items: list[Any]) -> str:
    """A YAML list as found, for an error message: `[box-a, box-b]`."""
    return "[" + ", ".join(str(item) for item in items) + "]"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


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


def parse_yaml(text: str, file: Path | None = None) -> Any:
    """Parse `text` round-trip (with line info); syntax errors become ConfigError."""
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise yaml_error(exc, text, file) from None


def config_from_tree(tree: Any, file: Path | None = None) -> Config:
    """Validate an already parsed round-trip tree (see `parse_yaml`) into a Config."""
    return _Checker(file).build(tree)


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
