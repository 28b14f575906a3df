"""Advice: each problem named with its numbers and its fix."""

from __future__ import annotations

from dataclasses import replace

from backend.events import RequestRecord
from backend.monitor.advice import advise, context_failure
from backend.monitor.backend_status import BackendStatus, ProcessFlags, ProcessStatus, SwaStatus
from backend.monitor.machine_status import GpuDevice, GpuProcess, GpuStatus
from backend.monitor.snapshot import CacheReport, CacheStats

NO_GPU = GpuStatus(note="no GPU telemetry here")
OK_ENDPOINTS = {"health": "ok", "props": "ok", "models": "ok", "slots": "ok", "metrics": "ok"}


def backend(n_ctx: int | None = 131072, slots: int = 1, **kw) -> BackendStatus:
    base = BackendStatus(name="local", api_base="http://127.0.0.1:8080/v1", root_url="http://127.0.0.1:8080",
                         health="ok", endpoints=dict(OK_ENDPOINTS), build="b1-0c1e570", n_ctx_slot=n_ctx,
                         n_ctx_train=131072, total_slots=slots)
    return replace(base, **kw)


def process(**flags) -> ProcessStatus:
    return ProcessStatus(pid=4242, name="llama-server", is_llama_server=True, cmdline=("llama-server",),
                         cpu_percent=1.0, rss_bytes=1, threads=4, started_at=0.0, uptime_s=1.0,
                         flags=ProcessFlags(**flags))


def codes(items) -> list[str]:
    return [a.code for a in items]


def test_big_context_gets_no_advice():
    assert advise([backend()], NO_GPU, CacheReport()) == ()


def test_context_under_32k_fails_the_first_turn():
    (a,) = advise([backend(4096, slots=2)], NO_GPU, CacheReport())
    assert a.level == "error" and a.code == "ctx_too_small" and a.backend == "local"
    assert "4096" in a.text and "-np 2" in a.text and "15k-20k" in a.text
    assert "-c 131072" in a.fix and "-c 65536 -np 1" in a.fix


def test_context_under_100k_warns_about_compaction_with_both_fixes():
    (a,) = advise([backend(65536)], NO_GPU, CacheReport(), max_tokens={"local": 8000})
    assert a.level == "warn" and a.code == "ctx_below_compact"
    assert "100k" in a.text and "compact" in a.text
    assert "-c 131072" in a.fix and "CLAUDE_CODE_MAX_OUTPUT_TOKENS=8000" in a.fix and "ccbridge env" in a.fix


def test_endpoints_off_say_which_flag_adds_what():
    b = backend(endpoints={**OK_ENDPOINTS, "metrics": "disabled", "slots": "disabled"})
    found = {a.code: a for a in advise([b], NO_GPU, CacheReport())}
    assert "--metrics" in found["no_metrics"].fix and "tokens/s" in found["no_metrics"].text
    assert "--no-slots" in found["no_slots"].fix and "on by default" in found["no_slots"].fix


def test_flags_alone_tell_when_an_endpoint_was_not_read_yet():
    b = backend(endpoints={"health": "ok", "props": "ok"}, process=process(metrics=False, slots=True))
    assert codes(advise([b], NO_GPU, CacheReport())) == ["no_metrics"]


def test_not_a_llama_server_gets_no_endpoint_advice():
    b = backend(build=None, endpoints={"health": "ok", "props": "disabled", "slots": "disabled",
                                       "metrics": "disabled"})
    assert advise([b], NO_GPU, CacheReport()) == ()


def gpu(used: int, total: int = 24 * 2**30) -> GpuStatus:
    dev = GpuDevice(0, "RTX 4090", mem_used_bytes=used, mem_total_bytes=total, backend_mem_bytes=20 * 2**30,
                    processes=(GpuProcess(4242, "llama-server", 20 * 2**30, True, "local"),
                               GpuProcess(1, "Xorg", 2**30)))
    return GpuStatus(vendor="nvidia", source="nvml", available=True, devices=(dev,))


def test_partial_offload_with_a_gpu():
    b = backend(process=process(n_gpu_layers=20, n_gpu_layers_text="20"), n_layers=32)
    (a,) = advise([b], gpu(10 * 2**30), CacheReport())
    assert a.code == "ngl_partial" and "20 of the model's 32 layers" in a.text and "-ngl 33" in a.fix
    full = backend(process=process(n_gpu_layers=99, n_gpu_layers_text="99"), n_layers=32)
    assert advise([full], gpu(10 * 2**30), CacheReport()) == ()
    assert advise([b], NO_GPU, CacheReport()) == ()  # no GPU here: nothing to offload to


def test_gpu_memory_nearly_full_names_who_holds_it():
    (a,) = advise([backend()], gpu(int(23.5 * 2**30)), CacheReport())
    assert a.code == "gpu_mem_full" and "98%" in a.text and "llama-server holds 20.0 GiB" in a.text
    assert "Xorg" in a.text


def failed(error: str, at: float = 1000.0) -> RequestRecord:
    return RequestRecord(id="abcdef123456", started_at=at, method="POST", path="/v1/messages",
                         routed_backend="local", requested_model="claude-opus-4-8", status=400, error=error)


def test_context_failure_is_linked_to_the_backend_numbers():
    rec = failed("prompt is too long: 19800 tokens > 16384 maximum. Backend 'local' ...")
    assert context_failure(rec) == (19800, 16384)
    b = backend(16384, slots=4, process=process(ctx=65536, parallel=4))
    items = advise([b], NO_GPU, CacheReport(), failures=[rec], now=1010.0)
    a = next(x for x in items if x.code == "request_context_exceeded")
    assert a.level == "error" and "abcdef12" in a.text and "19800" in a.text
    assert "16384 tokens per slot" in a.text and "4 slot(s)" in a.text and "-c 65536" in a.text
    assert "-c 262144" in a.fix and "-np 4" in a.fix
    assert not any(x.code == "request_context_exceeded"
                   for x in advise([b], NO_GPU, CacheReport(), failures=[rec], now=1000.0 + 3600))


def test_raw_llama_server_error_text_is_understood_too():
    rec = failed("request (42026 tokens) exceeds the available context size (32768 tokens), try increasing it")
    assert context_failure(rec) == (42026, 32768)
    assert context_failure(failed("something else")) is None


def test_cache_misses_become_advice_and_errors_come_first():
    row = CacheStats(key="local", backend="local", session_id=None, requests=3, prompt_tokens=1, cached_tokens=0,
                     share=0.0, last_share=0.0, later_share=0.0, prompt_tps=None, ttft_ms=None, last_ttft_ms=None,
                     low_turns=2, reason="another session used the slot", fix="-np 2")
    items = advise([backend(4096)], NO_GPU, CacheReport(by_backend=(row,)))
    assert codes(items) == ["ctx_too_small", "cache_low"]
    assert items[1].fix == "-np 2"


def test_unreachable_and_loading():
    down = backend(None, health="unreachable", health_detail="connection refused")
    (a,) = advise([down], NO_GPU, CacheReport())
    assert a.level == "error" and "not reachable" in a.text and "start llama-server" in a.fix
    (b,) = advise([backend(None, health="loading")], NO_GPU, CacheReport())
    assert b.level == "info" and b.code == "loading"


def test_an_unreachable_backend_ccbridge_runs_points_at_its_service():
    down = backend(None, health="unreachable", health_detail="connection refused")
    (a,) = advise([down], NO_GPU, CacheReport(), managed={"local"})
    assert "backends.local.command" in a.fix and "llama:local" in a.fix


GEMMA_SWA = SwaStatus(window=512, swa_layers=15, n_layers=18, pattern_source="llama.cpp default for gemma3",
                      full=False, full_source="process", n_ctx=8192, slots=1, cache_types="f16/f16", swa_cells=1024,
                      kv_bytes=39 * 2**20, base_bytes=24 * 2**20, swa_bytes=15 * 2**20, swa_full_bytes=120 * 2**20,
                      extra_bytes=105 * 2**20)
"""What the monitor computed for gemma-3-270m at -c 8192 -np 1 (llama-server logged 24 + 15 MiB)."""


def test_a_sliding_window_model_without_swa_full_gets_the_fix_with_its_memory_cost():
    b = backend(model="/models/gemma-3-270m-q4_k_m.gguf", swa=GEMMA_SWA)
    (a,) = advise([b], NO_GPU, CacheReport())
    assert a.level == "warn" and a.code == "swa_no_full" and a.backend == "local"
    assert "gemma-3-270m-q4_k_m.gguf uses sliding-window attention" in a.text
    assert "15 of 18 layers" in a.text and "512 tokens" in a.text and "last 1024 tokens" in a.text
    assert "a new Claude Code session, a subagent" in a.text and "read again in full" in a.text
    assert a.fix.startswith("restart llama-server with --swa-full")
    assert "105.0 MiB" in a.fix and "-c 8192 with 1 slot(s)" in a.fix and "39.0 MiB -> 144.0 MiB" in a.fix


def test_swa_advice_for_a_managed_server_names_the_key_and_what_was_seen():
    row = CacheStats(key="local", backend="local", session_id=None, requests=2, prompt_tokens=8000,
                     cached_tokens=1, share=0.0, last_share=0.0, later_share=None, prompt_tps=None, ttft_ms=None,
                     last_ttft_ms=None, missed_first_turns=2)
    (a,) = advise([backend(swa=GEMMA_SWA)], NO_GPU, CacheReport(by_backend=(row,)), managed={"local"})
    assert "backends.local.command" in a.fix and "llama:local" in a.fix and "w on the GPU screen" in a.fix
    assert "seen here: 2 new session(s)" in a.text


def test_no_swa_advice_with_swa_full_and_a_hedge_when_flags_are_unknown():
    assert advise([backend(swa=replace(GEMMA_SWA, full=True))], NO_GPU, CacheReport()) == ()
    (a,) = advise([backend(swa=replace(GEMMA_SWA, full=None, full_source=None))], NO_GPU, CacheReport())
    assert "flags cannot be read here: unless it runs with --swa-full" in a.text
    bare = replace(GEMMA_SWA, kv_bytes=None, base_bytes=None, swa_bytes=None, swa_full_bytes=None, extra_bytes=None)
    (b,) = advise([backend(swa=bare)], NO_GPU, CacheReport())
    assert b.fix == "restart llama-server with --swa-full"
