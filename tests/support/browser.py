"""Headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

For the web view's test: open a page, wait, read the websocket frames the
page received and take a screenshot. Only loopback addresses are visited;
background networking, sync and component updates are off.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio")


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("chromium is not installed: `apt-get install -y chromium` (scripts/test.sh does it)")


class Browser:
    """One headless Chromium with a fresh profile; `page()` opens a DevTools session on its first tab."""

    def __init__(self, size: tuple[int, int] = (1400, 900), flags: tuple[str, ...] = ()) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="ccbridge-chromium-"))
        self.size = size
        self.flags = flags  # e.g. --host-resolver-rules, to point a made-up name at 127.0.0.1
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __enter__(self) -> Browser:
        self.proc = subprocess.Popen(
            [chromium_binary(), *FLAGS, *self.flags, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--remote-debugging-address=127.0.0.1", f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """A DevTools session on one tab: navigate, collect websocket frames, evaluate, screenshot."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.frames: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}

    async def __aenter__(self) -> Page:
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{self.browser.port}/json/list") as resp:
            targets = await resp.json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
        self._ws = await self._http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Network.enable")
        await self.send("Page.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for msg in self._ws:
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Network.webSocketFrameReceived":
                response = data["params"]["response"]
                payload = response["payloadData"]
                if response.get("opcode") == 2:
                    payload = base64.b64decode(payload).decode("utf-8", "replace")
                self.frames.append(payload)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = future
        await self._ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def received(self) -> str:
        """Everything the page's websockets received, as one string (terminal output for a Textual page)."""
        return "".join(self.frames)

    async def goto(self, url: str) -> None:
        """Open `url` and wait until its page has loaded."""
        await self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        while (await self.evaluate("[document.readyState, location.href]")) != ["complete", url]:
            assert time.monotonic() < deadline, f"{url} did not load"
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return result.get("result", {}).get("value")

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(data["data"]))
        return path
