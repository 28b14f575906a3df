"""Pairs each backend call the leg sees with the client request that caused it.

The front proxy tags every request it sends to LiteLLM with an id header;
LiteLLM forwards `x-*` headers to the backend, so the leg reads the same id.
Both sides run on one event loop, so no locks: plain dicts and sets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

PAIR_HEADER = "x-ccbridge-id"

# Ids of cancelled requests are kept this many at most, so late retries are
# still refused but the set never grows without bound.
_CANCELLED_MEMORY = 4096


@dataclass(slots=True)
class Pair:
    """What the leg learned about one client request."""

    id: str
    backend: str | None = None
    model: str | None = None  # model the leg should ask the backend for
    session: str | None = None  # Claude session id (for slot pinning)
    slot: int | None = None  # llama-server slot the running backend call is pinned to
    calls: int = 0  # backend calls seen (LiteLLM retries show as more than one)
    refused: int = 0  # calls refused because the client had already hung up
    timings: dict[str, Any] | None = None  # llama-server's timings object
    backend_status: int | None = None
    backend_error: bytes | None = None  # body of a backend error response
    unreachable: str | None = None  # why the backend could not be reached
    cancelled: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class PairRegistry:
    """Live pairs by id, plus the ids of recently cancelled requests."""

    def __init__(self) -> None:
        self._pairs: dict[str, Pair] = {}
        self._cancelled: dict[str, None] = {}  # insertion-ordered set

    def open(self, request_id: str, backend: str | None, model: str | None, session: str | None = None) -> Pair:
        pair = Pair(request_id, backend, model, session)
        self._pairs[request_id] = pair
        return pair

    def get(self, request_id: str) -> Pair | None:
        return self._pairs.get(request_id)

    def is_cancelled(self, request_id: str) -> bool:
        return request_id in self._cancelled

    def cancel(self, request_id: str) -> int:
        """Mark the request hung up and stop its backend calls; returns calls stopped."""
        self._cancelled[request_id] = None
        if len(self._cancelled) > _CANCELLED_MEMORY:
            del self._cancelled[next(iter(self._cancelled))]
        pair = self._pairs.get(request_id)
        if pair is None:
            return 0
        pair.cancelled = True
        stopped = 0
        for task in list(pair.tasks):
            if not task.done():
                task.cancel()
                stopped += 1
        return stopped

    def close(self, request_id: str) -> Pair | None:
        return self._pairs.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._pairs)
