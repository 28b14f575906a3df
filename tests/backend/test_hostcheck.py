"""Web pages are kept out: a foreign `Host` (DNS rebinding) or `Origin` (cross-site POST) is refused.

Against a real `Bridge` on loopback, with the requests a rebinding page and a
cross-site form would send; Claude Code's way (no Origin, loopback Host), the
panel's client and curl keep working.
"""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from backend.api.client import BridgeClient
from backend.config import ConfigError, load_config
from backend.control import ServiceNotFound
from backend.proxy.hostcheck import HostPolicy, refusal, split_host
from tests.support.front import messages_body, run_with_bridge, write_config

EVIL = "rebind.attacker.test"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_split_host_reads_names_ports_and_brackets():
    assert split_host("127.0.0.1:8082") == ("127.0.0.1", 8082)
    assert split_host("[::1]:8082") == ("::1", 8082)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("LocalHost.") == ("localhost", None)
    for bad in ("::1", "[::1", "[nothost]:1", "a b", "host:port", "host:0", "x/y", "", "u@host"):
        assert split_host(bad) is None, bad


def test_policy_allows_loopback_the_bound_address_and_configured_names():
    policy = HostPolicy.of("127.0.0.1")
    for ok in ("127.0.0.1", "127.0.0.1:8082", "localhost", "localhost:9999", "[::1]", "[::1]:8082",
               "127.0.0.2:8082", "[::ffff:127.0.0.1]:8082", None):
        assert policy.host_ok(ok), ok
    for bad in (EVIL, f"{EVIL}:8082", "localhost.attacker.test", "127.0.0.1.nip.io", "10.0.0.5:8082", "::1", ""):
        assert not policy.host_ok(bad), bad
    box = HostPolicy.of("192.168.1.5", ["GPUBox", "gpubox.lan."])
    assert box.host_ok("192.168.1.5:8082") and box.host_ok("gpubox:8082") and box.host_ok("GPUBOX.LAN")
    assert not box.host_ok("10.0.0.5") and not box.host_ok(EVIL)
    anywhere = HostPolicy.of("0.0.0.0", ["gpubox"])
    assert anywhere.host_ok("10.0.0.5:8082")  # an address cannot be rebound; a wildcard bind answers on all
    assert not anywhere.host_ok("0.0.0.0.attacker.test") and not anywhere.host_ok(EVIL)
    assert policy.origin_ok(None) and policy.origin_ok("http://localhost:3000") and policy.origin_ok("http://[::1]:8")
    for bad in ("null", "http://evil.example.com", f"http://{EVIL}:8082", "file://", "chrome-extension://abc"):
        assert not policy.origin_ok(bad), bad


def test_refusal_says_what_to_do():
    policy = HostPolicy.of("127.0.0.1")
    status, message = refusal(policy, "GET", "/ccbridge/api/status", {"host": f"{EVIL}:8082"}, "X.allowed") or (0, "")
    assert status == 403 and EVIL in message and "DNS rebinding" in message and "add it to X.allowed" in message
    status, message = refusal(policy, "POST", "/ccbridge/api/services/litellm/stop",
                              {"host": "127.0.0.1:8082", "origin": "http://evil.example.com",
                               "content-type": "application/json"}) or (0, "")
    assert status == 403 and "evil.example.com" in message and "no Origin header" in message
    status, message = refusal(policy, "POST", "/ccbridge/api/services/litellm/stop",
                              {"host": "127.0.0.1:8082", "content-type": "text/plain"}) or (0, "")
    assert status == 415 and "application/json" in message and "-H 'content-type: application/json'" in message
    assert refusal(policy, "POST", "/ccbridge/api/services/litellm/stop",
                   {"host": "127.0.0.1:8082", "content-type": "application/json; charset=utf-8"}) is None
    assert refusal(policy, "GET", "/ccbridge/api/status", {"origin": "http://evil.example.com"}) is None
    assert refusal(policy, "GET", "/ws", {"origin": "http://evil.example.com"}, origin_always=True) is not None


def test_a_foreign_host_gets_nothing_and_loopback_names_get_everything(tmp_path):
    async def body(bridge, up, client):
        port = _port(bridge.proxy_url)
        foreign = {"host": f"{EVIL}:{port}"}
        sent = await client.post("/v1/messages", json=messages_body(), headers={"anthropic-version": "2023-06-01"})
        assert sent.status_code == 200, sent.text
        rid = (await client.get("/ccbridge/api/requests")).json()["requests"][0]["id"]
        calls_before = len(up.seen)
        refused = [
            await client.get("/ccbridge/api/status", headers=foreign),
            await client.get(f"/ccbridge/api/requests/{rid}/bodies", headers=foreign),
            await client.get("/ccbridge/api/requests", headers=foreign),
            await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "local"]]}, headers=foreign),
            await client.post("/v1/messages", json=messages_body(), headers=foreign),
            await client.post("/v1/messages/count_tokens", json=messages_body(), headers=foreign),
            await client.get("/ccbridge/api/events", headers=foreign),
            await client.get("/metrics", headers=foreign),
            await client.head("/api/hello", headers=foreign),
        ]
        for resp in refused:
            assert resp.status_code == 403, (resp.request.url, resp.text)
        for resp in refused[:-1]:  # HEAD has no body
            err = resp.json()
            assert err["type"] == "error" and err["error"]["type"] == "permission_error"
            assert "proxy.allowed_hosts" in err["error"]["message"] and "Hello" not in resp.text
        assert len(up.seen) == calls_before  # no refused request reached the model
        assert [a.pattern for a in bridge.config.aliases] == ["claude-haiku-*", "claude-opus-4-8[1m]", "*"]
        for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"localhost:{port}", "[::1]", f"[::1]:{port}"):
            resp = await client.get(f"/ccbridge/api/requests/{rid}/bodies", headers={"host": host})
            assert resp.status_code == 200 and "Hello" in resp.text, (host, resp.text)
            assert (await client.get("/metrics", headers={"host": host})).status_code == 200
        resp = await client.post("/v1/messages", json=messages_body(), headers={"host": f"localhost:{port}"})
        assert resp.status_code == 200, resp.text

    run_with_bridge(tmp_path, body)


def test_a_cross_site_post_cannot_change_anything(tmp_path):
    async def body(bridge, up, client):
        port = _port(bridge.proxy_url)
        # What a form on evil.example.com sends without a preflight: text/plain, its Origin.
        page = {"origin": "http://evil.example.com", "content-type": "text/plain"}
        for path in ("/ccbridge/api/services/litellm/stop", "/ccbridge/api/backends/local/swa-full"):
            resp = await client.post(path, content=b"{}", headers=page)
            assert resp.status_code == 403 and "evil.example.com" in resp.json()["error"]["message"], resp.text
        resp = await client.put("/ccbridge/api/aliases", content=b'{"aliases": [["*", "local"]]}', headers=page)
        assert resp.status_code == 403
        calls = len(up.seen)
        resp = await client.post("/v1/messages", content=messages_body().__repr__().encode(), headers=page)
        assert resp.status_code == 403 and len(up.seen) == calls
        # even with a JSON type (a preflight the browser would send first, which ccbridge never approves)
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "local"]]},
                                headers={"origin": "null"})
        assert resp.status_code == 403
        assert [a.pattern for a in bridge.config.aliases] == ["claude-haiku-*", "claude-opus-4-8[1m]", "*"]
        # no Origin but not JSON: what a browser that sent no Origin could still do
        resp = await client.put("/ccbridge/api/aliases", content=b'{"aliases": [["*", "local"]]}',
                                headers={"content-type": "text/plain"})
        assert resp.status_code == 415 and "application/json" in resp.json()["error"]["message"]
        assert len(bridge.config.aliases) == 3
        # a page of the user's own on a loopback name may
        resp = await client.put("/ccbridge/api/aliases", json={"aliases": [["*", "local"]]},
                                headers={"origin": f"http://localhost:{port}"})
        assert resp.status_code == 200, resp.text
        assert [a.pattern for a in bridge.config.aliases] == ["*"]

    run_with_bridge(tmp_path, body)


def test_the_panel_client_curl_and_the_sdk_keep_working(tmp_path):
    anthropic = pytest.importorskip("anthropic")

    async def body(bridge, up, client):
        panel = BridgeClient(bridge.proxy_url)
        try:
            assert (await panel.status())["services"]
            assert await panel.save_aliases([("claude-*", "local"), ("*", "local")])
            with pytest.raises(ServiceNotFound):  # past the gate: litellm.url mode manages no LiteLLM
                await panel.restart_service("litellm")
            with pytest.raises(ServiceNotFound):
                await panel.stop_service("litellm")
        finally:
            await panel.aclose()
        sdk = anthropic.AsyncAnthropic(base_url=bridge.proxy_url, api_key="k", max_retries=0, timeout=30)
        message = await sdk.messages.create(model="claude-opus-4-8", max_tokens=100,
                                            messages=[{"role": "user", "content": "Hello"}])
        assert message.content
        await sdk.close()
        out = await asyncio.to_thread(subprocess.run, [
            "curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
            f"{bridge.proxy_url}/v1/messages", "-H", "content-type: application/json",
            "-d", '{"model": "claude-opus-4-8", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}'],
            capture_output=True, text=True, timeout=30)
        assert out.stdout == "200", out

    run_with_bridge(tmp_path, body)


def test_allowed_hosts_lets_a_configured_name_in(tmp_path):
    async def body(bridge, up, client):
        assert bridge.config.proxy.allowed_hosts == ("gpubox", "gpubox.lan")
        port = _port(bridge.proxy_url)
        assert (await client.get("/ccbridge/api/status", headers={"host": f"GPUBox:{port}"})).status_code == 200
        assert (await client.get("/ccbridge/api/status", headers={"host": f"{EVIL}:{port}"})).status_code == 403

    run_with_bridge(tmp_path, body, proxy={"allowed_hosts": ["gpubox", "gpubox.lan"]})


@pytest.mark.parametrize("value", ["gpubox", ["http://gpubox"], ["gpubox:8082"], [1], ["gpu box"]])
def test_allowed_hosts_refuses_what_is_not_a_host_name(tmp_path, value):
    path = write_config(tmp_path, "http://127.0.0.1:9", proxy={"allowed_hosts": value})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == "proxy.allowed_hosts"
