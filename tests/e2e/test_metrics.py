"""GET /metrics on the real chain: `ccbridge serve` -> LiteLLM -> the tiny llama-server, with real Claude Code.

The counters, histograms and gauges must move with the traffic, and agree with
the status API's folded metrics (one fold, the same numbers).
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.claude import run_claude
from tests.support.serve import ServeProcess, write_chain_config

pytestmark = pytest.mark.e2e
KEY = "sk-metrics-test-0123456789"


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = httpx.get(f"{url}/metrics", headers=headers or {}, timeout=10, trust_env=False)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def test_metrics_move_with_claude_code_traffic_through_the_real_chain(tmp_path, llama_server):
    config = write_chain_config(tmp_path / "ccbridge.yaml", llama_server.api_base)
    config.write_text(config.read_text().replace("  host: 127.0.0.1\n", f"  host: 127.0.0.1\n  api_key: {KEY}\n"))
    auth = {"x-api-key": KEY}
    with ServeProcess(config, api_key=KEY) as serve:
        assert httpx.get(f"{serve.url}/metrics", timeout=10, trust_env=False).status_code == 401
        before = scrape(serve.url, auth)
        assert total(before, "ccbridge_service_up", service="litellm") == 1
        assert total(before, "ccbridge_llama_up", backend="local") == 1
        assert total(before, "ccbridge_llama_slots", backend="local") >= 1

        result = run_claude("2.1.197", serve.url, "Hello world", api_key=KEY, timeout=240)
        assert result.returncode == 0, result.stderr[-2000:]
        for _ in range(2):
            resp = httpx.post(f"{serve.url}/v1/messages", headers={**auth, "anthropic-version": "2023-06-01"},
                              json={"model": "claude-haiku-4-5", "max_tokens": 32, "stream": True,
                                    "messages": [{"role": "user", "content": "Say hello"}]},
                              timeout=120, trust_env=False)
            assert resp.status_code == 200

        after = scrape(serve.url, auth)
        status = serve.status()
        labels = {"route": "litellm", "status": "200"}
        haiku = total(after, "ccbridge_requests_total", model="claude-haiku-4-5", **labels)
        assert haiku - total(before, "ccbridge_requests_total", model="claude-haiku-4-5", **labels) == 2
        claude_turns = total(after, "ccbridge_requests_total", **labels) - haiku
        assert claude_turns >= 1  # Claude Code's own turn(s), under the model it asked for
        # one fold: /metrics and the status API count the same requests
        assert total(after, "ccbridge_requests_total") == status["metrics"]["requests_total"]
        for kind in ("input", "output"):
            assert total(after, "ccbridge_tokens_total", kind=kind) > total(before, "ccbridge_tokens_total", kind=kind)
        assert total(after, "ccbridge_ttft_seconds_count") >= 3
        assert total(after, "ccbridge_request_duration_seconds_count") == total(after, "ccbridge_requests_total")
        inf = total(after, "ccbridge_request_duration_seconds_bucket", le="+Inf")
        assert inf == total(after, "ccbridge_request_duration_seconds_count")
        assert total(after, "ccbridge_in_flight_requests") == 0
        assert total(after, "ccbridge_service_restarts_total", service="litellm") == 0
        assert total(after, "ccbridge_host_memory_total_bytes") > 0
        text = httpx.get(f"{serve.url}/metrics", headers=auth, timeout=10, trust_env=False).text
        assert KEY not in text
