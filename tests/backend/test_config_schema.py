"""ccbridge.yaml's schema (msgspec): it agrees with the model, and its errors read as YAML errors."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from backend.config import DEFAULT_CONFIG_TEXT, ConfigError, parse_config
from backend.config import schema as S
from backend.config.model import (
    BALANCE_MODES,
    BackendConfig,
    CacheConfig,
    GroupsConfig,
    HistoryConfig,
    LiteLLMConfig,
    ProxyConfig,
)

BASE = "backends:\n  local:\n    api_base: http://127.0.0.1:8080/v1\naliases:\n  '*': local\n"


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value


@pytest.mark.parametrize(("section", "model"), [
    (S.ProxySection, ProxyConfig), (S.LiteLLMSection, LiteLLMConfig), (S.HistorySection, HistoryConfig),
    (S.GroupsSection, GroupsConfig), (S.CacheSection, CacheConfig), (S.BackendSection, BackendConfig),
])
def test_each_section_declares_the_fields_of_its_model(section: type[S.Section], model: type) -> None:
    fields = [f.name for f in dataclasses.fields(model) if f.name != "name"]  # a backend's name is its key
    assert list(S.keys(section)) == fields


def test_the_schema_accepts_what_the_model_names() -> None:
    assert typing.get_args(S.Balance) == BALANCE_MODES
    assert BackendConfig.__dataclass_fields__["route"].default in typing.get_args(S.Route)
    assert S.keys(S.RootSection) == ("proxy", "litellm", "backends", "aliases", "history", "groups", "cache")


def test_ruamel_number_and_text_types_load_as_plain_values() -> None:
    text = "proxy:\n  port: 0x1f90\n  max_body_mb: 1.5\nhistory:\n  path: |-\n    /tmp/h.sqlite3\n"
    config = parse_config(text + BASE)
    assert config.proxy.port == 8080 and type(config.proxy.port) is int
    assert config.proxy.max_body_mb == 1.5 and type(config.proxy.max_body_mb) is float
    assert config.history.path == "/tmp/h.sqlite3" and type(config.history.path) is str
    assert type(parse_config("proxy:\n  upstream_timeout: 90\n" + BASE).proxy.upstream_timeout) is float


@pytest.mark.parametrize("value", [".inf", ".nan", "-1", "0"])
def test_a_size_must_be_a_finite_number_above_zero(value: str) -> None:
    err = error(f"proxy:\n  max_body_mb: {value}\n" + BASE)
    assert (err.key, err.line, err.expected) == ("proxy.max_body_mb", 2, "a size in MiB above 0")


def test_a_bad_list_item_names_its_list_and_line() -> None:
    err = error("proxy:\n  host: 127.0.0.1\n  allowed_hosts:\n    - gpubox\n    - gpu box\n" + BASE)
    assert err.key == "proxy.allowed_hosts" and err.found == 'the text "gpu box"' and err.line == 4


def test_a_key_that_is_not_text_is_an_unknown_key() -> None:
    err = error("cache:\n  warm: true\n  1: 2\n" + BASE)
    assert (err.key, err.line) == ("cache.1", 3) and "one of: shared_first, keep_slots" in str(err)


def test_secrets_are_never_shown() -> None:
    for text in ("proxy:\n  api_key: ' sk-hidden-1'\n" + BASE,
                 BASE.replace("    api_base", "    api_key: 'sk-hidden-1 '\n    api_base"),
                 "litellm:\n  api_key: ''\n" + BASE):
        err = error(text)
        assert err.key is not None and err.key.endswith("api_key") and "sk-hidden" not in str(err), str(err)
        assert err.found is not None and err.found.startswith(("text (not shown)", 'the text ""'))


def test_a_missing_api_base_points_at_the_backend() -> None:
    err = error("backends:\n  box:\n    model: qwen\naliases:\n  '*': box\n")
    assert (err.key, err.line, err.found) == ("backends.box.api_base", 2, "no api_base")
    assert "OpenAI-compatible base URL" in str(err)


def test_a_wrong_type_says_what_was_found_and_expected() -> None:
    err = error("history:\n  bodies: 1\n" + BASE)
    assert str(err) == "line 2: history.bodies: found the number 1; expected true or false"
    err = error(BASE.replace("    api_base", "    route: fast\n    api_base"))
    assert err.key == "backends.local.route" and err.line == 3 and err.found == 'the text "fast"'


def test_the_default_text_has_one_home() -> None:
    from backend.config import importer, loader

    assert loader.DEFAULT_CONFIG_TEXT is DEFAULT_CONFIG_TEXT
    assert importer._DEFAULT_LINES == DEFAULT_CONFIG_TEXT.splitlines()


def test_loading_the_config_does_not_import_a_heavy_schema_library() -> None:
    code = ("import sys, backend.config.loader as L; L.parse_config(L.DEFAULT_CONFIG_TEXT); "
            "print(sorted(m for m in ('pydantic', 'cattrs', 'attrs') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
