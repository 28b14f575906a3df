"""A real browser (headless Chromium) cannot use ccbridge from a web page: issue 20, item 0.

Chromium is told to resolve two made-up names to 127.0.0.1 (`--host-resolver-rules`),
which is what DNS rebinding achieves: `rebind.attacker.test` is a page whose name
now points at ccbridge itself, `evil.test` a page on another port of this machine
that posts to ccbridge cross-site (`no-cors`, `text/plain`: no preflight). Nothing
leaves the machine. The same requests without a page (Claude Code's way) work.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from tests.support.browser import Browser, Page
from tests.support.front import messages_body, run_with_bridge

pytestmark = pytest.mark.e2e

RULES = "--host-resolver-rules=MAP rebind.attacker.test 127.0.0.1, MAP evil.test 127.0.0.1"


async def _evil_site() -> tuple[web.AppRunner, int]:
    """The attacker's page, on its own port: it only has to be served; the test runs its script."""
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>cute cats</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def test_a_web_page_can_neither_read_nor_drive_ccbridge(tmp_path):
    async def body(bridge, up, client):
        port = int(bridge.proxy_url.rsplit(":", 1)[1])
        sent = await client.post("/v1/messages", json=messages_body())  # a kept body with the user's prompt
        assert sent.status_code == 200
        rid = (await client.get("/ccbridge/api/requests")).json()["requests"][0]["id"]
        calls = len(up.seen)
        evil, evil_port = await _evil_site()
        try:
            with Browser(flags=(RULES,)) as browser:
                async with Page(browser) as tab:
                    # DNS rebinding: the page's own origin is ccbridge; it reads what it likes (same-origin)
                    await tab.goto(f"http://rebind.attacker.test:{port}/")
                    read = await tab.evaluate(
                        "Promise.all(['/ccbridge/api/status', '/ccbridge/api/requests/" + rid + "/bodies', "
                        "'/ccbridge/api/events', '/metrics'].map(p => fetch(p).then(r => r.status)))")
                    assert read == [403, 403, 403, 403], read
                    refusal = await tab.evaluate("fetch('/ccbridge/api/status').then(r => r.json())")
                    assert "proxy.allowed_hosts" in refusal["error"]["message"]
                    answered = await tab.evaluate(
                        "fetch('/v1/messages', {method: 'POST', headers: {'content-type': 'application/json'}, "
                        f"body: {json.dumps(json.dumps(messages_body()))}}}).then(r => r.status)")
                    assert answered == 403
                    # a cross-site page: a simple POST, which the browser sends without asking first
                    await tab.goto(f"http://evil.test:{evil_port}/")
                    for path in ("/ccbridge/api/services/litellm/stop", "/ccbridge/api/aliases", "/v1/messages"):
                        await tab.evaluate(
                            f"fetch('http://127.0.0.1:{port}{path}', {{method: 'POST', mode: 'no-cors', "
                            "headers: {'content-type': 'text/plain'}, "
                            f"body: {json.dumps(json.dumps(messages_body()))}}}).then(() => 'sent', e => 'failed')")
        finally:
            await evil.cleanup()
        assert len(up.seen) == calls  # no page's request reached the model
        assert [a.pattern for a in bridge.config.aliases] == ["claude-haiku-*", "claude-opus-4-8[1m]", "*"]
        # and without a page, the same requests work (Claude Code, the SDK and curl send no Origin)
        assert (await client.get("/ccbridge/api/status")).status_code == 200
        assert (await client.post("/v1/messages", json=messages_body())).status_code == 200

    run_with_bridge(tmp_path, body)


def test_the_page_really_sent_its_requests(tmp_path):
    """The control for the test above: the same page script reaches an ordinary server on that port, so the
    refusals there are ccbridge's, not the browser declining to send."""
    seen: list[tuple[str, str, str | None]] = []

    async def main() -> None:
        async def record(request: web.Request) -> web.Response:
            seen.append((request.method, request.headers.get("host", ""), request.headers.get("origin")))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        evil, evil_port = await _evil_site()
        try:
            with Browser(flags=(RULES,)) as browser:
                async with Page(browser) as tab:
                    await tab.goto(f"http://evil.test:{evil_port}/")
                    result = await tab.evaluate(
                        f"fetch('http://127.0.0.1:{port}/v1/messages', {{method: 'POST', mode: 'no-cors', "
                        "headers: {'content-type': 'text/plain'}, body: '{}'}).then(() => 'sent', e => 'failed: ' + e)")
                    assert result == "sent", result
        finally:
            await evil.cleanup()
            await runner.cleanup()

    asyncio.run(main())
    assert seen and seen[0][0] == "POST", seen
    assert seen[0][2] is not None and seen[0][2].startswith("http://evil.test:"), seen  # the Origin it sent
