"""Garbage in: the proxy answers a clear 4xx (Anthropic format where it answers at all) and stays up.

Property-based (hypothesis). The bridge runs on its own thread (BridgeThread) in
front of the zero-latency backend process from bench/, so each example is a
real HTTP exchange. Counts of what was tried are printed (run with -s).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backend.bridge
import backend.proxy.body
from backend.config import load_config
from tests.support.bridge_thread import BridgeThread
from tests.support.front import write_config
from tests.support.llama import free_port
from tests.support.serve import REPO

TRIED: Counter[str] = Counter()
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    port = free_port()
    backend_proc = subprocess.Popen([sys.executable, "-m", "bench.zero_backend", str(port)], cwd=REPO,
                                    stdout=subprocess.PIPE)
    assert backend_proc.stdout.readline().strip() == b"ready"
    path = write_config(tmp, f"http://127.0.0.1:{port}", proxy={"max_body_mb": 0.05},
                        aliases={"claude-*": "local"})
    runner = BridgeThread(load_config(path), run_dir=tmp / "run")
    runner.start()
    yield runner
    runner.stop()
    backend_proc.terminate()
    backend_proc.wait(10)
    print("\nbad inputs tried:", dict(TRIED), "total", sum(TRIED.values()))


def assert_still_up(runner: BridgeThread) -> None:
    ok = httpx.post(f"{runner.proxy_url}/v1/messages", timeout=10, trust_env=False,
                    json={"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert ok.status_code == 200, ok.text


def assert_anthropic_error(resp: httpx.Response) -> None:
    body = resp.json()
    assert body["type"] == "error" and body["error"]["message"], body
    assert body["error"]["type"] in {"invalid_request_error", "not_found_error", "request_too_large",
                                     "timeout_error", "authentication_error", "permission_error"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.binary(max_size=3000),  # anything, invalid UTF-8 included
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"model": json_values | st.text(max_size=40), "max_tokens": json_values,
                                        "messages": json_values, "stream": json_values}).map(
        lambda d: json.dumps(d).encode()),
    st.binary(min_size=1, max_size=200).map(lambda b: b'{"model": "claude-x", "messages": "' + b + b'"}'),
    st.integers(60_000, 200_000).map(lambda n: b'{"model":"claude-x","pad":"' + b"a" * n + b'"}'),
)
content_types = st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x",
                                 "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"])


@EXAMPLES
@given(body=bodies, content_type=content_types,
       path=st.sampled_from(["/v1/messages", "/v1/messages?beta=true", "/v1/messages/count_tokens"]))
def test_garbage_bodies_get_a_clear_4xx(proxy, body, content_type, path):
    TRIED["bodies"] += 1
    headers = {"content-type": content_type} if content_type else {}
    resp = httpx.post(f"{proxy.proxy_url}{path}", content=body, headers=headers, timeout=10, trust_env=False)
    if resp.status_code == 200:  # it happened to be a valid request
        return
    assert resp.status_code in (400, 404, 413), resp.text
    assert_anthropic_error(resp)


header_names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
                       min_size=1, max_size=40)
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200) | st.integers(
    8_000, 40_000).map(lambda n: "v" * n)


@EXAMPLES
@given(headers=st.dictionaries(header_names, header_values, max_size=6),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#?"),
                    max_size=60))
def test_absurd_headers_methods_and_paths_never_break_the_proxy(proxy, headers, method, path):
    TRIED["headers/paths"] += 1
    try:
        resp = httpx.request(method, f"{proxy.proxy_url}/{path}", headers=headers, timeout=10, trust_env=False)
    except httpx.RemoteProtocolError:
        return  # aiohttp's HTTP parser refused it and closed the connection: fine
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself would not send it
    sent_path = resp.request.url.path  # as httpx sent it (dot segments resolved)
    shown = (resp.status_code, resp.text[:300], method, sent_path, headers.keys())
    assert resp.status_code < 500, shown  # ccbridge's own failure would be a 5xx: none, whatever came in
    if any(len(v) > 8190 for v in headers.values()):
        # aiohttp's HTTP parser refuses a header over its 8190-byte field limit before ccbridge sees it
        assert resp.status_code in (400, 431) or resp.status_code < 300, shown
        return
    names = {n.lower() for n in headers}
    if names & {"host", "origin", "x-api-key", "authorization", "content-length", "transfer-encoding",
                "content-type", "expect", "connection", "upgrade", "te", "trailer", "keep-alive"}:
        assert resp.status_code < 500, shown  # headers that change what the exchange means: only no 5xx
        return
    if resp.status_code >= 400:
        assert_anthropic_error(resp)  # an error ccbridge gave itself: Anthropic-shaped, says what is wrong
        return
    local = (sent_path in ("/", "/api/hello", "/metrics") or sent_path.startswith(("/api/event_logging/", "/ccbridge/"))
             or sent_path in ("/v1/messages", "/v1/messages/count_tokens"))
    if not local:  # passed through: exactly what the backend answers every other path with
        assert (resp.status_code, resp.content) == (200, b"{}"), shown


def test_after_all_that_the_proxy_still_serves(proxy):
    assert_still_up(proxy)


def test_raw_garbage_on_the_socket(proxy):
    port = int(proxy.proxy_url.rsplit(":", 1)[1])
    for garbage in (b"GARBAGE\r\n\r\n", b"\x00\xff" * 100 + b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                    b"POST /v1/messages HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
        TRIED["raw"] += 1
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(garbage)
            reply = sock.recv(200)
            assert re.match(rb"HTTP/1\.[01] 4\d\d ", reply) or reply == b"", reply
    assert_still_up(proxy)


def test_slow_loris_is_closed_and_others_are_served(tmp_path, monkeypatch):
    monkeypatch.setattr(backend.bridge, "HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(backend.proxy.body, "BODY_TIMEOUT", 1.0)
    port = free_port()
    backend_proc = subprocess.Popen([sys.executable, "-m", "bench.zero_backend", str(port)], cwd=REPO,
                                    stdout=subprocess.PIPE)
    assert backend_proc.stdout.readline().strip() == b"ready"
    runner = BridgeThread(load_config(write_config(tmp_path, f"http://127.0.0.1:{port}")), run_dir=tmp_path / "r")
    runner.start()
    try:
        proxy_port = int(runner.proxy_url.rsplit(":", 1)[1])
        loris = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
        loris.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        slow_body = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
        slow_body.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"mo")
        assert_still_up(runner)  # others are served meanwhile
        t0 = time.monotonic()
        assert loris.recv(100) == b""  # closed by the header deadline
        assert time.monotonic() - t0 < 5
        reply = slow_body.recv(2000)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"did not arrive" in reply
        loris.close()
        slow_body.close()
    finally:
        runner.stop()
        backend_proc.terminate()
        backend_proc.wait(10)
