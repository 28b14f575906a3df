"""A bridge with fixed data, for snapshot tests and the benchmark's UI-only runs.

`FixedBackend` is a `backend.control.BridgeControl` (the interface the panel
speaks to a real serve over HTTP), answered from fixed records and a fixed
status (no clock, no random ids). Its metrics come from the real fold
(`backend.metrics.RequestMetrics`) run over the fixed records at a fixed time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from backend.backend_info import BackendInfo
from backend.claude_env import claude_settings, shell_lines
from backend.config import parse_config
from backend.events import Event, RequestFinished, RequestProgress, RequestRecord, RequestStarted
from backend.metrics import RequestMetrics
from backend.store.history import RequestBodies

NOW = 1_795_000_000.0  # a fixed "now" for every screen


def fixed_records() -> list[RequestRecord]:
    """Newest first, like the store."""
    base = dict(method="POST", path="/v1/messages", client_version="claude-cli/2.1.197", stream=True,
                routed_backend="local", routed_model="tiny-llama.gguf", alias_rule="*")
    rows = [
        RequestRecord(id="req-0006", started_at=NOW - 8, session_id="5f1c2a9e-aaaa", requested_model="claude-opus-4-8",
                      status=200, input_tokens=217, output_tokens=212, cache_read_tokens=15100, ttft_ms=640.0,
                      duration_ms=1180.0, output_tps=392.6, backend_prompt_tps=13800.0, backend_gen_tps=401.2,
                      backend_prompt_n=217, backend_cache_n=15100, backend_calls=1, stop_reason="end_turn",
                      cache_share=15100 / 15317, **base),
        RequestRecord(id="req-0005", started_at=NOW - 20, session_id="5f1c2a9e-aaaa",
                      requested_model="claude-haiku-4-5", status=200, input_tokens=1830, output_tokens=37,
                      ttft_ms=90.0, duration_ms=210.0, output_tps=308.3, backend_calls=1,
                      stop_reason="end_turn", **{**base, "alias_rule": "claude-haiku-*"}),
        RequestRecord(id="req-0004", started_at=NOW - 45, session_id="0b9d7c11-bbbb", requested_model="claude-opus-4-8",
                      status=200, input_tokens=15290, output_tokens=58, ttft_ms=1310.0, duration_ms=1900.0,
                      output_tps=98.3, backend_calls=2, client_hung_up=True, **base),
        RequestRecord(id="req-0003", started_at=NOW - 70, session_id="0b9d7c11-bbbb",
                      requested_model="claude-opus-4-8", status=400, duration_ms=35.0, backend_calls=1,
                      error="prompt is too long: 15317 tokens > 4096 maximum", **base),
        RequestRecord(id="req-0002", started_at=NOW - 90, requested_model="gpt-4o", status=404, duration_ms=2.0,
                      method="POST", path="/v1/messages", error="no alias matches model 'gpt-4o'"),
    ]
    return rows


def fixed_bodies() -> RequestBodies:
    """What req-0006 sent and got (shortened: a real Claude Code body is ~50 KB)."""
    request = json.dumps({"model": "claude-opus-4-8", "max_tokens": 8000, "stream": True,
                          "system": [{"type": "text", "text": "You are Claude Code."}],
                          "messages": [{"role": "user", "content": "Hello world"}]}).encode()
    response = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
                b'"role":"assistant","content":[],"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                b'"delta":{"type":"text_delta","text":"Hello!"}}\n\n'
                b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    return RequestBodies("req-0006", request, response, len(request), len(response))


def fixed_metrics(records: list[RequestRecord]) -> dict[str, Any]:
    """What `status()["metrics"]` says after these records, folded by the backend's own code at NOW."""
    metrics = RequestMetrics(clock=lambda: NOW)
    metrics.started_at = NOW - 3725
    for r in reversed(records):
        metrics.on_event(RequestFinished(r))
    return metrics.snapshot().to_dict()


FIXED_CONFIG = """
proxy:
  port: 8082
backends:
  local:
    api_base: http://127.0.0.1:8080/v1
aliases:
  "claude-haiku-*": local
  "*": local
"""
"""The config behind `fixed_status()` (the env card is computed from it)."""


def fixed_claude_env() -> list[str]:
    """What serve puts in `status()["claude_env"]` for FIXED_CONFIG and the fixed monitor."""
    first = fixed_monitor()["backends"][0]
    info = BackendInfo("local", first["api_base"], True, first["model"], first["n_ctx_slot"], first["n_ctx_train"],
                       first["total_slots"])
    return shell_lines(claude_settings(parse_config(FIXED_CONFIG), info), why=False)


def fixed_status() -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "config_path": "/home/you/.config/ccbridge/ccbridge.yaml",
        "proxy_url": "http://127.0.0.1:8082",
        "api_key_set": False,
        "services": [
            {"name": "proxy", "state": "ready", "url": "http://127.0.0.1:8082", "port": 8082,
             "started_at": NOW - 3725, "in_flight": 0, "restarts": 0, "last_error": None},
            {"name": "litellm", "state": "ready", "pid": 4242, "port": 4000, "url": "http://127.0.0.1:4000",
             "restarts": 1, "started_at": NOW - 600, "state_since": NOW - 600, "version": "1.102.4",
             "last_error": None, "log_tail": ["INFO:     Uvicorn running on http://127.0.0.1:4000",
                                              "INFO:     127.0.0.1 - \"POST /v1/messages HTTP/1.1\" 200 OK"]},
        ],
        "aliases": [{"pattern": "claude-haiku-*", "target": "local"}, {"pattern": "*", "target": "local"}],
        "backends": [{"name": "local", "api_base": "http://127.0.0.1:8080/v1", "model": "auto",
                      "resolved_model": "tiny-llama.gguf", "max_tokens": None}],
        "unknown_models": [{"model": "gpt-4o", "count": 3, "first_seen": NOW - 300, "last_seen": NOW - 90}],
        "history_warning": None,
        "metrics": fixed_metrics(fixed_records()),
        "monitor": fixed_monitor(),
        "scorecards": fixed_scorecards(),
        "claude_env": fixed_claude_env(),
    }


def fixed_scorecards() -> list[dict[str, Any]]:
    """`status()["scorecards"]`: the real Qwen2.5-Coder 0.5B card (bench.scorecard), context as at -c 16384."""
    lines = [
        {"topic": "tools in the template", "level": "ok", "found": "the chat template renders the offered tools",
         "fix": ""},
        {"topic": "tool calls", "level": "ok", "found": "the model writes its calls as JSON text; ccbridge repairs "
         "them into tool_use blocks (backends.<name>.repair_tool_calls, on by default)", "fix": ""},
        {"topic": "thinking", "level": "info", "found": "none came back (Claude Code works without it; a reasoning "
         "model's thinking needs its template and --jinja)", "fix": ""},
        {"topic": "context per slot", "level": "warn", "found": "16,384 tokens: Claude Code's prompt alone is "
         "12-22k tokens with its tools, so little room is left for the work", "fix": "use -c 65536 or more per slot"},
        {"topic": "sliding-window attention", "level": "ok", "found": "none (the cache is shared across sessions as "
         "it is)", "fix": ""},
    ]
    return [{"backend": "local", "model": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "checked_at": NOW - 120,
             "tool_calls": "repair", "lines": lines, "key": "k", "verdict": "warn"}]


def fixed_monitor() -> dict[str, Any]:
    """The shape of `status()["monitor"]` (backend/monitor/snapshot.py), with fixed values."""
    return {
        "taken_at": NOW,
        "backends": [{
            "name": "local", "api_base": "http://127.0.0.1:8080/v1", "health": "ok", "health_since": NOW - 3600,
            "model": "/models/qwen2.5-coder-7b-q4_k_m.gguf", "model_alias": None, "build": "b1-0c1e570",
            "n_ctx_slot": 65536, "n_ctx_train": 131072, "total_slots": 1, "busy_slots": 1,
            "gen_tps": 38.4, "prompt_tps": 812.0,
            "slots": [{"id": 0, "n_ctx": 65536, "busy": True, "phase": "generating", "task_id": 41,
                       "prompt_tokens": 23_400, "prompt_processed": 2_400, "prompt_cached": 21_000,
                       "progress": 1.0, "decoded": 312, "remaining": 7_688}],
            "process": {"pid": 5151, "cpu_percent": 188.0, "rss_bytes": 5_600_000_000, "threads": 9,
                        "flags": {"ctx": 65536, "n_gpu_layers": 99, "parallel": 1, "metrics": True,
                                  "slots": True, "jinja": True, "flash_attn": True}},
        }],
        "gpu": {"vendor": "nvidia", "source": "nvml", "available": True, "no_telemetry": False, "note": None,
                "devices": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "util_percent": 87.0,
                             "mem_used_bytes": 19_800_000_000, "mem_total_bytes": 25_757_220_864,
                             "mem_fraction": 0.769, "temperature_c": 66.0, "power_w": 301.0,
                             "power_limit_w": 450.0, "clock_graphics_mhz": 2520.0,
                             "processes": [{"pid": 5151, "name": "llama-server",
                                            "used_memory_bytes": 19_300_000_000, "is_backend": True,
                                            "backend": "local"}]}]},
        "host": {"cpu_percent": 31.0, "cpu_count": 16, "mem_used_bytes": 21_000_000_000,
                 "mem_total_bytes": 68_000_000_000},
        "cache": {"by_backend": [{"key": "local", "share": 0.962, "prompt_tokens": 412_880, "requests": 27}],
                  "by_session": [{"key": "5f1c9e2a-0b7d", "later_share": 0.981, "reason": None}]},
        "advice": [{"level": "warn", "code": "ctx_below_compact",
                    "text": "context per slot is 65536 tokens: Claude Code will not compact before 100k",
                    "fix": "restart llama-server with -c 131072 if memory allows"}],
    }


class FixedBackend:
    """Answers from fixed data; records calls so tests can assert them. A `BridgeControl`."""

    def __init__(self, records: list[RequestRecord] | None = None, status: dict[str, Any] | None = None) -> None:
        self.records = fixed_records() if records is None else records
        self._status = fixed_status() if status is None else status
        self.listeners: list[Callable[[Event], None]] = []
        self.calls: list[tuple[str, Any]] = []
        self.started: list[RequestStarted] = []
        self.progressed: list[RequestProgress] = []

    def subscribe(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            listener(event)

    async def status(self) -> dict[str, Any]:
        self.calls.append(("status", None))
        return self._status

    async def recent(self, limit: int = 100, **filters: Any) -> list[RequestRecord]:
        return self.records[:limit]

    async def record(self, request_id: str) -> RequestRecord | None:
        return next((r for r in self.records if r.id == request_id), None)

    async def in_flight(self) -> list[RequestStarted]:
        return list(self.started)

    async def bodies(self, request_id: str) -> RequestBodies | None:
        return fixed_bodies() if request_id == "req-0006" else None

    async def progress(self) -> list[RequestProgress]:
        return list(self.progressed)

    async def aliases(self) -> list[tuple[str, str]]:
        return [(a["pattern"], a["target"]) for a in self._status["aliases"]]

    async def session_status(self, session_id: str | None) -> dict:
        return {"known": False, "request": None, "last": None, "in_flight": 0, "backend": {}, "services": []}

    async def log_tail(self, service: str, n: int = 200) -> list[str]:
        return []

    async def restart_service(self, name: str) -> None:
        self.calls.append(("restart", name))

    async def stop_service(self, name: str) -> None:
        self.calls.append(("stop_service", name))

    async def start_service(self, name: str) -> None:
        self.calls.append(("start_service", name))

    async def save_aliases(self, aliases: list[tuple[str, str]]) -> list[tuple[str, str]]:
        self.calls.append(("save_aliases", aliases))
        self._status = {**self._status, "aliases": [{"pattern": p, "target": t} for p, t in aliases]}
        return aliases

    async def enable_swa_full(self, backend: str) -> tuple[str, ...]:
        self.calls.append(("enable_swa_full", backend))
        return (f"llama:{backend}",)

    async def probe_models(self) -> list[dict[str, Any]]:
        self.calls.append(("probe_models", None))
        self._status["scorecards"] = fixed_scorecards()
        return fixed_scorecards()


def fixed_app(**kw: Any):  # type: ignore[no-untyped-def]
    """A PanelApp over FixedBackend with a fixed clock, history already loaded."""
    from tui.app import PanelApp
    from tui.bridge import PanelBridge, PanelState

    backend = FixedBackend(**kw)
    state = PanelState(clock=lambda: NOW)
    state.seed(backend.records[:500])
    state.status = backend._status  # noqa: SLF001 - drawn at once, as after the first poll
    return PanelApp(PanelBridge(backend), state=state)


class FixedLink:
    """Stands where a `backend.api.link.ServeLink` would: "attached" to a FixedBackend at once."""

    def __init__(self, backend: FixedBackend | None = None, url: str = "http://127.0.0.1:8082") -> None:
        self.client = backend or FixedBackend()
        self.url = url
        self.process = None
        self.log_path = None
        self.closed = False
        self.found = {"version": "0.1.0", "config_path": "/home/u/.config/ccbridge/ccbridge.yaml", "services": [
            {"name": "proxy", "pid": 4242, "started_by": "the panel (pid 4100)", "started_at": NOW - 7200}]}
        """What `ServeLink.connect` keeps of a serve it found running: who started it and when."""

    @property
    def started_here(self) -> bool:
        return False

    async def connect(self) -> str:
        return "attached"

    async def close(self, *, stop_started: bool = True) -> None:
        self.closed = True
