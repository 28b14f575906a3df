"""How long the event loop stops running callbacks while something else runs on it."""

from __future__ import annotations

import asyncio
import contextlib

TICK = 0.002


class LoopStallMeter:
    """`async with LoopStallMeter() as meter:` ... then `meter.longest`: the longest gap, in seconds, beyond
    the ~2 ms tick, between two wake-ups of a task sleeping in a loop on the same event loop."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None
        self._last = 0.0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        while True:
            await asyncio.sleep(TICK)
            now = loop.time()
            self.longest = max(self.longest, now - self._last - TICK)
            self.ticks += 1
            self._last = now

    async def __aenter__(self) -> LoopStallMeter:
        self._task = asyncio.create_task(self._run())
        while self.ticks < 2:  # it runs before the work starts
            await asyncio.sleep(TICK)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        # the gap since the last wake-up counts too: work that blocked until just now was never seen by a wake-up
        self.longest = max(self.longest, asyncio.get_running_loop().time() - self._last - TICK)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
