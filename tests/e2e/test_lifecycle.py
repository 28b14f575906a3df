"""Every way a request ends stops the model: on the real chain, llama-server's slot is free at once.

One llama-server (`--ignore-eos`, so a request for 60,000 tokens would keep it busy for
most of a minute) and one `ccbridge serve` with three backends on it: `local` (through
the managed LiteLLM), `nat` (`route: native`) and `rst` (through LiteLLM, behind a TCP
relay that resets the connection mid-answer). For each way of ending, the time from the
end to the slot being free is printed (run with -s); the assertions are that the slot is
freed long before the generation would have finished, and that nothing starts it again.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.config import chain_config
from tests.support.llama import LlamaServer, slot_busy
from tests.support.serve import ServeProcess, StreamReader, wait_for

pytestmark = pytest.mark.e2e
LONG = {"max_tokens": 60000, "messages": [{"role": "user", "content": "Write a long story."}]}
FREED: dict[str, float] = {}  # way of ending -> ms from the end until the slot was free


class ResetRelay(threading.Thread):
    """A TCP relay to llama-server that, `after` seconds into an answer, resets the
    caller's connection (RST) and closes its own to llama-server."""

    def __init__(self, target_port: int, after: float = 1.5) -> None:
        super().__init__(daemon=True)
        self.target_port, self.after = target_port, after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.resets = 0

    def run(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:  # llama-server already stopped (a monitor probe during teardown)
            client.close()
            return
        threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
        first: float | None = None
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
                first = first or time.monotonic()
                if time.monotonic() - first >= self.after:
                    self.resets += 1
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def _config(path: Path, llama_api: str, relay_api: str, timeout: float) -> Path:
    return chain_config(path, {"local": {"api_base": llama_api}, "nat": {"api_base": llama_api, "route": "native"},
                               "rst": {"api_base": relay_api}},
                        proxy={"upstream_timeout": timeout},
                        aliases={"claude-native-*": "nat", "claude-reset-*": "rst", "*": "local"})


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("lifecycle")
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp / "c"), "CCBRIDGE_DATA_DIR": str(tmp / "d")}
    with LlamaServer(tiny_model, ctx=65536, extra_args=("--slots", "--ignore-eos")) as llama:
        relay = ResetRelay(llama.port)
        relay.start()
        config = _config(tmp / "ccbridge.yaml", llama.api_base, f"http://127.0.0.1:{relay.port}/v1", timeout=8)
        with ServeProcess(config, env) as serve:
            yield serve, llama, relay
        relay.close()
    if FREED:
        print("\nslot free after each way a request ends (ms): "
              + ", ".join(f"{k} {v:.0f}" for k, v in FREED.items()))


def _busy_then_end(llama, start, end, name: str) -> float:
    """Start a long generation, end it, return ms until llama-server's slot was free."""
    assert wait_for(lambda: not slot_busy(llama), 15), "the slot was busy before the test started"
    start()
    assert wait_for(lambda: slot_busy(llama), 30), "llama-server never started generating"
    time.sleep(0.3)
    ended_at = end()
    assert wait_for(lambda: not slot_busy(llama), 10, interval=0.05), f"{name}: the model kept generating"
    took = (time.monotonic() - ended_at) * 1000
    FREED[name] = took
    time.sleep(1.0)
    assert not slot_busy(llama), f"{name}: something started the model again"
    return took


def _last_record(serve: ServeProcess, model: str) -> dict:
    got = wait_for(lambda: [r for r in serve.requests(20) if r["requested_model"] == model], 10)
    assert got, serve.requests(5)
    return got[0]


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-native-1"])
def test_client_hangs_up_a_stream(chain, model):
    serve, llama, _ = chain
    reader = StreamReader(f"{serve.url}/v1/messages", {**LONG, "model": model, "stream": True})

    def end() -> float:
        assert wait_for(lambda: reader.deltas >= 20, 30)
        reader.hang_up.set()
        reader.join(10)
        assert reader.closed_at is not None
        return reader.closed_at

    route = "native" if "native" in model else "litellm"
    _busy_then_end(llama, reader.start, end, f"hang-up stream ({route})")
    rec = _last_record(serve, model)
    assert rec["client_hung_up"] is True and rec["status"] == 200


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-native-1"])
def test_client_gives_up_a_plain_request(chain, model):
    serve, llama, _ = chain
    box: dict = {}

    def send() -> None:
        try:
            httpx.post(f"{serve.url}/v1/messages", json={**LONG, "model": model}, trust_env=False,
                       timeout=httpx.Timeout(60, read=2.0))
        except httpx.ReadTimeout:
            box["at"] = time.monotonic()

    thread = threading.Thread(target=send, daemon=True)

    def end() -> float:
        thread.join(30)
        assert "at" in box, "the client's read timeout never fired"
        return box["at"]

    route = "native" if "native" in model else "litellm"
    _busy_then_end(llama, thread.start, end, f"hang-up plain ({route})")
    rec = _last_record(serve, model)
    assert rec["client_hung_up"] is True and rec["status"] == 499


def test_ccbridge_upstream_timeout_stops_the_model(chain):
    """proxy.upstream_timeout (8 s here) answers 504 and ends the backend call with it."""
    serve, llama, _ = chain
    box: dict = {}

    def send() -> None:
        box["resp"] = httpx.post(f"{serve.url}/v1/messages", json={**LONG, "model": "claude-opus-4-8"},
                                 trust_env=False, timeout=60)
        box["at"] = time.monotonic()

    thread = threading.Thread(target=send, daemon=True)

    def end() -> float:
        thread.join(30)
        return box["at"]

    _busy_then_end(llama, thread.start, end, "ccbridge upstream timeout")
    resp = box["resp"]
    assert resp.status_code == 504 and "proxy.upstream_timeout" in resp.json()["error"]["message"]
    rec = _last_record(serve, "claude-opus-4-8")
    assert rec["status"] == 504 and rec["error"] and rec["backend_calls"] == 1


def test_backend_connection_reset_mid_answer(chain):
    serve, llama, relay = chain
    box: dict = {}

    def send() -> None:
        box["resp"] = httpx.post(f"{serve.url}/v1/messages", trust_env=False, timeout=60,
                                 json={**LONG, "model": "claude-reset-1", "stream": True})
        box["at"] = time.monotonic()

    thread = threading.Thread(target=send, daemon=True)

    def end() -> float:
        thread.join(30)
        assert relay.resets >= 1
        return box["at"]

    _busy_then_end(llama, thread.start, end, "backend connection reset")
    resp = box["resp"]
    assert resp.status_code == 200
    assert resp.content.strip().split(b"\n\n")[-1].startswith(b"event: error"), resp.content[-400:]
    rec = _last_record(serve, "claude-reset-1")
    assert rec["status"] == 200 and rec["error"]


def test_litellm_killed_mid_stream(chain):
    serve, llama, _ = chain
    reader = StreamReader(f"{serve.url}/v1/messages", {**LONG, "model": "claude-opus-4-8", "stream": True})
    pid = serve.litellm_pid()

    def end() -> float:
        assert wait_for(lambda: reader.deltas >= 20, 30)
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    _busy_then_end(llama, reader.start, end, "LiteLLM killed mid-stream")
    reader.join(30)
    rec = _last_record(serve, "claude-opus-4-8")
    assert rec["status"] == 200 and rec["error"]
    # it heals: the next request is served again
    assert wait_for(lambda: serve.status()["services"][1]["state"] == "ready", 90)
    ok = httpx.post(f"{serve.url}/v1/messages", json={**LONG, "max_tokens": 8, "model": "claude-opus-4-8"},
                    trust_env=False, timeout=60)
    assert ok.status_code == 200, ok.text


def test_ccbridge_stopping_ends_streams_and_stops_the_model(tiny_model, tmp_path):
    env = {"CCBRIDGE_CONFIG_DIR": str(tmp_path / "c"), "CCBRIDGE_DATA_DIR": str(tmp_path / "d")}
    with LlamaServer(tiny_model, ctx=65536, parallel=2, extra_args=("--slots", "--ignore-eos")) as llama:
        config = _config(tmp_path / "ccbridge.yaml", llama.api_base, llama.api_base, timeout=600)
        serve = ServeProcess(config, env).start()
        readers = [StreamReader(f"{serve.url}/v1/messages", {**LONG, "model": m, "stream": True})
                   for m in ("claude-opus-4-8", "claude-native-1")]
        slots = lambda: httpx.get(f"{llama.base_url}/slots", trust_env=False).json()  # noqa: E731
        for reader in readers:
            reader.start()
        assert wait_for(lambda: all(r.deltas >= 20 for r in readers), 60)
        assert sum(s["is_processing"] for s in slots()) == 2
        stopped_at = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: not any(s["is_processing"] for s in slots()), 10, interval=0.05)
        FREED["ccbridge stopped (SIGTERM)"] = took = (time.monotonic() - stopped_at) * 1000
        assert serve.stop() == 0
        for reader in readers:  # each stream ended with an error event that says why, not a cut
            reader.join(10)
            assert reader.error is None, reader.error
            assert b"event: error" in reader.tail and b"ccbridge stopped" in reader.tail, reader.tail[-300:]
        print(f"\nccbridge stopped: both slots free {took:.0f} ms after SIGTERM")
        time.sleep(1)
        assert not any(s["is_processing"] for s in slots())


@pytest.mark.parametrize("model", ["claude-opus-4-8", "claude-native-1"])
def test_a_1_3_mb_request_passes(chain, model):
    """Many MCP tools make a big request; the tiny model's template does not render tools."""
    serve, _, _ = chain
    tool = {"name": "big", "description": "d" * 1_300_000, "input_schema": {"type": "object", "properties": {}}}
    body = {"model": model, "max_tokens": 8, "tools": [tool], "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(f"{serve.url}/v1/messages", json=body, trust_env=False, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    assert resp.json()["content"][0]["type"] == "text"
