"""The front proxy against an instrumented Anthropic-format upstream (`litellm.url` mode)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest

from backend.bridge import Bridge, StartupError
from backend.config import ConfigError, load_config
from backend.events import RequestFinished
from tests.support.front import SECRET, messages_body, run_with_bridge, write_config
from tests.support.llama import free_port
from tests.support.upstreams import AnthropicUpstream


def test_probes_and_telemetry_are_answered_locally(tmp_path):
    async def body(bridge, up, client):
        assert (await client.head("/")).status_code == 200
        assert (await client.head("/api/hello")).status_code == 200
        assert (await client.get("/api/hello")).status_code == 200
        for path in ("/api/event_logging/batch", "/api/event_logging/v2/batch"):
            resp = await client.post(path, json={"events": [1, 2]})
            assert resp.status_code == 200 and resp.json() == {}
        assert up.seen == []
        status = (await client.get("/ccbridge/api/status")).json()
        assert status["services"][0]["probes_answered"] == 5

    run_with_bridge(tmp_path, body)


def test_model_rewritten_by_alias_and_max_tokens_capped(tmp_path):
    async def body(bridge, up, client):
        for asked, expected in (("claude-opus-4-8", "qwen"), ("claude-haiku-4-5", "small"),
                                ("claude-opus-4-8[1m]", "big"), ("claude-opus-4-81", "qwen")):
            resp = await client.post("/v1/messages?beta=true", json=messages_body(asked))
            assert resp.status_code == 200, resp.text
            sent = up.seen[-1].json()
            assert sent["model"] == expected, asked
            assert sent["max_tokens"] == 1000
            assert list(sent) == ["model", "max_tokens", "stream", "messages"]
            assert sent["messages"][0] == {"role": "system", "content": "env"}
            assert up.seen[-1].query == "beta=true"
        resp = await client.post("/v1/messages/count_tokens", json={"model": "claude-haiku-4-5", "messages": []})
        assert resp.json() == {"input_tokens": 42}
        assert up.seen[-1].json()["model"] == "small"

    run_with_bridge(tmp_path, body)


def test_unknown_model_gets_anthropic_404_naming_it(tmp_path):
    async def body(bridge, up, client):
        resp = await client.post("/v1/messages", json=messages_body("gpt-4o"))
        assert resp.status_code == 404
        err = resp.json()
        assert err["type"] == "error" and err["error"]["type"] == "not_found_error"
        assert "gpt-4o" in err["error"]["message"] and "aliases" in err["error"]["message"]
        assert up.seen == []
        status = (await client.get("/ccbridge/api/status")).json()
        assert [u["model"] for u in status["unknown_models"]] == ["gpt-4o"]

    run_with_bridge(tmp_path, body, aliases={"claude-*": "local"})


def test_stream_is_forwarded_event_by_event_and_recorded(tmp_path):
    up = AnthropicUpstream(delay=0.15)

    async def body(bridge, up, client):
        arrivals: list[tuple[float, bytes]] = []
        headers = {"x-claude-code-session-id": "sess-1234-abcd", "user-agent": "claude-cli/2.1.197 (external, sdk-cli)"}
        async with client.stream("POST", "/v1/messages", json=messages_body(stream=True), headers=headers) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            async for chunk in resp.aiter_raw():
                arrivals.append((time.monotonic(), chunk))
        data = b"".join(c for _, c in arrivals)
        assert data.count(b"event: content_block_delta") == 4
        # the first event reached the client long before the last one was written
        first_delta = next(t for t, c in arrivals if b"content_block_delta" in c)
        assert arrivals[-1][0] - first_delta > 0.3
        await asyncio.to_thread(bridge.history.flush)
        rec = (await client.get("/ccbridge/api/requests?limit=1")).json()["requests"][0]
        assert rec["requested_model"] == "claude-opus-4-8"
        assert rec["routed_backend"] == "local" and rec["routed_model"] == "qwen"
        assert rec["alias_rule"] == "*"
        assert rec["stream"] is True and rec["status"] == 200
        assert rec["input_tokens"] == 11 and rec["output_tokens"] == 4
        assert rec["stop_reason"] == "end_turn"
        assert rec["ttft_ms"] is not None and rec["ttft_ms"] < rec["duration_ms"]
        assert rec["session_id"] == "sess-1234-abcd"
        assert rec["client_version"] == "claude-cli/2.1.197"

    run_with_bridge(tmp_path, body, upstream=up)


def test_concurrent_streams_do_not_wait_on_each_other(tmp_path):
    up = AnthropicUpstream(delay=0.25)  # each stream lasts ~1.5 s

    async def body(bridge, up, client):
        async def one() -> float:
            t0 = time.monotonic()
            resp = await client.post("/v1/messages", json=messages_body(stream=True))
            assert resp.status_code == 200 and b"message_stop" in resp.content
            return time.monotonic() - t0

        t0 = time.monotonic()
        durations = await asyncio.gather(*(one() for _ in range(10)))
        wall = time.monotonic() - t0
        # serialised, 10 streams would take 10x one stream
        assert wall < 3 * max(durations)

    run_with_bridge(tmp_path, body, upstream=up)


def test_other_paths_forwarded_with_method_query_and_headers(tmp_path):
    async def body(bridge, up, client):
        resp = await client.get("/v1/models?limit=5", headers={"x-api-key": "client-key", "x-custom": "1"})
        assert resp.status_code == 200
        seen = up.seen[-1]
        assert seen.method == "GET" and seen.path == "/v1/models" and seen.query == "limit=5"
        assert seen.headers["x-custom"] == "1"
        assert seen.headers["x-api-key"] == "client-key"  # no proxy key: passed through to litellm.url
        assert "x-ccbridge-id" in seen.headers
        assert len(resp.headers.get_list("date")) == 1
        assert len(resp.headers.get_list("server")) <= 1
        resp = await client.delete("/v1/files/abc")
        assert up.seen[-1].method == "DELETE"

    run_with_bridge(tmp_path, body)


def test_a_clients_expect_100_continue_is_answered_here_and_not_forwarded(tmp_path):
    """curl sends `Expect: 100-continue` with a body over 1 MB (a replayed long session): ccbridge reads the
    whole body first, so the upstream must not be asked to say 100 Continue again."""
    async def body(bridge, up, client):
        resp = await client.post("/v1/messages", json=messages_body(), headers={"expect": "100-continue"})
        assert resp.status_code == 200, resp.text
        assert "expect" not in {k.lower() for k in up.seen[-1].headers}

    run_with_bridge(tmp_path, body)


def test_api_key_required_and_never_forwarded_or_stored(tmp_path):
    async def body(bridge, up, client):
        assert (await client.post("/v1/messages", json=messages_body())).status_code == 401
        assert (await client.get("/ccbridge/api/status")).status_code == 401
        assert (await client.head("/")).status_code == 200  # probes need no key
        ok = await client.post("/v1/messages", json=messages_body(), headers={"x-api-key": SECRET})
        assert ok.status_code == 200
        ok = await client.post("/v1/messages", json=messages_body(), headers={"authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200
        for seen in up.seen:
            assert SECRET not in json.dumps(seen.headers)
            assert seen.headers["x-api-key"] == "upstream-key"
        await asyncio.to_thread(bridge.history.flush)
        api = (await client.get("/ccbridge/api/requests", headers={"x-api-key": SECRET})).text
        status = (await client.get("/ccbridge/api/status", headers={"x-api-key": SECRET})).text
        assert SECRET not in api and SECRET not in status
        db = Path(bridge.history.path).read_bytes() if bridge.history.path else b""
        assert db and SECRET.encode() not in db

    run_with_bridge(tmp_path, body, proxy={"api_key": SECRET},
                    litellm={"api_key": "upstream-key"})


def test_refuses_to_listen_beyond_loopback_without_key(tmp_path):
    path = write_config(tmp_path, "http://127.0.0.1:9")
    path.write_text(path.read_text().replace("host: 127.0.0.1", "host: 0.0.0.0"))
    with pytest.raises(ConfigError, match="api_key"):
        load_config(path)
    # a config built in code gets the same refusal from the bridge itself
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    exposed = dataclasses.replace(config, proxy=dataclasses.replace(config.proxy, host="0.0.0.0"))
    with pytest.raises(StartupError, match="api_key"):
        Bridge(exposed, run_dir=tmp_path / "run")


def test_upstream_down_answers_at_once_with_what_to_do(tmp_path):
    async def main() -> None:
        config = load_config(write_config(tmp_path, f"http://127.0.0.1:{free_port()}"))
        bridge = Bridge(config, run_dir=tmp_path / "run")
        await bridge.start()
        try:
            async with httpx.AsyncClient(base_url=bridge.proxy_url, timeout=10, trust_env=False) as client:
                resp = await client.post("/v1/messages", json=messages_body())
                assert resp.status_code == 503
                msg = resp.json()["error"]["message"]
                assert "litellm.url" in msg and "cannot reach" in msg
        finally:
            await bridge.stop()

    asyncio.run(main())


def test_bad_bodies_get_clear_4xx(tmp_path):
    async def body(bridge, up, client):
        resp = await client.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
        resp = await client.post("/v1/messages", json=[1, 2])
        assert resp.status_code == 400
        resp = await client.post("/v1/messages", json={"messages": []})
        assert resp.status_code == 400 and "model" in resp.json()["error"]["message"]
        resp = await client.post("/v1/messages", content=b"x" * 200_000)
        assert resp.status_code == 413 and "max_body_mb" in resp.json()["error"]["message"]
        assert up.seen == []

    run_with_bridge(tmp_path, body, proxy={"max_body_mb": 0.1})


def test_client_hang_up_reaches_upstream_and_is_recorded(tmp_path):
    up = AnthropicUpstream(hold=20)

    async def body(bridge, up, client):
        finished: list = []
        bridge.subscribe(lambda e: finished.append(e) if isinstance(e, RequestFinished) else None)
        task = asyncio.create_task(client.post("/v1/messages", json=messages_body()))
        for _ in range(100):
            if up.seen:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        t0 = time.monotonic()
        while not up.disconnects and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        assert up.disconnects == 1
        while not finished and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.01)
        rec = finished[0].record
        assert rec.client_hung_up is True and rec.status == 499

    run_with_bridge(tmp_path, body, upstream=up)


def test_alias_edit_through_api_applies_to_next_request_and_keeps_comments(tmp_path):
    async def body(bridge, up, client):
        await client.post("/v1/messages", json=messages_body("claude-sonnet-4-5"))
        assert up.seen[-1].json()["model"] == "qwen"
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [
            ["claude-sonnet-*", "local/sonnet-local"], ["claude-haiku-*", "local/small"], ["*", "local"]]})
        assert resp.status_code == 200, resp.text
        await client.post("/v1/messages", json=messages_body("claude-sonnet-4-5"))
        assert up.seen[-1].json()["model"] == "sonnet-local"
        text = bridge.config.source.read_text()
        assert "# my bridge" in text and "# quick model" in text
        bad = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "nowhere"]]})
        assert bad.status_code == 400 and "nowhere" in bad.json()["error"]["message"]
        assert "sonnet-local" in bridge.config.source.read_text()

    run_with_bridge(tmp_path, body)


def test_litellm_bare_error_line_becomes_an_anthropic_error_event():
    from backend.proxy.stream_fix import rewrite_bare_errors

    chunk = (b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n'
             b'data: {"error": {"message": "Connection reset by peer", "type": "internal_server_error"}}\n\n')
    out = rewrite_bare_errors(chunk)
    assert out.startswith(b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n')
    event = out.split(b"\n\n")[1]
    assert event.startswith(b"event: error\ndata: ")
    payload = json.loads(event.split(b"data: ", 1)[1])
    assert payload["type"] == "error" and "Connection reset by peer" in payload["error"]["message"]


def test_client_vanishing_mid_stream_closes_the_upstream_every_time(tmp_path):
    """Whichever way the hang-up surfaces (cancel or failed write), the upstream is closed."""
    up = AnthropicUpstream(delay=0.001, parts=100_000)

    async def body(bridge, up, client):
        finished: list = []
        bridge.subscribe(lambda e: finished.append(e.record) if isinstance(e, RequestFinished) else None)
        for i in range(1, 6):
            async with client.stream("POST", "/v1/messages", json=messages_body(stream=True)) as resp:
                got = 0
                async for chunk in resp.aiter_raw():
                    got += chunk.count(b"content_block_delta")
                    if got >= 20 * i:
                        break
            t0 = time.monotonic()
            while up.disconnects < i and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.005)
            assert up.disconnects == i, f"round {i}: upstream kept streaming after the client left"
            while len(finished) < i and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.005)
            assert finished[-1].client_hung_up is True and finished[-1].error is None

    run_with_bridge(tmp_path, body, upstream=up)


def test_bodies_orjson_refuses_take_the_slow_path_not_a_400(tmp_path):
    async def body(bridge, up, client):
        raw = (b'{"model":"claude-opus-4-8","max_tokens":10,"metadata":{"n":123456789012345678901234567890,'
               b'"x":NaN},"messages":[{"role":"user","content":"h\\u00e9llo \xc3\xa9"}]}')
        resp = await client.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
        assert resp.status_code == 200, resp.text
        sent = up.seen[-1].body
        assert b"123456789012345678901234567890" in sent and b"NaN" in sent
        assert json.loads(sent)["model"] == "qwen"
        assert json.loads(sent)["messages"][0]["content"] == "h\u00e9llo \u00e9"

    run_with_bridge(tmp_path, body)


BILLING = "x-anthropic-billing-header: cc_version=2.1.332.13c; cc_entrypoint=sdk-cli;"


def test_billing_line_is_removed_and_counted_nothing_else_changes(tmp_path):
    async def body(bridge, up, client):
        system = [{"type": "text", "text": BILLING},
                  {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
        resp = await client.post("/v1/messages", json=messages_body(system=system))
        assert resp.status_code == 200, resp.text
        sent = up.seen[-1].json()
        assert sent["system"] == system[1:]
        assert sent["messages"] == messages_body()["messages"]
        # a string system prompt loses only its first line; other text is never touched
        await client.post("/v1/messages", json=messages_body(system=f"{BILLING}\nrest"))
        assert up.seen[-1].json()["system"] == "rest"
        await client.post("/v1/messages", json=messages_body(system=f"keep {BILLING}"))
        assert up.seen[-1].json()["system"] == f"keep {BILLING}"
        await client.post("/v1/messages", json=messages_body(system=[{"type": "text", "text": BILLING}]))
        assert "system" not in up.seen[-1].json()
        status = (await client.get("/ccbridge/api/status")).json()
        assert status["services"][0]["billing_lines_removed"] == 3

    run_with_bridge(tmp_path, body)


def test_status_carries_the_env_lines_with_the_key_hidden(tmp_path):
    """The panel's env card shows what `ccbridge env` prints; serve computes it, never sending proxy.api_key."""
    from backend.claude_env import claude_settings, shell_lines

    async def body(bridge, up, client):
        status = (await client.get("/ccbridge/api/status", headers={"x-api-key": SECRET})).json()
        lines = status["claude_env"]
        assert lines == [line.replace(SECRET, "<proxy.api_key>")
                         for line in shell_lines(claude_settings(bridge.config, None), why=False)]
        assert any(line.startswith("export ANTHROPIC_AUTH_TOKEN=<proxy.api_key>") for line in lines)
        assert SECRET not in json.dumps(status)

    run_with_bridge(tmp_path, body, proxy={"api_key": SECRET})


def test_bodies_are_kept_as_sent_and_as_answered(tmp_path):
    """The detail view and "copy as curl" need the real request: kept as the client sent it (the
    billing line ccbridge removed before forwarding included), and the answer as the client got it."""
    async def body(bridge, up, client):
        system = [{"type": "text", "text": BILLING}, {"type": "text", "text": "You are Claude Code."}]
        sent = messages_body(stream=True, system=system)
        resp = await client.post("/v1/messages", json=sent)
        plain = await client.post("/v1/messages", json=messages_body())
        records = await bridge.recent(2)
        streamed, answered = (await bridge.bodies(records[1].id)), (await bridge.bodies(records[0].id))
        assert json.loads(streamed.request) == sent and BILLING.encode() in streamed.request
        assert streamed.response == resp.content and not streamed.cut
        assert answered.response == plain.content
        status = (await client.get(f"/ccbridge/api/requests/{records[1].id}/bodies")).json()
        assert json.loads(status["request"]) == sent and status["cut"] is False

    run_with_bridge(tmp_path, body)


def test_bodies_off_keeps_none(tmp_path):
    async def body(bridge, up, client):
        await client.post("/v1/messages", json=messages_body())
        record = (await bridge.recent(1))[0]
        assert await bridge.bodies(record.id) is None
        resp = await client.get(f"/ccbridge/api/requests/{record.id}/bodies")
        assert resp.status_code == 404 and "history.bodies" in resp.json()["error"]["message"]

    run_with_bridge(tmp_path, body, history={"bodies": False})
