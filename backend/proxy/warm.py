"""Warm llama-server's prompt cache while it is idle, after it came up with nothing cached.

A llama-server that just started (first start, a restart whose slots were not restored, a
crash ccbridge healed, a server the user restarted) makes the next Claude Code turn read its
whole prompt: ~95 s for Claude Code's 11,585-token first turn on Qwen2.5-Coder 0.5B here.
ccbridge saw the last prompts: for each of the most recent prompt families (a main agent,
a subagent type) it keeps the body exactly as llama-server last got it (the leg's
/v1/chat/completions body on the LiteLLM route, the /v1/messages body on the native route),
so a replay renders the very same tokens. `Warmer` replays them one at a time with the
smallest generation (`max_tokens: 1`) while no user request is in flight.

A user request always goes first: the front calls `user_request()` on arrival, which cancels
the warm-up in flight. The replay is streamed, so closing its connection makes llama-server
drop the task at its next batch (a plain request would run to its end: llama-server ignores a
hang-up there), and the slot is free for the user. Warm-ups are not user traffic: they are
`WarmupFinished` events, never request records, so the request metrics leave them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.events import WarmupFinished
from backend.proxy.upstream import count_prompt_tokens

log = logging.getLogger(__name__)

IDLE_FOR = 0.5
"""Seconds without a user request before a warm-up starts (or resumes)."""


@dataclass(frozen=True, slots=True)
class KeptPrompt:
    """A body as llama-server last got it for one prompt family of one backend."""

    backend: str
    family: str
    url: str
    body: bytes
    headers: dict[str, str]
    at: float


def warm_body(body: bytes) -> bytes | None:
    """The same request with the smallest generation, streamed (so a hang-up stops it); None if not JSON."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    obj["max_tokens"] = 1
    obj.pop("max_completion_tokens", None)
    obj["stream"] = True
    obj.pop("id_slot", None)  # wherever llama-server likes: it picks the slot by prompt similarity
    obj.pop("return_progress", None)
    if "messages" in obj and "system" not in obj:  # chat completions: ask for the prompt progress
        obj["return_progress"] = True
    return json.dumps(obj, ensure_ascii=False).encode()


class Warmer:
    """Keeps the latest prompt of each family per backend and replays them when asked (module docstring)."""

    def __init__(self, session: Callable[[], ClientSession | None], publish: Callable[[WarmupFinished], None],
                 *, families: Callable[[], int] = lambda: 2, enabled: Callable[[], bool] = lambda: True,
                 busy: Callable[[], int] = lambda: 0) -> None:
        self._session = session
        self._publish = publish
        self._families = families
        self._enabled = enabled
        self._busy = busy  # user requests in flight
        self._kept: dict[str, OrderedDict[str, KeptPrompt]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._current: asyncio.Task[Any] | None = None
        self._last_user = 0.0
        self.progress: dict[str, dict[str, Any]] = {}  # backend -> what the warm-up in flight has done
        self.recent: list[dict[str, Any]] = []

    def keep(self, backend: str, family: str | None, url: str, body: bytes, headers: dict[str, str]) -> None:
        """Remember `body`, sent to `url`, as its family's latest prompt on `backend` (also while warm-ups
        are off, so turning them on later has something to replay)."""
        if not family:
            return
        kept = self._kept.setdefault(backend, OrderedDict())
        kept[family] = KeptPrompt(backend, family, url, body, dict(headers), time.time())
        kept.move_to_end(family)
        while len(kept) > max(0, self._families()):
            kept.popitem(last=False)

    def kept(self, backend: str) -> list[KeptPrompt]:
        """The prompts a warm-up of `backend` replays, newest first."""
        return list(reversed(self._kept.get(backend, {}).values()))

    def user_request(self) -> None:
        """A user request arrived: it goes first (the warm-up in flight is dropped, and waits)."""
        self._last_user = time.monotonic()
        if self._current is not None and not self._current.done():
            self._current.cancel()

    def start(self, backend: str) -> bool:
        """Warm `backend` in the background (a warm-up already running for it is left alone)."""
        if not self._enabled() or not self._kept.get(backend):
            return False
        task = self._tasks.get(backend)
        if task is not None and not task.done():
            return False
        self._tasks[backend] = asyncio.create_task(self._warm(backend), name=f"warm-{backend}")
        return True

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _idle(self) -> None:
        while self._busy() > 0 or time.monotonic() - self._last_user < IDLE_FOR:
            await asyncio.sleep(0.1)

    async def _warm(self, backend: str) -> None:
        prompts = self.kept(backend)
        for n, prompt in enumerate(prompts):
            for _attempt in range(5):  # each user request in between cancels it; then it waits and retries
                await self._idle()
                began = time.monotonic()
                self.progress[backend] = {"family": prompt.family, "prompt": n + 1, "of": len(prompts), "share": 0.0}
                self._current = asyncio.create_task(self._replay(prompt, backend))
                try:
                    cached, total = await self._current
                except asyncio.CancelledError:
                    me = asyncio.current_task()
                    if me is not None and me.cancelling():
                        raise  # ccbridge stops
                    self._finished(prompt, began, None, None, cancelled=True)
                    continue
                except (ClientError, OSError, TimeoutError, ValueError) as exc:
                    self._finished(prompt, began, None, None, error=str(exc) or type(exc).__name__)
                    break
                self._finished(prompt, began, cached, total)
                break
        self.progress.pop(backend, None)

    def _finished(self, prompt: KeptPrompt, began: float, cached: int | None, total: int | None, *,
                  cancelled: bool = False, error: str | None = None) -> None:
        event = WarmupFinished(prompt.backend, prompt.family, time.time(), (time.monotonic() - began) * 1000.0,
                               total, cached, cancelled, error)
        self.recent = [*self.recent[-9:], {"backend": event.backend, "family": event.family, "at": event.at,
                                           "duration_ms": round(event.duration_ms, 1), "prompt_tokens": total,
                                           "cached_tokens": cached, "cancelled": cancelled, "error": error}]
        self._publish(event)

    async def _replay(self, prompt: KeptPrompt, backend: str) -> tuple[int | None, int | None]:
        """Send one kept prompt with max_tokens 1, streamed; (cached, prompt tokens) from llama-server's timings."""
        body = warm_body(prompt.body)
        session = self._session()
        if body is None or session is None or session.closed:
            raise ValueError("nothing to replay")
        cached = total = None
        async with session.post(prompt.url, data=body, headers={**prompt.headers, "content-type": "application/json"},
                                timeout=ClientTimeout(total=None, sock_connect=5, sock_read=900)) as resp:
            if resp.status >= 400:
                raise ValueError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for line in resp.content:
                if not line.startswith(b"data:") or b"{" not in line:
                    continue
                try:
                    obj = json.loads(line[5:])
                except ValueError:
                    continue
                if not isinstance(obj, dict):
                    continue
                progress = obj.get("prompt_progress")
                if isinstance(progress, dict) and progress.get("total"):
                    self.progress[backend]["share"] = round(progress.get("processed", 0) / progress["total"], 3)
                timings = obj.get("timings")
                if isinstance(timings, dict) and isinstance(timings.get("prompt_n"), int):
                    cached = timings.get("cache_n") or 0
                    total = cached + timings["prompt_n"]
                usage = (obj.get("message") or {}).get("usage") if obj.get("type") == "message_start" else None
                if isinstance(usage, dict) and total is None:  # llama-server's Anthropic stream
                    cached = usage.get("cache_read_input_tokens") or 0
                    total = cached + (usage.get("input_tokens") or 0)
        if total is None:  # no message_start (its one token was part of a character): ask for the prompt's size
            total = await count_prompt_tokens(session, prompt.url + "/count_tokens", prompt.body, prompt.headers)
        return cached, total
