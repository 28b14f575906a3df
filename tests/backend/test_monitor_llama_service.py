"""A backend's optional `command:`: config validation and the command line ccbridge runs."""

from __future__ import annotations

import pytest

from backend.config import ConfigError
from backend.config.loader import command_problem, parse_config
from backend.services.llama_service import command_argv, command_with_flag, service_name
from tests.support.config import config_text


def command_config(command: str) -> str:
    return config_text(proxy={"port": 8082}, litellm={"port": 4000},
                       backends={"local": {"api_base": "http://127.0.0.1:8081/v1", "command": command}})


def test_command_is_read_from_the_config():
    config = parse_config(command_config("llama-server -m /models/q.gguf -c 131072 --metrics"))
    assert config.backends["local"].command == "llama-server -m /models/q.gguf -c 131072 --metrics"
    assert parse_config(command_config("llama-server --port 8081")).backends["local"].command


def test_a_command_on_another_port_is_refused_with_the_line():
    with pytest.raises(ConfigError) as err:
        parse_config(command_config("llama-server -m q.gguf --port 9000"))
    text = str(err.value)
    assert "backends.local.command" in text and "--port 9000" in text and "8081" in text


def test_command_problems():
    assert command_problem("llama-server 'unclosed", "http://127.0.0.1:8080/v1")
    assert command_problem("   ", "http://127.0.0.1:8080/v1")
    assert command_problem("llama-server --port=8080", "http://127.0.0.1:8080/v1") is None


def test_host_and_port_come_from_api_base_when_missing():
    argv = command_argv("llama-server -m '/my models/q.gguf' -c 8192", "http://127.0.0.1:8081/v1")
    assert argv == ["llama-server", "-m", "/my models/q.gguf", "-c", "8192", "--port", "8081",
                    "--host", "127.0.0.1"]
    given = command_argv("llama-server --host 0.0.0.0 --port 8081", "http://127.0.0.1:8081/v1")
    assert given == ["llama-server", "--host", "0.0.0.0", "--port", "8081"]
    assert service_name("local") == "llama:local"


def test_a_switch_is_added_once_keeping_the_users_text():
    cmd = "llama-server -m '/models/my gemma.gguf'  -c 8192 "
    assert command_with_flag(cmd, "--swa-full") == "llama-server -m '/models/my gemma.gguf'  -c 8192 --swa-full"
    assert command_with_flag("llama-server --swa-full -c 8192", "--swa-full") == "llama-server --swa-full -c 8192"
