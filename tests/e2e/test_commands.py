"""`ccbridge env`, `doctor` and `import` as a user runs them, against a real llama-server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from backend.config import load_config
from tests.support.config import config_text
from tests.support.serve import REPO, write_chain_config

pytestmark = pytest.mark.e2e


def ccbridge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=env)


def test_env_sizes_output_cap_from_the_backend_context(llama_server, tmp_path):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    result = ccbridge("env", "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    lines = dict(line.split("  #")[0].split("=", 1) for line in out if line.startswith("export "))
    port = load_config(config).proxy.port
    assert lines["export ANTHROPIC_BASE_URL"] == f"http://127.0.0.1:{port}"
    # a Bearer token, not an API key: interactive Claude Code asks before it uses an API key
    assert lines["export ANTHROPIC_AUTH_TOKEN"] == "ccbridge-local"
    assert "export ANTHROPIC_API_KEY" not in lines
    assert any(line.startswith("unset ANTHROPIC_API_KEY") for line in out)
    # the session llama-server has 65536 tokens per slot: a quarter of it for output
    assert lines["export CLAUDE_CODE_MAX_OUTPUT_TOKENS"] == "16384"
    assert lines["export CLAUDE_CODE_MAX_CONTEXT_TOKENS"] == "65536"
    assert lines["export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert lines["export CLAUDE_CODE_ATTRIBUTION_HEADER"] == "0"
    assert int(lines["export API_TIMEOUT_MS"]) >= 600000
    assert lines["export ANTHROPIC_MODEL"] == "claude-opus-ccbridge"
    assert lines["export ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "claude-haiku-ccbridge"
    # what the shell makes of it
    shell = subprocess.run(["sh", "-c", result.stdout + '\necho "$ANTHROPIC_AUTH_TOKEN ${ANTHROPIC_API_KEY-unset}"'],
                           capture_output=True, text=True, env={**os.environ, "ANTHROPIC_API_KEY": "stray"})
    assert shell.stdout.strip() == "ccbridge-local unset", shell.stderr


def test_doctor_names_a_too_small_context_and_the_fix(start_llama_server, tmp_path):
    small = start_llama_server(ctx=8192, parallel=2)
    config = write_chain_config(tmp_path / "ccbridge.yaml", small.api_base)
    result = ccbridge("doctor", "--config", str(config))
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "ok    config is valid" in out
    assert "context 4096/slot" in out and "2 slot(s)" in out
    assert "FAIL  backend 'local'" in out and "-c 65536" in out and "-np" in out
    assert "no litellm_init.pth" in out


def test_doctor_reports_an_unreachable_backend(tmp_path):
    from tests.support.llama import free_port

    config = write_chain_config(tmp_path / "ccbridge.yaml", f"http://127.0.0.1:{free_port()}/v1")
    result = ccbridge("doctor", "--config", str(config))
    assert result.returncode == 1
    assert "is not reachable" in result.stdout and "start llama-server" in result.stdout


def test_import_turns_a_guide_config_into_ccbridge_yaml(tmp_path):
    guide = tmp_path / "litellm_config.yaml"
    guide.write_text(
        "model_list:\n"
        "  - model_name: claude-3-5-sonnet-20241022\n"
        "    litellm_params:\n"
        "      model: openai/qwen2.5-coder\n"
        "      api_base: http://localhost:8080/v1\n"
        "      api_key: sk-no-key\n"
        "  - model_name: claude-3-5-haiku-20241022\n"
        "    litellm_params:\n"
        "      model: openai/qwen2.5-coder\n"
        "      api_base: http://localhost:8080/v1\n"
        "general_settings:\n"
        "  master_key: sk-1234\n"
    )
    dest = tmp_path / "out" / "ccbridge.yaml"
    result = ccbridge("import", str(guide), "--config", str(dest))
    assert result.returncode == 0, result.stderr
    config = load_config(dest)
    assert list(config.backends) == ["local"]
    assert config.backends["local"].api_base == "http://localhost:8080/v1"
    targets = {r.pattern: r.target for r in config.aliases}
    assert targets["claude-3-5-sonnet-20241022"] == "local/qwen2.5-coder"
    assert targets["*"] == "local"
    # LiteLLM's master key is offered as a commented line, never made active silently
    assert config.proxy.api_key is None and "# api_key: sk-1234" in dest.read_text()
    again = ccbridge("import", str(guide), "--config", str(dest))
    assert again.returncode == 2 and "exists" in again.stderr


def test_invalid_config_is_refused_with_key_and_line(tmp_path):
    config = tmp_path / "ccbridge.yaml"
    config.write_text(config_text(proxy={"port": "eighty"},
                                  backends={"local": {"api_base": "http://127.0.0.1:8080/v1"}}))
    before = config.read_text()
    result = ccbridge("serve", "--config", str(config))
    assert result.returncode == 2
    assert "proxy.port" in result.stderr and "line 2" in result.stderr
    assert config.read_text() == before


def test_doctor_flags_a_litellm_init_pth_on_the_path(tmp_path):
    from tests.support.llama import free_port

    planted = tmp_path / "site"
    planted.mkdir()
    (planted / "litellm_init.pth").write_text("import os\n")
    config = write_chain_config(tmp_path / "ccbridge.yaml", f"http://127.0.0.1:{free_port()}/v1")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{planted}"}
    result = ccbridge("doctor", "--config", str(config), env=env)
    assert result.returncode == 1
    assert f"FAIL  {planted / 'litellm_init.pth'} exists" in result.stdout


def test_corrupt_history_degrades_with_a_warning_and_serving_goes_on(tmp_path):
    from tests.support.llama import free_port

    db = tmp_path / "history.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    port = free_port()
    config = tmp_path / "ccbridge.yaml"
    config.write_text(config_text(proxy={"port": port}, litellm={"url": f"http://127.0.0.1:{free_port()}"},
                                  history={"path": db}))
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--config", str(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        head = "".join(proc.stdout.readline() for _ in range(2))
        assert "listening" in head
        assert "WARNING: history database" in head and "memory only" in head
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={"model": "claude-x", "max_tokens": 5,
                                                                    "messages": [{"role": "user", "content": "x"}]},
                          timeout=10, trust_env=False)
        assert resp.status_code == 503  # nothing at litellm.url, but the proxy answers
        status = httpx.get(f"http://127.0.0.1:{port}/ccbridge/api/status", trust_env=False).json()
        assert "memory only" in status["history_warning"]
        assert len(httpx.get(f"http://127.0.0.1:{port}/ccbridge/api/requests", trust_env=False).json()["requests"]) == 1
    finally:
        proc.terminate()
        proc.wait(10)
    assert db.read_bytes().startswith(b"this is not a database")  # left for the user to inspect


def test_doctor_checks_every_backend_of_a_group(start_llama_server, tmp_path):
    from tests.support.llama import free_port

    up = start_llama_server(ctx=65536)
    config = tmp_path / "ccbridge.yaml"
    config.write_text(config_text(backends={"box-a": {"api_base": up.api_base},
                                            "box-b": {"api_base": f"http://127.0.0.1:{free_port()}/v1"}},
                                  aliases={"*": "[box-a, box-b]"}))
    out = ccbridge("doctor", "--config", str(config)).stdout
    assert "backend 'box-a' serves" in out
    assert 'warn  group [box-a, box-b] (alias "*"): box-b not answering (box-a ok, box-b unreachable)' in out, out
    assert "its sessions go to box-a" in out
    config.write_text(config.read_text().replace("[box-a, box-b]", "[box-b]"))
    assert "group" not in ccbridge("doctor", "--config", str(config)).stdout
    dead = config.read_text().replace(up.api_base, f"http://127.0.0.1:{free_port()}/v1").replace("[box-b]",
                                                                                                 "[box-a, box-b]")
    config.write_text(dead)
    result = ccbridge("doctor", "--config", str(config))
    assert result.returncode == 1 and "FAIL  group [box-a, box-b]" in result.stdout and "no backend answers" in \
        result.stdout
