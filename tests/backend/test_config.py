"""ccbridge.yaml: loading, error messages, the default file, editing, import."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backend.config import (
    DEFAULT_CONFIG_TEXT,
    AliasTable,
    ConfigDocument,
    ConfigError,
    ensure_config,
    import_litellm_config,
    load_config,
    parse_config,
    write_imported,
)


def write(tmp_path: Path, text: str, name: str = "ccbridge.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(needle)


# -- loading -------------------------------------------------------------


def test_default_text_loads() -> None:
    config = parse_config(DEFAULT_CONFIG_TEXT)
    assert config.proxy.host == "127.0.0.1"
    assert config.proxy.port == 8082
    assert config.proxy.api_key is None
    assert config.litellm.port == 4000 and config.litellm.url is None
    assert list(config.backends) == ["local"]
    local = config.backends["local"]
    assert local.api_base == "http://127.0.0.1:8080/v1"
    assert local.model == "auto" and local.max_tokens is None
    assert [(r.pattern, r.target) for r in config.aliases] == [
        ("claude-haiku-*", "local"),
        ("*", "local"),
    ]
    table = AliasTable(config.aliases)
    assert table.resolve("claude-opus-4-8[1m]").pattern == "*"  # type: ignore[union-attr]


FULL = """\
proxy:
  host: 0.0.0.0
  port: 9000
  api_key: sk-front
  upstream_timeout: 900
  max_body_mb: 64.5
litellm:
  port: 4100
  url: https://litellm.example:4000/
backends:
  local:
    api_base: http://127.0.0.1:8080/v1/
    model: qwen2.5-coder
    max_tokens: 32000
  gpu:
    api_base: http://10.0.0.2:8081/v1
    api_key: os.environ/GPU_KEY
aliases:
  "claude-opus-4-8[1m]": gpu/Qwen/Qwen3-32B
  "claude-haiku-*": local
  "*": gpu
history:
  path: ~/hist.sqlite3
  retention_days: 7
  max_rows: 1000
"""


def test_full_config(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(path)
    assert config.source == path
    assert config.proxy.host == "0.0.0.0" and config.proxy.api_key == "sk-front"
    assert config.proxy.upstream_timeout == 900.0 and config.proxy.max_body_mb == 64.5
    assert config.litellm.url == "https://litellm.example:4000"
    assert config.backends["local"].api_base == "http://127.0.0.1:8080/v1"
    assert config.backends["local"].max_tokens == 32000
    assert config.backends["gpu"].api_key == "os.environ/GPU_KEY"  # LiteLLM resolves it
    first = config.aliases[0]
    assert (first.backend, first.model) == ("gpu", "Qwen/Qwen3-32B")
    assert config.aliases[1].model is None
    assert config.history.retention_days == 7.0 and config.history.max_rows == 1000


def test_proxy_api_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    text = DEFAULT_CONFIG_TEXT.replace("  # api_key: ...", "  api_key: os.environ/CCB_TEST_KEY #")
    monkeypatch.setenv("CCB_TEST_KEY", "s3cret")
    assert parse_config(text).proxy.api_key == "s3cret"
    monkeypatch.delenv("CCB_TEST_KEY")
    with pytest.raises(ConfigError, match="CCB_TEST_KEY is unset") as info:
        parse_config(text)
    assert "proxy.api_key" in str(info.value) and "s3cret" not in str(info.value)


def expect_error(tmp_path: Path, text: str, *parts: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for part in parts:
        assert part in message, message
    return info.value


def test_bad_port_type_names_key_and_line(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT.replace("port: 8082", "port: eighty")
    error = expect_error(
        tmp_path,
        text,
        "proxy.port",
        f"line {line_of(text, 'eighty')}",
        '"eighty"',
        "1 to 65535",
    )
    assert error.key == "proxy.port" and error.line == line_of(text, "eighty")


@pytest.mark.parametrize("value", ["0", "65536", "true", "80.5", '"8082"'])
def test_port_out_of_range_or_wrong_type(tmp_path: Path, value: str) -> None:
    text = DEFAULT_CONFIG_TEXT.replace("port: 4000", f"port: {value}")
    expect_error(tmp_path, text, "litellm.port", f"line {line_of(text, 'port: ' + value)}")


def test_unknown_key_suggests(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT.replace("  port: 8082", "  prot: 8082")
    expect_error(
        tmp_path, text, "proxy.prot", f"line {line_of(text, 'prot')}", "Did you mean 'port'?"
    )


def test_unknown_section_and_backend_key_suggest(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT + "histroy:\n  max_rows: 10\n"
    expect_error(tmp_path, text, "histroy", f"line {line_of(text, 'histroy')}", "'history'")
    text = DEFAULT_CONFIG_TEXT.replace("    model: auto", "    modle: auto")
    expect_error(tmp_path, text, "backends.local.modle", "Did you mean 'model'?")


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT.replace('"*": local', "*: local")
    error = expect_error(tmp_path, text, "YAML syntax error", "line ", "column ", "quoted")
    assert error.line is not None and abs(error.line - line_of(text, "*: local")) <= 1
    text = DEFAULT_CONFIG_TEXT.replace("  port: 8082", "\tport: 8082")
    expect_error(tmp_path, text, f"line {line_of(text, chr(9))}", "tabs")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT.replace('"*": local', '"claude-haiku-*": local')
    expect_error(tmp_path, text, "duplicate key", f"line {len(text.splitlines())}")


def test_alias_to_unknown_backend(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG_TEXT.replace('"claude-haiku-*": local', '"claude-haiku-*": locl/qwen')
    expect_error(
        tmp_path,
        text,
        'aliases."claude-haiku-*"',
        f"line {line_of(text, 'locl')}",
        "unknown backend 'locl'",
        "did you mean 'local'",
    )


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("http://127.0.0.1:8080/v1", "127.0.0.1:8080/v1", "backends.local.api_base"),
        ("http://127.0.0.1:8080/v1", "ftp://h/v1", "backends.local.api_base"),
        ("http://127.0.0.1:8080/v1", "http://h:99999/v1", "backends.local.api_base"),
        ("host: 127.0.0.1", "host: 0.0.0.0", "proxy.host"),
        ("model: auto", "model: ''", "backends.local.model"),
        ("  local:\n", "  lo/cal:\n", "backends"),
        ('"claude-haiku-*"', '"claude haiku"', "aliases"),
        ('"claude-haiku-*"', "123", "aliases"),
    ],
)
def test_invalid_values(tmp_path: Path, old: str, new: str, key: str) -> None:
    text = DEFAULT_CONFIG_TEXT.replace(old, new, 1)
    assert text != DEFAULT_CONFIG_TEXT
    expect_error(tmp_path, text, key, "expected")


def test_missing_or_empty_sections(tmp_path: Path) -> None:
    head, _ = DEFAULT_CONFIG_TEXT.split("aliases:")
    expect_error(tmp_path, head, "aliases", "at least one alias")
    expect_error(tmp_path, head + "aliases: {}\n", "aliases", "at least one alias")
    expect_error(tmp_path, "aliases:\n  '*': local\n", "backends", "at least one backend")
    expect_error(tmp_path, "", "empty file")


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"proxy:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError, match="line 2.*UTF-8"):
        load_config(bad)


# -- the default file ----------------------------------------------------


def test_ensure_config_creates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCBRIDGE_CONFIG_DIR", str(tmp_path / "cfg"))
    config, created = ensure_config()
    path = tmp_path / "cfg" / "ccbridge.yaml"
    assert created and config.source == path
    text = path.read_text()
    assert text == DEFAULT_CONFIG_TEXT
    assert text.startswith("# ccbridge.yaml")
    assert "# catch-all" in text and "README" in text
    # The user edits it; ensure_config never writes it again.
    edited = text.replace("port: 8082", "port: 9999") + "# mine\n"
    path.write_text(edited)
    config, created = ensure_config(path)
    assert not created and config.proxy.port == 9999
    assert path.read_text() == edited
    assert sorted(p.name for p in path.parent.iterdir()) == ["ccbridge.yaml"]


def test_ensure_config_leaves_invalid_file_untouched(tmp_path: Path) -> None:
    path = write(tmp_path, "proxy:\n  port: [\n")
    before = path.read_bytes()
    with pytest.raises(ConfigError):
        ensure_config(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccbridge.yaml"]


# -- editing -------------------------------------------------------------

USER_FILE = """\
# my own header comment
proxy:
  port: 8082           # keep me
  host: 127.0.0.1      # user reordered these
backends:
  local:
    api_base: 'http://127.0.0.1:8080/v1'   # single quotes on purpose
    model: auto
aliases:               # routing
  # haiku goes local
  "claude-haiku-*": local
  'claude-opus-4-8[1m]': local    # long context
  "*": local           # catch-all

# trailing comment about history
history:
  max_rows: 5000
"""


def test_set_value_changes_only_that_value(tmp_path: Path) -> None:
    path = write(tmp_path, USER_FILE)
    doc = ConfigDocument.load(path)
    doc.set_value("proxy.port", 9000)
    doc.set_value("backends.local.api_base", "http://127.0.0.1:8081/v1")
    expected = USER_FILE.replace("port: 8082", "port: 9000").replace(
        "'http://127.0.0.1:8080/v1'", "'http://127.0.0.1:8081/v1'"
    )
    assert doc.dump_text() == expected
    assert doc.to_config().proxy.port == 9000


def test_unchanged_document_round_trips_byte_for_byte(tmp_path: Path) -> None:
    for text in (USER_FILE, DEFAULT_CONFIG_TEXT, FULL):
        assert ConfigDocument(text).dump_text() == text


def test_add_alias_before_catch_all(tmp_path: Path) -> None:
    doc = ConfigDocument(USER_FILE)
    doc.add_alias("claude-sonnet-*", "local/qwen")
    expected = USER_FILE.replace(
        '  "*": local           # catch-all\n',
        '  "claude-sonnet-*": local/qwen\n  "*": local           # catch-all\n',
    )
    assert doc.dump_text() == expected
    doc.add_alias("zzz-*", "local", before_catch_all=False)
    assert doc.aliases()[-1] == ("zzz-*", "local")
    doc.add_alias("claude-haiku-*", "local/small")  # existing: changed in place
    assert doc.aliases()[0] == ("claude-haiku-*", "local/small")
    assert '  "claude-haiku-*": local/small\n' in doc.dump_text()
    with pytest.raises(ConfigError):
        doc.add_alias("bad pattern", "local")


def test_remove_alias_keeps_the_rest(tmp_path: Path) -> None:
    doc = ConfigDocument(USER_FILE)
    assert doc.remove_alias("claude-opus-4-8[1m]")
    assert not doc.remove_alias("claude-opus-4-8[1m]")
    expected = USER_FILE.replace("  'claude-opus-4-8[1m]': local    # long context\n", "")
    assert doc.dump_text() == expected


def test_set_aliases_keeps_comments_of_surviving_entries() -> None:
    doc = ConfigDocument(USER_FILE)
    doc.set_aliases([("claude-opus-4-8[1m]", "local"), ("claude-x-?", "local"), ("*", "local")])
    text = doc.dump_text()
    assert "'claude-opus-4-8[1m]': local    # long context" in text
    assert '"*": local           # catch-all\n\n# trailing comment about history\n' in text
    assert '  "claude-x-?": local\n' in text
    assert "claude-haiku" not in text
    assert text.startswith("# my own header comment\nproxy:\n  port: 8082           # keep me\n")
    assert text.endswith("history:\n  max_rows: 5000\n")
    assert [r.pattern for r in doc.to_config().aliases] == [
        "claude-opus-4-8[1m]",
        "claude-x-?",
        "*",
    ]


def test_set_value_adds_and_removes_keys() -> None:
    doc = ConfigDocument(DEFAULT_CONFIG_TEXT)
    doc.set_value("proxy.api_key", "sk-abc")
    doc.set_value(["backends", "gpu.box", "api_base"], "http://10.0.0.2:8080/v1")
    doc.set_value("history.max_rows", 10)
    config = doc.to_config()
    assert config.proxy.api_key == "sk-abc"
    assert config.backends["gpu.box"].api_base == "http://10.0.0.2:8080/v1"
    assert config.history.max_rows == 10
    doc.set_value("proxy.api_key", None)
    assert doc.to_config().proxy.api_key is None
    assert "# api_key: ...       # optional" in doc.dump_text()


def test_invalid_edit_raises_and_file_is_untouched(tmp_path: Path) -> None:
    path = write(tmp_path, USER_FILE)
    doc = ConfigDocument.load(path)
    doc.add_alias("claude-sonnet-*", "nowhere")
    with pytest.raises(ConfigError, match="unknown backend 'nowhere'"):
        doc.to_config()
    with pytest.raises(ConfigError):
        doc.save()
    assert path.read_text() == USER_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccbridge.yaml"]


def test_save_is_atomic_with_backup_and_mode(tmp_path: Path) -> None:
    path = write(tmp_path, USER_FILE)
    os.chmod(path, 0o640)
    doc = ConfigDocument.load(path)
    doc.set_value("proxy.port", 9001)
    backup = doc.save()
    assert backup == tmp_path / "ccbridge.yaml.bak"
    assert backup.read_text() == USER_FILE
    assert path.read_text() == USER_FILE.replace("port: 8082", "port: 9001")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccbridge.yaml", "ccbridge.yaml.bak"]
    assert load_config(path).proxy.port == 9001
    # A second save: the backup now holds the previous save; a key forces 0600.
    doc.set_value("proxy.api_key", "sk-secret")
    doc.save()
    assert "port: 9001" in backup.read_text() and "sk-secret" not in backup.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ccbridge.yaml", "ccbridge.yaml.bak"]


def test_save_refuses_when_file_changed_on_disk(tmp_path: Path) -> None:
    path = write(tmp_path, USER_FILE)
    doc = ConfigDocument.load(path)
    doc.set_value("proxy.port", 9002)
    path.write_text(USER_FILE + "# edited elsewhere\n")
    with pytest.raises(ConfigError, match="changed on disk"):
        doc.save()
    assert path.read_text().endswith("# edited elsewhere\n")
    doc.save(force=True)
    assert load_config(path).proxy.port == 9002


def test_save_new_file(tmp_path: Path) -> None:
    doc = ConfigDocument(DEFAULT_CONFIG_TEXT)
    target = tmp_path / "sub" / "ccbridge.yaml"
    assert doc.save(target) is None
    assert target.read_text() == DEFAULT_CONFIG_TEXT
    other = write(tmp_path, USER_FILE, "other.yaml")
    with pytest.raises(ConfigError, match="not loaded"):
        ConfigDocument(DEFAULT_CONFIG_TEXT).save(other)
    assert other.read_text() == USER_FILE


def test_four_space_indent_is_kept() -> None:
    text = DEFAULT_CONFIG_TEXT.replace("\n  ", "\n    ").replace("\n      ", "\n        ")
    doc = ConfigDocument(text)
    assert doc.dump_text() == text
    doc.set_value("proxy.port", 9003)
    assert doc.dump_text() == text.replace("port: 8082", "port: 9003")


# -- import from a LiteLLM config ------------------------------------------

GUIDE = """\
# LiteLLM config from the guide
model_list:
  - model_name: claude-3-5-sonnet-20241022
    litellm_params:
      model: openai/qwen2.5-coder-32b
      api_base: http://localhost:8080/v1
      api_key: "sk-no-key-required"
  - model_name: claude-3-5-haiku-20241022
    litellm_params:
      model: openai/qwen2.5-coder-7b
      api_base: http://localhost:8080/v1
      api_key: "sk-no-key-required"
  - model_name: claude-3-opus-20240229
    litellm_params:
      model: hosted_vllm/Qwen/Qwen3-32B
      api_base: http://192.168.1.50:8000/v1/
      api_key: os.environ/VLLM_KEY
      max_tokens: 8192
  - model_name: claude-3-opus-20240229
    litellm_params:
      model: hosted_vllm/Qwen/Qwen3-32B
      api_base: http://192.168.1.51:8000/v1
  - model_name: real-claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
litellm_settings:
  drop_params: true
general_settings:
  master_key: sk-1234
"""


def test_import_guide_config(tmp_path: Path) -> None:
    src = write(tmp_path, GUIDE, "litellm.yaml")
    text = import_litellm_config(src)
    config = parse_config(text)
    assert list(config.backends) == ["local", "192.168.1.50-8000"]
    local = config.backends["local"]
    assert local.api_base == "http://localhost:8080/v1"
    assert local.model == "qwen2.5-coder-32b" and local.api_key == "sk-no-key-required"
    vllm = config.backends["192.168.1.50-8000"]
    assert vllm.api_base == "http://192.168.1.50:8000/v1"
    assert vllm.api_key == "os.environ/VLLM_KEY"  # kept as is
    assert [(r.pattern, r.target) for r in config.aliases] == [
        ("claude-3-5-sonnet-20241022", "local/qwen2.5-coder-32b"),
        ("claude-3-5-haiku-20241022", "local/qwen2.5-coder-7b"),
        ("claude-3-opus-20240229", "192.168.1.50-8000/Qwen/Qwen3-32B"),
        ("*", "local"),
    ]
    # The master key is not silently made the proxy key; it is there, commented.
    assert config.proxy.api_key is None
    assert "  # api_key: sk-1234" in text and "master_key" in text
    assert "date suffix" in text  # why the catch-all is there
    assert "real-claude" in text  # noted as skipped
    table = AliasTable(config.aliases)
    assert table.resolve("claude-opus-4-8").target == "local"  # type: ignore[union-attr]
    # The result is itself an editable document.
    doc = ConfigDocument(text)
    assert doc.dump_text() == text


def test_write_imported(tmp_path: Path) -> None:
    src = write(tmp_path, GUIDE, "litellm.yaml")
    dest = tmp_path / "out" / "ccbridge.yaml"
    config = write_imported(src, dest)
    assert config.source == dest and load_config(dest).backends.keys() == config.backends.keys()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600  # it holds keys
    dest.write_text("# mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        write_imported(src, dest)
    assert dest.read_text() == "# mine\n"
    write_imported(src, dest, force=True)
    assert (tmp_path / "out" / "ccbridge.yaml.bak").read_text() == "# mine\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ccbridge.yaml", "ccbridge.yaml.bak"]


def test_import_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        import_litellm_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+: YAML syntax error"):
        import_litellm_config(write(tmp_path, "model_list:\n  - [\n", "a.yaml"))
    with pytest.raises(ConfigError, match="model_list"):
        import_litellm_config(write(tmp_path, "general_settings: {}\n", "b.yaml"))
    with pytest.raises(ConfigError, match="model_list"):
        import_litellm_config(write(tmp_path, "just text\n", "c.yaml"))
    only_cloud = "model_list:\n  - model_name: x\n    litellm_params:\n      model: anthropic/x\n"
    with pytest.raises(ConfigError, match="can be imported"):
        import_litellm_config(write(tmp_path, only_cloud, "d.yaml"))
