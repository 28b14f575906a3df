"""BridgeThread: the backend on its own thread, driven synchronously from another."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from backend.config import ConfigError, load_config
from backend.events import RequestFinished
from backend.runner import BridgeThread
from tests.backend.test_front import write_config
from tests.support.llama import free_port


def test_bridge_thread_serves_records_and_saves_aliases(tmp_path):
    config = load_config(write_config(tmp_path, f"http://127.0.0.1:{free_port()}"))
    runner = BridgeThread(config, run_dir=tmp_path / "run")
    seen: list[tuple[str, object]] = []
    runner.subscribe(lambda e: seen.append((threading.current_thread().name, e)))
    runner.start()
    try:
        resp = httpx.post(f"{runner.proxy_url}/v1/messages", timeout=10, trust_env=False,
                          json={"model": "claude-opus-4-8", "max_tokens": 5,
                                    "messages": [{"role": "user", "content": "x"}]})
        assert resp.status_code == 503  # nothing at litellm.url: answered at once
        finished = [e for _, e in seen if isinstance(e, RequestFinished)]
        assert finished and {name for name, _ in seen} == {"ccbridge-backend"}
        deadline = time.monotonic() + 5
        while not runner.recent(5) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.recent(5)[0].id == finished[0].record.id
        assert runner.record(finished[0].record.id).status == 503
        status = runner.status()
        assert status["services"][0]["name"] == "proxy"
        runner.save_aliases([("claude-*", "local/other"), ("*", "local")])
        assert [r.pattern for r in runner.config.aliases] == ["claude-*", "*"]
        with pytest.raises(ConfigError):
            runner.save_aliases([("*", "missing-backend")])
        assert "proxy" in {s["name"] for s in runner.status()["services"]}
    finally:
        runner.stop()
    assert not any(t.name == "ccbridge-backend" and t.is_alive() for t in threading.enumerate())
