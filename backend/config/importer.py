"""Turn a guide-style LiteLLM `config.yaml` into a ccbridge.yaml.

The guide this project grew from runs LiteLLM with a config like::

    model_list:
      - model_name: claude-3-5-sonnet-20241022
        litellm_params:
          model: openai/qwen2.5-coder
          api_base: http://localhost:8080/v1
          api_key: sk-no-key
    general_settings:
      master_key: sk-1234

Each distinct `api_base` becomes a backend (the first is `local`, others are
named after host and port), each `model_name` an alias to `backend/model`,
and a `"*"` catch-all is added because current Claude Code asks for names
without a date suffix that the old list never matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from backend.config import _files
from backend.config.aliases import CATCH_ALL, validate_backend_name, validate_pattern
from backend.config.loader import DEFAULT_CONFIG_TEXT, ConfigError, parse_config, read_text, yaml_error
from backend.config.model import Config

STRIPPED_PREFIXES = ("openai/", "hosted_vllm/")
"""LiteLLM provider prefixes for OpenAI-compatible servers; ccbridge adds its own."""

OTHER_PROVIDERS = frozenset(
    {
        "anthropic",
        "azure",
        "azure_ai",
        "bedrock",
        "cohere",
        "gemini",
        "groq",
        "mistral",
        "ollama",
        "ollama_chat",
        "openrouter",
        "together_ai",
        "vertex_ai",
    }
)
"""Prefixes of providers that are not a plain OpenAI-compatible server: not imported."""

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/+-]*")
_YAML_SPECIAL = re.compile(
    r"(?i:true|false|yes|no|on|off|null|~|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?|"
    r"0x[0-9a-f]+|0o[0-7]+|\.inf|\.nan)"
)


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain when that is unambiguous, else double-quoted."""
    if _PLAIN.fullmatch(text) and not _YAML_SPECIAL.fullmatch(text) and ": " not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _pattern(text: str) -> str:
    """Alias patterns are always double-quoted, as in the default file."""
    return json.dumps(text, ensure_ascii=False)


def _backend_name(api_base: str, taken: set[str]) -> str:
    parts = urlsplit(api_base)
    host = parts.hostname or "backend"
    try:
        port = parts.port
    except ValueError:
        port = None
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", host).strip("-.") or "backend"
    if port:
        base = f"{base}-{port}"
    if validate_backend_name(base):
        base = "backend"
    name, counter = base, 2
    while name in taken:
        name = f"{base}-{counter}"
        counter += 1
    return name


def _fail(src: Path, problem: str, **kw: Any) -> ConfigError:
    return ConfigError(problem, file=src, **kw)


def _line(node: Any, index: int) -> int | None:
    try:
        return int(node.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return None


def import_litellm_config(src: Path) -> str:
    """Return the text of a new ccbridge.yaml (with comments) made from LiteLLM config `src`.

    Raises ConfigError if `src` is missing, not YAML, or has no usable `model_list`.
    `os.environ/VAR` values are kept as they are. LiteLLM's master_key is not
    copied into proxy.api_key: it appears as a commented-out line with a note.
    """
    src = Path(src)
    text = read_text(src)
    try:
        tree = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise yaml_error(exc, text, src) from None
    usage = "a LiteLLM config with a model_list (the file you pass to `litellm --config`)"
    if not isinstance(tree, Mapping):
        raise _fail(src, "not a LiteLLM config", found="no mapping at the top", expected=usage)
    model_list = tree.get("model_list")
    if not isinstance(model_list, list) or not model_list:
        raise _fail(
            src,
            "nothing to import",
            key="model_list",
            found="no model_list" if model_list is None else "an empty or non-list model_list",
            expected=usage,
        )

    backends: dict[str, dict[str, Any]] = {}  # api_base -> {name, model, api_key}
    aliases: list[tuple[str, str]] = []
    notes: list[str] = []
    seen_patterns: set[str] = set()
    for index, entry in enumerate(model_list):
        where = f"model_list[{index}]"
        line = _line(model_list, index)
        at = f" (line {line})" if line else ""
        if not isinstance(entry, Mapping):
            notes.append(f"skipped {where}{at}: not a mapping")
            continue
        name = entry.get("model_name")
        params = entry.get("litellm_params")
        if not isinstance(name, str) or not isinstance(params, Mapping):
            notes.append(f"skipped {where}{at}: no model_name or litellm_params")
            continue
        model = params.get("model")
        api_base = params.get("api_base")
        if not isinstance(model, str) or not model.strip():
            notes.append(f"skipped {name}{at}: no litellm_params.model")
            continue
        prefix = model.split("/", 1)[0] if "/" in model else ""
        if prefix in OTHER_PROVIDERS:
            notes.append(f"skipped {name}{at}: provider {prefix}/ is not an OpenAI-compatible server")
            continue
        if not isinstance(api_base, str) or not api_base.strip():
            notes.append(f"skipped {name}{at}: no litellm_params.api_base")
            continue
        for strip in STRIPPED_PREFIXES:
            if model.startswith(strip):
                model = model[len(strip) :]
                break
        if not model:
            notes.append(f"skipped {name}{at}: empty model after the provider prefix")
            continue
        reason = validate_pattern(name)
        if reason:
            notes.append(f"skipped model_name {name!r}{at}: {reason}")
            continue
        if name in seen_patterns:
            notes.append(f"{name}{at}: listed again (LiteLLM load balancing); kept the first")
            continue
        seen_patterns.add(name)
        base = api_base.strip().rstrip("/")
        if base not in backends:
            taken = {b["name"] for b in backends.values()}
            backends[base] = {
                "name": "local" if not backends else _backend_name(base, taken),
                "model": model,
                "api_key": params.get("api_key"),
            }
        backend = backends[base]["name"]
        aliases.append((name, f"{backend}/{model}"))

    if not backends:
        raise _fail(
            src,
            "no model in model_list can be imported",
            key="model_list",
            found="; ".join(notes) or "no entries",
            expected="entries whose litellm_params have model: openai/<name> and an api_base",
        )

    general = tree.get("general_settings")
    master_key = general.get("master_key") if isinstance(general, Mapping) else None
    lines = _render(src, backends, aliases, notes, master_key)
    result = "\n".join(lines) + "\n"
    parse_config(result, None)  # what we produce must load
    return result


_DEFAULT_LINES = DEFAULT_CONFIG_TEXT.splitlines()


def _default(first: str, last: str | None = None) -> list[str]:
    """The default config's lines from the one starting with `first` through the one starting with `last`
    (or `first` alone): an imported file explains its keys in the same words as a new one."""
    def find(prefix: str, start: int = 0) -> int:
        for i in range(start, len(_DEFAULT_LINES)):
            if _DEFAULT_LINES[i].startswith(prefix):
                return i
        raise LookupError(f"DEFAULT_CONFIG_TEXT has no line starting with {prefix!r} (the importer copies it)")

    start = find(first)
    return _DEFAULT_LINES[start:(start if last is None else find(last, start)) + 1]


def _render(
    src: Path,
    backends: dict[str, dict[str, Any]],
    aliases: list[tuple[str, str]],
    notes: list[str],
    master_key: Any,
) -> list[str]:
    first = next(iter(backends.values()))["name"]
    out = [
        *_default("# ccbridge.yaml:"),
        f"# Imported from the LiteLLM config {src}.",
        "# ccbridge now writes LiteLLM's config itself; edit this file instead.",
        *_default("# Docs:"),
    ]
    for note in notes:
        out.append(f"# note: {note}")
    out += _default("proxy:", "  port:")
    if isinstance(master_key, str) and master_key:
        out += [
            "  # LiteLLM's general_settings.master_key was the key clients sent to LiteLLM;",
            "  # ccbridge gives its own LiteLLM a new key. Uncomment to make Claude Code",
            "  # send this one to ccbridge (x-api-key or Bearer), as it did to LiteLLM:",
            f"  # api_key: {_scalar(master_key)}",
        ]
    else:
        out += _default("  # api_key:")
    out += _default("litellm:", "backends:")
    for api_base, info in backends.items():
        out += [
            f"  {_scalar(info['name'])}:",
            f"    api_base: {_scalar(api_base)}",
            f"    model: {_scalar(info['model'])}",
            *_default("    # max_tokens:"),
        ]
        key = info.get("api_key")
        if isinstance(key, str) and key:
            out.append(f"    api_key: {_scalar(key)}")
    out += _default("aliases:")
    for pattern, target in aliases:
        out.append(f"  {_pattern(pattern)}: {_scalar(target)}")
    if CATCH_ALL not in {p for p, _ in aliases}:
        out += [
            "  # Current Claude Code asks for names without a date suffix (claude-opus-4-8,",
            "  # claude-sonnet-4-5, claude-opus-4-8[1m], ...), so the old names above no",
            "  # longer match anything; this catch-all sends every other name here:",
            f'  "*": {_scalar(first)}',
        ]
    return out


def _mentions_key(text: str) -> bool:
    return re.search(r"^\s*#?\s*api_key:\s*(?!\.\.\.)\S", text, re.MULTILINE) is not None


def write_imported(src: Path, dest: Path, force: bool = False) -> Config:
    """Import `src` (see `import_litellm_config`) and write it to `dest`; return the Config.

    Refuses (ConfigError) to overwrite an existing `dest` unless `force`; with
    `force` the old file is kept as `<dest>.bak`. The file is 0600 when it holds
    a key (also a commented-out one).
    """
    src, dest = Path(src), Path(dest)
    text = import_litellm_config(src)
    mode = _files.SECRET_MODE if _mentions_key(text) else _files.default_mode()
    if force:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _files.replace_with_backup(dest, text, mode)
    elif not _files.write_new(dest, text, mode):
        raise ConfigError(
            "the file already exists",
            file=dest,
            hint="Choose another destination, or force the import to replace it "
            "(the old file is kept as .bak)",
        )
    return parse_config(text, dest)
