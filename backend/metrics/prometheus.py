"""`GET /metrics`: the bridge in Prometheus text, written by the standard `prometheus-client`.

A custom collector reads, at scrape time, the same fold the panel and the
status API show (`RequestMetrics`), the services' states and the monitor's
snapshot: nothing is counted twice and nothing runs between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.metrics.fold import Histogram, RequestMetrics
from backend.monitor.snapshot import MonitorSnapshot

__all__ = ["CONTENT_TYPE", "BridgeCollector", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
_UP_STATES = ("ready", "running", "restarting")  # restarting: the old process still serves


def _histogram(name: str, doc: str, hists: list[Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["model", "route"])
    for h in hists:
        buckets = [(_le(b), c) for b, c in zip(h.bounds, h.counts, strict=False)]
        buckets.append(("+Inf", h.counts[-1]))
        family.add_metric([h.model, h.route], buckets, h.total)
    return family


def _le(bound: float) -> str:
    return repr(float(bound))


class BridgeCollector(Collector):
    """Everything `/metrics` shows, read from the bridge at scrape time."""

    def __init__(self, metrics: RequestMetrics, services: Callable[[], list[dict[str, Any]]],
                 monitor: Callable[[], MonitorSnapshot], version: str,
                 groups: Callable[[], list[dict[str, Any]]] = list) -> None:
        self._metrics = metrics
        self._services = services
        self._monitor = monitor
        self._version = version
        self._groups = groups

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._service_families()
        yield from self._monitor_families()
        yield from self._group_families()

    def _group_families(self) -> Iterator[Metric]:
        """Per group alias and backend: routable or not, requests answered and their share, failovers,
        active sessions, and the share of prompt tokens llama-server served from its cache."""
        labels = ["group", "backend"]
        up = GaugeMetricFamily("ccbridge_group_backend_up", "1 while the backend gets new requests of its group "
                               "(its /health and the last calls to it)", labels=labels)
        requests = CounterMetricFamily("ccbridge_group_backend_requests", "Requests of the group this backend "
                                       "answered", labels=labels)
        share = GaugeMetricFamily("ccbridge_group_backend_request_share", "This backend's share of the group's "
                                  "answered requests", labels=labels)
        took = CounterMetricFamily("ccbridge_group_backend_failovers", "Requests this backend answered in place "
                                   "of a member that failed", labels=labels)
        sessions = GaugeMetricFamily("ccbridge_group_backend_sessions", "Claude Code sessions kept on this backend "
                                     "(a request in the last 30 minutes)", labels=labels)
        cache = GaugeMetricFamily("ccbridge_group_backend_cache_share", "Share of this backend's prompt tokens "
                                  "served from llama-server's cache", labels=labels)
        for group in self._groups():
            for m in group["members"]:
                v = [group["group"], m["backend"]]
                up.add_metric(v, 1 if m["up"] else 0)
                requests.add_metric(v, m["requests"])
                took.add_metric(v, m["took_over"])
                sessions.add_metric(v, m["sessions"])
                if m.get("share") is not None:
                    share.add_metric(v, m["share"])
                if m.get("cache_share") is not None:
                    cache.add_metric(v, m["cache_share"])
        yield from (up, requests, share, took, sessions, cache)

    def _requests(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("ccbridge_info", "ccbridge's version", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
        labels = ["model", "route", "status"]
        requests = CounterMetricFamily(
            "ccbridge_requests", "Requests finished, by model asked for, route (native, litellm, external; "
            "- when never routed) and HTTP status", labels=labels)
        hung = CounterMetricFamily("ccbridge_client_hangups", "Requests the client left before the end "
                                   "(the model was stopped)", labels=labels)
        repaired = CounterMetricFamily("ccbridge_tool_calls_repaired", "Tool calls the model wrote as text (JSON, "
                                       "a fence, <tool_call> tags) that ccbridge sent as tool_use blocks",
                                       labels=["model", "route"])
        repairs: dict[tuple[str, str], int] = {}
        tokens = CounterMetricFamily("ccbridge_tokens", "Tokens by kind: input (prompt tokens not from cache), "
                                     "output, cache_read (prompt tokens served from cache), cache_creation",
                                     labels=["model", "route", "kind"])
        for c in self._metrics.counts():
            requests.add_metric([c.model, c.route, c.status], c.requests)
            hung.add_metric([c.model, c.route, c.status], c.hung_up)
            repairs[(c.model, c.route)] = repairs.get((c.model, c.route), 0) + c.tool_repairs
            for kind, value in (("input", c.input_tokens), ("output", c.output_tokens),
                                ("cache_read", c.cache_read_tokens), ("cache_creation", c.cache_creation_tokens)):
                tokens.add_metric([c.model, c.route, kind], value)
        yield requests
        yield hung
        for (model, route), n in sorted(repairs.items()):
            repaired.add_metric([model, route], n)
        yield repaired
        yield tokens
        yield _histogram("ccbridge_ttft_seconds", "Time from request to the first content token",
                         self._metrics.ttft_histograms())
        yield _histogram("ccbridge_request_duration_seconds", "Time from request to its last byte",
                         self._metrics.duration_histograms())
        snap = self._metrics.snapshot()
        yield GaugeMetricFamily("ccbridge_in_flight_requests", "Requests under way now", value=snap.in_flight)
        yield GaugeMetricFamily("ccbridge_output_tokens_per_second", "Output tokens per second over the last minute",
                                value=snap.output_tps)
        yield GaugeMetricFamily("ccbridge_prompt_tokens_per_second", "Prompt tokens per second over the last minute",
                                value=snap.prompt_tps)

    def _service_families(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ccbridge_service_up", "1 while the service serves (ready, running, restarting)",
                               labels=["service"])
        state = GaugeMetricFamily("ccbridge_service_state", "1 for the state the service is in", labels=["service",
                                                                                                         "state"])
        restarts = CounterMetricFamily("ccbridge_service_restarts", "Restarts of the service since ccbridge started",
                                       labels=["service"])
        listener_errors = CounterMetricFamily("ccbridge_listener_errors", "Exceptions raised by event listeners "
                                              "(history, metrics, panels); each is logged, rate-limited")
        bodies_dropped = CounterMetricFamily("ccbridge_bodies_dropped", "Request bodies not kept because the history "
                                             "writer was too far behind (the records were kept)")
        for svc in self._services():
            name, current = str(svc.get("name")), str(svc.get("state"))
            up.add_metric([name], 1 if current in _UP_STATES else 0)
            state.add_metric([name, current], 1)
            restarts.add_metric([name], int(svc.get("restarts") or 0))
            if name == "proxy":
                listener_errors.add_metric([], int(svc.get("listener_errors") or 0))
                bodies_dropped.add_metric([], int(svc.get("bodies_dropped") or 0))
        yield up
        yield state
        yield restarts
        yield listener_errors
        yield bodies_dropped

    def _monitor_families(self) -> Iterator[Metric]:
        snap = self._monitor()
        b_labels = ["backend"]
        gauges: dict[str, GaugeMetricFamily] = {}

        def gauge(name: str, doc: str, labels: list[str], values: list[str], value: float | int | None) -> None:
            if value is None:
                return  # a reading the monitor could not take is absent, never a made-up zero
            family = gauges.get(name)
            if family is None:
                family = gauges[name] = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric(values, float(value))

        for b in snap.backends:
            v = [b.name]
            gauge("ccbridge_llama_up", "1 when llama-server's /health answers ok", b_labels, v,
                  1 if b.health == "ok" else 0)
            gauge("ccbridge_llama_slots", "llama-server slots (-np)", b_labels, v, b.total_slots)
            gauge("ccbridge_llama_busy_slots", "llama-server slots serving a request now", b_labels, v, b.busy_slots)
            gauge("ccbridge_llama_context_per_slot_tokens", "Context per slot in tokens", b_labels, v, b.n_ctx_slot)
            gauge("ccbridge_llama_generation_tokens_per_second", "llama-server's generation speed (monitor)",
                  b_labels, v, b.gen_tps)
            gauge("ccbridge_llama_prompt_tokens_per_second", "llama-server's prompt speed (monitor)", b_labels, v,
                  b.prompt_tps)
            if b.metrics is not None:
                gauge("ccbridge_llama_requests_deferred", "Requests waiting for a free slot", b_labels, v,
                      b.metrics.requests_deferred)
                gauge("ccbridge_llama_cache_share", "Share of prompt tokens served from llama-server's cache",
                      b_labels, v, b.metrics.cache_share_total)
            if b.process is not None:
                gauge("ccbridge_llama_process_cpu_percent", "llama-server's CPU use", b_labels, v,
                      b.process.cpu_percent)
                gauge("ccbridge_llama_process_rss_bytes", "llama-server's resident memory", b_labels, v,
                      b.process.rss_bytes)
        g_labels = ["gpu", "name"]
        for d in snap.gpu.devices:
            v = [str(d.index), d.name or ""]
            gauge("ccbridge_gpu_utilization_percent", "GPU utilisation", g_labels, v, d.util_percent)
            gauge("ccbridge_gpu_memory_used_bytes", "GPU memory in use", g_labels, v, d.mem_used_bytes)
            gauge("ccbridge_gpu_memory_total_bytes", "GPU memory", g_labels, v, d.mem_total_bytes)
            gauge("ccbridge_gpu_temperature_celsius", "GPU temperature", g_labels, v, d.temperature_c)
            gauge("ccbridge_gpu_power_watts", "GPU power draw", g_labels, v, d.power_w)
            gauge("ccbridge_gpu_backend_memory_bytes", "GPU memory used by the backends' llama-servers", g_labels, v,
                  d.backend_mem_bytes)
        gauge("ccbridge_host_cpu_percent", "Host CPU use", [], [], snap.host.cpu_percent)
        gauge("ccbridge_host_memory_used_bytes", "Host memory in use", [], [], snap.host.mem_used_bytes)
        gauge("ccbridge_host_memory_total_bytes", "Host memory", [], [], snap.host.mem_total_bytes)
        yield from gauges.values()


def render(collector: BridgeCollector) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
