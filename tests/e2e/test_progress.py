"""Prefill progress on the real chain: while llama-server reads a long prompt, ccbridge says how far
it has got and how long the rest will take (its own `prompt_progress` reports), then that it generates."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.support.serve import records_for, wait_for

pytestmark = pytest.mark.e2e


class EventReader(threading.Thread):
    """Reads ccbridge's event stream (/ccbridge/api/events), keeping the RequestProgress events."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.progress: list[dict] = []
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(10, read=None), trust_env=False) as client:
            with client.stream("GET", f"{self.url}/ccbridge/api/events") as resp:
                for line in resp.iter_lines():
                    if line.startswith("event: hello"):
                        self.ready.set()
                    if line.startswith("data: ") and '"RequestProgress"' in line:
                        data = json.loads(line[6:])
                        self.progress += [fields for kind, fields in data.get("events", [])
                                          if kind == "RequestProgress"]
                    if self.stop.is_set():
                        return


def test_a_long_prompt_reports_its_progress_then_generating(chain):
    serve, _ = chain
    reader = EventReader(serve.url)
    reader.start()
    assert reader.ready.wait(10)
    prompt = "Hello world the code " * 800  # about 23,000 tokens for the tiny model: several 2,048-token batches
    resp = httpx.post(f"{serve.url}/v1/messages", trust_env=False, timeout=300, json={
        "model": "claude-opus-4-8", "max_tokens": 20, "stream": True,
        "messages": [{"role": "user", "content": prompt}]})
    assert resp.status_code == 200, resp.text[:500]
    rec = records_for(serve)[0]
    # events reach the stream in batches a few times a second: wait for the last one
    assert wait_for(lambda: any(p["id"] == rec["id"] and p["phase"] == "generating" for p in reader.progress), 10)
    reader.stop.set()
    mine = [p for p in reader.progress if p["id"] == rec["id"]]
    prefill = [p for p in mine if p["phase"] == "prefill"]
    assert len(prefill) >= 3, mine
    total = prefill[0]["prompt_total"]
    assert total == (rec["input_tokens"] or 0) + (rec["cache_read_tokens"] or 0) > 20_000
    done = [p["prompt_done"] for p in prefill]
    assert done == sorted(done) and done[-1] == total
    assert any(p["eta_s"] is not None and p["eta_s"] > 0 for p in prefill[:-1])
    assert [p["phase"] for p in mine][-1] == "generating"
    # the progress chunks were kept from LiteLLM: the answer is one text block, as without them
    starts = [line for line in resp.text.splitlines() if line.startswith("event: content_block_start")]
    assert len(starts) == 1, resp.text[:2000]
