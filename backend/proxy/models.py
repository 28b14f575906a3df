"""Finds the model id a backend serves (`model: auto`).

The monitor (`backend.monitor`) already asks every backend's /v1/models in the
background; with `known` reading its snapshot, the resolver asks llama-server
itself only when the monitor has no answer yet (the first seconds after start).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import BackendConfig
from backend.llama_api import bearer, models_url

_TTL = 60.0


class ModelResolver:
    """GET {api_base}/models -> first id, cached per backend for a minute; `known(backend)`, when it
    answers, is taken first (the monitor's snapshot)."""

    def __init__(self, session: ClientSession, known: Callable[[BackendConfig], str | None] | None = None) -> None:
        self._session = session
        self._known = known
        self._cache: dict[str, tuple[float, str | None]] = {}

    def cached(self, backend: BackendConfig) -> str | None:
        hit = self._cache.get(backend.api_base)
        return hit[1] if hit else None

    async def resolve(self, backend: BackendConfig) -> str | None:
        if backend.model != "auto":
            return backend.model
        known = self._known(backend) if self._known is not None else None
        if known:
            self._cache[backend.api_base] = (time.monotonic(), known)
            return known
        hit = self._cache.get(backend.api_base)
        if hit and time.monotonic() - hit[0] < _TTL:
            return hit[1]
        model = await self._fetch(backend)
        if model is not None or hit is None:
            self._cache[backend.api_base] = (time.monotonic(), model)
        return model if model is not None else (hit[1] if hit else None)

    async def _fetch(self, backend: BackendConfig) -> str | None:
        headers = bearer(backend.api_key)
        try:
            async with self._session.get(
                models_url(backend.api_base),
                headers=headers,
                timeout=ClientTimeout(total=5),
            ) as resp:
                if resp.status != 200:
                    return None
                data = await resp.json(content_type=None)
        except (TimeoutError, ClientError, OSError, ValueError):
            return None
        items = data.get("data") if isinstance(data, dict) else None
        if isinstance(items, list) and items and isinstance(items[0], dict):
            model = items[0].get("id")
            return model if isinstance(model, str) else None
        return None
