"""Broken upstream streams (cut anywhere, garbage, errors at chunk edges, connections cut)
through the front proxy and the backend leg: never a bare 500, never a record without a status."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.bridge import Bridge
from backend.config import load_config
from backend.config.model import BackendConfig
from backend.events import RequestFinished
from backend.proxy.leg import BackendLeg
from backend.proxy.models import ModelResolver
from backend.proxy.pairing import PairRegistry
from backend.proxy.slots import SlotPinner
from tests.support.front import messages_body, write_config
from tests.support.loop import LoopThread
from tests.support.upstreams import Script, ScriptedUpstream, anthropic_events

EXAMPLES = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECRET = "leg-secret-for-broken-streams"
ANTHROPIC_BARE = b'data: {"error": {"message": "boom", "type": "internal_server_error"}}\n\n'


@pytest.fixture(scope="module")
def front(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broken-front")
    loop = LoopThread()
    up = ScriptedUpstream()
    url = loop.run(up.start())
    records: dict[str, Any] = {}

    async def start() -> Bridge:
        bridge = Bridge(load_config(write_config(tmp, url, proxy={"upstream_timeout": 2})), run_dir=tmp / "r")
        bridge.subscribe(lambda e: records.__setitem__(e.record.id, e.record)
                         if isinstance(e, RequestFinished) else None)
        await bridge.start()
        return bridge

    bridge = loop.run(start())
    yield bridge.proxy_url, up, records
    loop.run(bridge.stop())
    loop.run(up.stop())
    loop.close()


@pytest.fixture(scope="module")
def leg():
    loop = LoopThread()
    up = ScriptedUpstream()
    url = loop.run(up.start())

    async def start() -> tuple[web.ServerRunner, ClientSession, str]:
        session = ClientSession()
        backends = {"local": BackendConfig("local", f"{url}/v1", model="m")}
        handler = BackendLeg(backends=lambda: backends, secret=SECRET, registry=PairRegistry(), session=session,
                             resolver=ModelResolver(session), pinner=SlotPinner(session))
        runner = web.ServerRunner(web.Server(handler.handle, handler_cancellation=True))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, session, f"http://127.0.0.1:{runner.addresses[0][1]}/leg/local"

    runner, session, leg_url = loop.run(start())
    yield leg_url, up
    loop.run(runner.cleanup())
    loop.run(session.close())
    loop.run(up.stop())
    loop.close()


def _openai_stream() -> bytes:
    chunks = [{"id": "c", "choices": [{"index": 0, "delta": {"content": f"t{i}"}}]} for i in range(4)]
    chunks.append({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


@st.composite
def broken(draw, whole: bytes, bare: bytes) -> tuple[Script, bool]:
    """A stream cut somewhere (or not), maybe with garbage or a bare error line, split anywhere.
    Returns the script and whether the stream reaching the reader is complete and clean."""
    data = whole
    clean = True
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data) - 1))
        data, clean = data[:cut], False
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=40)) + data[at:]
        clean = False
    if draw(st.booleans()):
        events = data.split(b"\n\n")
        at = draw(st.integers(0, len(events)))
        data = b"\n\n".join(events[:at] + [bare.rstrip(b"\n")] + events[at:])
        clean = False
    points = sorted(set(draw(st.lists(st.integers(0, max(len(data), 1)), max_size=6))))
    writes = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if data[a:b]]
    end = draw(st.sampled_from(["eof", "abort"]))
    return Script(writes=writes, end=end), clean and end == "eof"


def _data_type(block: bytes) -> str | None:
    """The event's kind as an SSE client reads it: its `event:` name, else its data's `type`."""
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                return json.loads(line[5:]).get("type")
            except (ValueError, AttributeError):
                return None
    return None


def _record(records: dict, seen_before: set) -> Any:
    for _ in range(200):
        new = [r for k, r in records.items() if k not in seen_before]
        if new:
            return new[0]
        threading.Event().wait(0.01)
    raise AssertionError("the request left no record")


@EXAMPLES
@given(case=broken(b"".join(anthropic_events(["a", "b", "c"])), ANTHROPIC_BARE), stream=st.booleans())
def test_broken_anthropic_streams_through_the_front(front, case, stream):
    url, up, records = front
    script, clean = case
    before = set(records)
    key = up.add(script)
    resp = httpx.post(f"{url}/v1/messages", json=messages_body(stream=stream), headers={"x-script": key},
                      timeout=30, trust_env=False)
    assert resp.status_code != 500, resp.text
    record = _record(records, before)
    assert record.status is not None
    if resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream"):
        assert b'\ndata: {"error"' not in b"\n" + resp.content  # every bare error was rewritten
        last = resp.content.strip().split(b"\n\n")[-1].strip()
        kind = _data_type(last)  # what a client reads from the last event (garbage in its lines aside)
        assert kind in ("message_stop", "error"), resp.content[-300:]
        if kind == "error":
            assert record.error
        if clean:
            assert last.startswith(b"event: message_stop") and record.error is None
    else:
        body = resp.json()
        assert body["type"] == "error" and body["error"]["message"]
        assert record.error


@EXAMPLES
@given(case=broken(b"".join(anthropic_events(["x"])), ANTHROPIC_BARE))
def test_broken_plain_json_answers_through_the_front(front, case):
    url, up, records = front
    script, clean = case
    script.content_type = "application/json"
    script.writes = [b'{"type": "message", "content": [{"type": "text", "text": "hi"}], "usage": {}}'[:len(w)]
                     for w in script.writes[:1]] or [b""]
    before = set(records)
    key = up.add(script)
    resp = httpx.post(f"{url}/v1/messages", json=messages_body(), headers={"x-script": key}, timeout=30,
                      trust_env=False)
    assert resp.status_code in (200, 502), resp.text
    assert resp.headers["content-type"].startswith("application/json")
    record = _record(records, before)
    assert record.status == resp.status_code
    if resp.status_code == 502:
        assert resp.json()["type"] == "error" and record.error


@EXAMPLES
@given(case=broken(_openai_stream(), b'data: {"error": {"message": "boom", "code": 500}}\n\n'),
       stream=st.booleans())
def test_broken_openai_streams_through_the_leg(leg, case, stream):
    leg_url, up = leg
    script, clean = case
    key = up.add(script)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    resp = httpx.post(f"{leg_url}/chat/completions", json=body, timeout=30, trust_env=False,
                      headers={"authorization": f"Bearer {SECRET}", "x-script": key})
    assert resp.status_code in (200, 502), resp.text
    if not stream:  # assembled from the stream the leg asked for
        out = resp.json()
        if resp.status_code == 200:
            assert out["object"] == "chat.completion" and out["choices"]
        else:
            assert out["error"]["message"]
        if clean:
            assert resp.status_code == 200 and out["choices"][0]["message"]["content"] == "t0t1t2t3"
    else:
        assert resp.status_code == 200
        if script.end == "abort":
            assert resp.content.rstrip().endswith(b"}}"), resp.content[-200:]
            assert b'data: {"error"' in resp.content.strip().split(b"\n\n")[-1]
