"""`ccbridge web` in headless Chromium: the dashboard renders with live data from the real serve.

`ccbridge web --config X` starts `ccbridge serve` (no serve runs on the port
yet) and textual-serve; Chromium opens the page, which runs `ccbridge attach`
and streams the terminal to the browser. What the page received must show
the request sent before it opened, then one sent while it is open; stopping
`ccbridge web` stops the serve it started. Only loopback is visited.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from tests.support.browser import Browser, Page
from tests.support.config import config_text
from tests.support.llama import free_port
from tests.support.serve import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _send(url: str, model: str) -> int:
    return httpx.post(f"{url}/v1/messages", json={"model": model, "max_tokens": 16, "stream": True, "messages": [
        {"role": "user", "content": "hi"}]}, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        timeout=30, trust_env=False).status_code


def _wait(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_web_view_shows_the_dashboard_with_live_requests(tmp_path, upstream):
    proxy_port, web_port = free_port(), free_port()
    config = tmp_path / "ccbridge.yaml"
    config.write_text(config_text(proxy={"host": "127.0.0.1", "port": proxy_port}, litellm={"url": upstream.url}))
    proxy, page_url = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{web_port}/"
    log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "tui.launcher", "web", "--config", str(config), "--port",
                            str(web_port)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        _wait(lambda: web.poll() is None and _answers(page_url), 60, "the web view")
        assert "started ccbridge serve" in (tmp_path / "web.log").read_text()
        assert _send(proxy, "claude-opus-4-8") == 200
        with Browser() as browser:
            received = asyncio.run(_open(browser, page_url, proxy, tmp_path / "web.png"))
        assert "ready" in received and "TTFT" in received and "Home" in received
        assert "opus-4-8>local" in received and "haiku-4-5>local" in received
        assert (tmp_path / "web.png").stat().st_size > 10_000
        serve = next(p for p in psutil.Process(web.pid).children(recursive=True) if "serve" in p.cmdline())
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(30)
        log.close()
    _wait(lambda: not psutil.pid_exists(serve.pid) or serve.status() == psutil.STATUS_ZOMBIE, 30, "serve to stop")
    assert not _answers(f"{proxy}/ccbridge/api/status")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code in (200, 401)
    except httpx.HTTPError:
        return False


async def _open(browser: Browser, page_url: str, proxy: str, shot: Path) -> str:
    async with Page(browser) as page:
        await page.send("Page.navigate", url=page_url)

        def shown() -> str:
            return ANSI.sub("", page.received())

        await _until(lambda: "opus-4-8>local" in shown(), 60, "the request row in the browser")
        assert await asyncio.to_thread(_send, proxy, "claude-haiku-4-5") == 200  # while the page is open
        await _until(lambda: "haiku-4-5>local" in shown(), 30, "the live row in the browser")
        await asyncio.sleep(0.5)
        await page.screenshot(shot)
        return shown()


async def _until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)
