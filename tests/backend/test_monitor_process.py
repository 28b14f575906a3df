"""The llama-server process: its flags, and finding it by its listening port."""

from __future__ import annotations

import os
import socket

from backend.monitor.process import (
    ProcessProbe,
    command_flags,
    host_port,
    is_local_host,
    looks_like_llama_server,
    mask_cmdline,
    parse_flags,
)

# The command line of a real llama-server started for these tests' fixtures.
REAL = ("/root/.cache/ccbridge/tools/llama-server-0.3.36/llama-server -m /tmp/mon/tiny.gguf --host 127.0.0.1 "
        "--port 18183 -c 16384 -np 2 -t 1 -tb 1 --metrics --ignore-eos --jinja -fa off -ngl 0").split()


def test_flags_of_a_real_command_line():
    f = parse_flags(REAL)
    assert f.model == "/tmp/mon/tiny.gguf" and f.ctx == 16384 and f.parallel == 2
    assert f.n_gpu_layers == 0 and f.n_gpu_layers_text == "0"
    assert f.metrics is True and f.slots is True and f.jinja is True
    assert f.flash_attn == "off" and f.threads == 1 and f.port == 18183 and f.host == "127.0.0.1"


def test_long_spellings_equals_and_defaults():
    f = parse_flags(["llama-server", "--model=/m.gguf", "--ctx-size", "131072", "--n-gpu-layers", "all",
                     "--parallel=4", "--no-slots", "--flash-attn", "on", "--alias", "qwen"])
    assert f.model == "/m.gguf" and f.ctx == 131072 and f.parallel == 4
    assert f.n_gpu_layers is None and f.n_gpu_layers_text == "all"
    assert f.slots is False and f.metrics is False and f.jinja is None
    assert f.flash_attn == "on" and f.alias == "qwen"
    bare = parse_flags(["llama-server", "-fa", "-c", "8192", "-hf", "org/model-GGUF"])
    assert bare.flash_attn == "on" and bare.ctx == 8192 and bare.model == "org/model-GGUF"
    assert parse_flags(["llama-server"]).slots is True  # on by default in this build
    assert parse_flags(["llama-server", "-cram", "0"]).cache_ram_mib == 0
    assert parse_flags(["llama-server", "--cache-ram=4096"]).cache_ram_mib == 4096


def test_environment_is_the_fallback():
    env = {"LLAMA_ARG_CTX_SIZE": "32768", "LLAMA_ARG_ENDPOINT_METRICS": "1", "LLAMA_ARG_N_PARALLEL": "2"}
    f = parse_flags(["llama-server", "-c", "65536"], env)
    assert f.ctx == 65536 and f.metrics is True and f.parallel == 2


def test_kv_cache_flags_and_swa_full():
    f = parse_flags(["llama-server", "-m", "g.gguf", "--swa-full", "-kvu", "-ub", "256", "-ctk", "q8_0",
                     "--cache-type-v=q4_0"])
    assert f.swa_full is True and f.kv_unified is True and f.ubatch == 256
    assert f.cache_type_k == "q8_0" and f.cache_type_v == "q4_0"
    plain = parse_flags(["llama-server", "-m", "g.gguf", "--no-kv-unified"])
    assert plain.swa_full is False and plain.kv_unified is False and plain.ubatch is None
    assert parse_flags(["llama-server"]).kv_unified is None  # the build decides (unified without -np)
    env = {"LLAMA_ARG_SWA_FULL": "1", "LLAMA_ARG_KV_UNIFIED": "false", "LLAMA_ARG_CACHE_TYPE_K": "q8_0"}
    from_env = parse_flags(["llama-server"], env)
    assert from_env.swa_full is True and from_env.kv_unified is False and from_env.cache_type_k == "q8_0"


def test_flags_of_a_configured_command():
    f = command_flags("llama-server -m '/models/my model.gguf' -c 8192 --swa-full")
    assert f is not None and f.model == "/models/my model.gguf" and f.ctx == 8192 and f.swa_full
    assert command_flags(None) is None and command_flags("") is None
    assert command_flags("llama-server -m 'unclosed") is None


def test_secrets_are_masked():
    assert mask_cmdline(["x", "--api-key", "s3cret", "--api-key=s3cret", "-c", "1"]) == (
        "x", "--api-key", "***", "--api-key=***", "-c", "1")


def test_llama_server_recognised_by_name():
    assert looks_like_llama_server("llama-server", ["/opt/llama-server"])
    assert looks_like_llama_server(None, ["/usr/bin/llama-server-cuda", "-m", "x"])
    assert not looks_like_llama_server("python3", ["python3", "-m", "pytest"])


def test_host_port_and_locality():
    assert host_port("http://127.0.0.1:8080/v1") == ("127.0.0.1", 8080)
    assert host_port("https://example.invalid/v1") == ("example.invalid", 443)
    assert is_local_host("localhost") and is_local_host("127.0.0.2")
    assert not is_local_host("203.0.113.7")


def test_finds_the_process_listening_on_a_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        probe = ProcessProbe()
        status, note = probe.read(f"http://127.0.0.1:{port}/v1")
        assert note is None and status is not None
        assert status.pid == os.getpid()
        assert status.is_llama_server is False
        assert status.cpu_percent is None  # first reading: no interval yet
        assert status.rss_bytes and status.threads and status.uptime_s is not None
        again, _ = probe.read(f"http://127.0.0.1:{port}/v1")
        assert again is not None and again.cpu_percent is not None


def test_no_process_and_remote_host_say_why():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening
    status, note = ProcessProbe().read(f"http://127.0.0.1:{port}/v1")
    assert status is None and note and "no process" in note
    status, note = ProcessProbe().read("http://203.0.113.7:8080/v1")
    assert status is None and note and "not this machine" in note


def test_a_miss_is_not_rescanned_at_once_unless_the_server_came_up():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        probe = ProcessProbe(rescan_after=60)
        assert probe.read(f"http://127.0.0.1:{port}/v1")[0] is None
        sock.listen()
        assert probe.read(f"http://127.0.0.1:{port}/v1")[0] is None  # throttled: no full scan yet
        found, _ = probe.read(f"http://127.0.0.1:{port}/v1", rescan=True)
        assert found is not None and found.pid == os.getpid()


def test_without_permission_to_list_all_sockets_our_own_server_is_still_found(monkeypatch):
    import psutil

    import backend.monitor.process as process_mod

    def denied(kind: str = "tcp"):
        raise psutil.AccessDenied()

    monkeypatch.setattr(process_mod.psutil, "net_connections", denied)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        me = psutil.Process(os.getpid())
        me.info = {"name": "llama-server"}  # the fallback only looks at llama-server-like names
        others = psutil.Process(os.getppid())
        others.info = {"name": "bash"}
        monkeypatch.setattr(process_mod.psutil, "process_iter", lambda attrs=None: iter([others, me]))
        status, _ = ProcessProbe().read(f"http://127.0.0.1:{port}/v1")
        assert status is not None and status.pid == os.getpid()
