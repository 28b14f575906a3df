"""`ccbridge serve` keeps serving when nobody reads its stdout (a stalled pipe)."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx

from backend.console import ConsoleWriter
from tests.support.front import write_config
from tests.support.llama import free_port
from tests.support.serve import REPO


def test_serve_keeps_answering_with_a_stalled_stdout_pipe(tmp_path):
    port = free_port()
    backend = subprocess.Popen([sys.executable, "-m", "bench.zero_backend", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE)
    assert backend.stdout.readline().strip() == b"ready"
    config = write_config(tmp_path, f"http://127.0.0.1:{port}")
    proxy_port = int(config.read_text().split("port: ")[1].split()[0])
    # stdout is a pipe this test never reads: its 64 KB buffer fills after a few hundred lines
    serve = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--config", str(config)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{proxy_port}"
        with httpx.Client(timeout=10, trust_env=False) as client:
            for _ in range(200):
                try:
                    client.get(f"{url}/ccbridge/api/status")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            body = {"model": "claude-opus-4-8", "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x" * 300}],
                    "metadata": {"user_id": "a-long-user-id-so-each-log-line-is-long" * 3}}
            for _ in range(1500):  # ~150 bytes of log each: well past the pipe's buffer
                assert client.post(f"{url}/v1/messages", json=body).status_code == 200
            assert client.get(f"{url}/ccbridge/api/status").status_code == 200
    finally:
        serve.kill()
        serve.wait(10)
        backend.kill()
        backend.wait(10)


def test_console_writer_drops_the_oldest_lines_when_stalled_and_says_so(tmp_path):
    import io
    import threading

    gate = threading.Event()

    class Stalled(io.StringIO):
        def write(self, s: str) -> int:
            gate.wait(10)
            return super().write(s)

    stream = Stalled()
    writer = ConsoleWriter(stream, max_lines=10)
    for i in range(100):
        writer.write(f"line {i}")  # never blocks although the stream does
    gate.set()
    writer.close()
    text = stream.getvalue()
    assert "line 99" in text and "dropped while output was stalled" in text
