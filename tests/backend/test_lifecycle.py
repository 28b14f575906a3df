"""Every way a request ends is a clear answer and a record with a status (front proxy, instrumented upstreams).

The real-chain twins (llama-server's slot freed for each way of ending) are in tests/e2e/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from aiohttp import web

from backend.bridge import Bridge
from backend.config import load_config
from backend.events import RequestFinished
from tests.support.front import messages_body, run_scripted, run_with_bridge, write_config
from tests.support.upstreams import AnthropicUpstream, Script, anthropic_events

BARE = b'data: {"error": {"message": "Connection reset by peer", "type": "internal_server_error"}}\n\n'


async def _last(records, n=1):
    for _ in range(100):
        if len(records) >= n:
            return records[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("no record")


def test_a_bare_error_line_in_its_own_write_becomes_an_error_event(tmp_path):
    async def body(up, client, records):
        events = anthropic_events(["a", "b"])
        key = up.add(Script(writes=[*events[:3], BARE]))  # LiteLLM writes the bare line on its own
        resp = await client.post("/v1/messages", json=messages_body(stream=True), headers={"x-script": key})
        assert resp.status_code == 200
        assert b'data: {"error"' not in resp.content
        assert b"event: error" in resp.content and b"Connection reset by peer" in resp.content
        record = await _last(records)
        assert record.status == 200 and "Connection reset by peer" in record.error

    run_scripted(tmp_path, body)


def test_a_bare_error_line_split_across_writes_is_still_rewritten(tmp_path):
    async def body(up, client, records):
        events = anthropic_events(["a"])
        key = up.add(Script(writes=[events[0] + BARE[:9], BARE[9:30], BARE[30:]]))
        resp = await client.post("/v1/messages", json=messages_body(stream=True), headers={"x-script": key})
        assert b'data: {"error"' not in resp.content and b"event: error" in resp.content
        assert "Connection reset" in (await _last(records)).error

    run_scripted(tmp_path, body)


def test_a_stream_that_ends_without_message_stop_gets_an_error_event(tmp_path):
    async def body(up, client, records):
        key = up.add(Script(writes=anthropic_events(["a", "b"])[:4]))
        resp = await client.post("/v1/messages", json=messages_body(stream=True), headers={"x-script": key})
        assert resp.content.rstrip().endswith(b"}")
        last = resp.content.strip().split(b"\n\n")[-1]
        assert last.startswith(b"event: error") and b"before message_stop" in last
        record = await _last(records)
        assert record.status == 200 and "before message_stop" in record.error

    run_scripted(tmp_path, body)


def test_a_stream_cut_mid_event_ends_with_an_error_event_not_half_an_event(tmp_path):
    async def body(up, client, records):
        events = anthropic_events(["a", "b"])
        key = up.add(Script(writes=[*events[:3], events[3][:20]], end="abort"))
        resp = await client.post("/v1/messages", json=messages_body(stream=True), headers={"x-script": key})
        blocks = resp.content.strip().split(b"\n\n")
        assert blocks[-1].startswith(b"event: error") and b"broke off" in blocks[-1]
        # the half event was never sent: only the whole first delta is there (event line + type field)
        assert resp.content.count(b"content_block_delta") == 2
        for block in blocks:
            json.loads(block.split(b"data: ", 1)[1])  # every event the client got is whole
        record = await _last(records)
        assert record.status == 200 and "broke off" in record.error

    run_scripted(tmp_path, body)


def test_a_plain_answer_cut_short_is_a_502_anthropic_error_not_a_bare_500(tmp_path):
    async def body(up, client, records):
        whole = b'{"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "hello"}]}'
        key = up.add(Script(writes=[whole[:30]], content_type="application/json", end="abort"))
        resp = await client.post("/v1/messages", json=messages_body(), headers={"x-script": key})
        assert resp.status_code == 502, resp.text
        error = resp.json()
        assert error["type"] == "error" and "broke off" in error["error"]["message"]
        record = await _last(records)
        assert record.status == 502 and "broke off" in record.error

    run_scripted(tmp_path, body)


def test_ccbridge_timeout_answers_504_and_closes_the_upstream(tmp_path):
    async def body(up, client, records):
        key = up.add(Script(writes=[], content_type="application/json", end="hang"))
        # the script sends headers at once, then hangs in the body: the read times out
        resp = await client.post("/v1/messages", json=messages_body(), headers={"x-script": key})
        assert resp.status_code == 504, resp.text
        assert "proxy.upstream_timeout" in resp.json()["error"]["message"]
        record = await _last(records)
        assert record.status == 504 and "upstream_timeout" in record.error
        for _ in range(100):
            if up.disconnects:
                break
            await asyncio.sleep(0.02)
        assert up.disconnects == 1  # the upstream saw ccbridge give up

    run_scripted(tmp_path, body, proxy={"upstream_timeout": 0.5})


def test_stopping_ccbridge_ends_streams_in_flight_and_records_them(tmp_path):
    async def main() -> None:
        up = AnthropicUpstream(delay=0.2, parts=200)
        url = await up.start()
        bridge = Bridge(load_config(write_config(tmp_path, url)), run_dir=tmp_path / "run")
        records = []
        bridge.subscribe(lambda e: records.append(e.record) if isinstance(e, RequestFinished) else None)
        await bridge.start()
        async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=10, trust_env=False) as client:
            async with client.stream("POST", "/v1/messages", json=messages_body(stream=True)) as resp:
                got = b""
                stopping = None
                async for chunk in resp.aiter_bytes():  # the stream ends cleanly, with an error event
                    got += chunk
                    if stopping is None:
                        stopping = asyncio.create_task(bridge.stop())
                await stopping
        last = got.strip().split(b"\n\n")[-1]
        assert last.startswith(b"event: error") and b"ccbridge stopped" in last
        assert up.disconnects == 1
        assert len(records) == 1 and records[0].status == 200
        assert "ccbridge stopped" in records[0].error and not records[0].client_hung_up
        await up.stop()

    asyncio.run(main())


def test_native_plain_request_is_streamed_from_the_backend_and_assembled(tmp_path):
    async def body(bridge, up, client):
        resp = await client.post("/v1/messages", json=messages_body())
        assert resp.status_code == 200, resp.text
        assert up.seen[-1].json()["stream"] is True  # so a hang-up reaches llama-server
        out = resp.json()
        assert out["type"] == "message" and out["content"] == [{"type": "text", "text": "Hello world"}]
        assert out["stop_reason"] == "end_turn" and out["usage"]["output_tokens"] == 4

    run_with_bridge(tmp_path, body, backend={"route": "native"})


class SlotServer(AnthropicUpstream):
    """An Anthropic upstream that reports two llama-server slots."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/props":
            return web.json_response({"total_slots": 2})
        return await super().handle(request)


MAIN_SYSTEM = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.a42; cc_entrypoint=cli;"},
               {"type": "text", "text": "You are a Claude agent."},
               {"type": "text", "text": "You are an agent working with the user toward their goals."}]
SUB_SYSTEM = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.440; cc_entrypoint=cli; "
                                       "cc_is_subagent=true;"},
              {"type": "text", "text": "You are a Claude agent."},
              {"type": "text", "text": "You are an agent for Claude Code."}]


def test_native_route_sends_no_slot_and_marks_subagents(tmp_path):
    """llama-server's /v1/messages drops `id_slot`, so the native route never pins (even with pin_slots
    on); the record says which request came from a subagent (its billing line, removed, said so)."""
    async def body(bridge, up, client):
        headers = {"x-claude-code-session-id": "s1"}
        for system in (MAIN_SYSTEM, SUB_SYSTEM, MAIN_SYSTEM):
            resp = await client.post("/v1/messages", json=messages_body(system=system), headers=headers)
            assert resp.status_code == 200
        sent = [s.json() for s in up.seen if s.path == "/v1/messages"]
        assert all("id_slot" not in b for b in sent)
        assert all(not b["system"][0]["text"].startswith("x-anthropic-billing-header") for b in sent)
        records = await bridge.recent(3)
        assert [r.subagent for r in reversed(records)] == [False, True, False]

    run_with_bridge(tmp_path, body, upstream=SlotServer(),
                    backend={"route": "native", "pin_slots": True})
