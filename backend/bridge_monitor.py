"""What the proxy asks of the monitor's last look at a backend, instead of asking llama-server.

The monitor (`backend.monitor.sampler`) reads every backend's /health, /props and
/v1/models in the background. The proxy's helpers (the model resolver, the slot
pinner, the backend leg, group balancing) read its latest snapshot through
`MonitorLookups`, so a request never waits on a question the monitor has already
answered. A sample counts only while it is of the backend as configured now (same
name and api_base); the model, slots and kind of server only while it was healthy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from backend.config.model import BackendConfig
from backend.monitor.backend_status import BackendStatus
from backend.monitor.snapshot import MonitorSnapshot


class MonitorLookups:
    """Answers from the monitor's snapshot (`snapshot`), for the backends in force (`backends`)."""

    def __init__(self, snapshot: Callable[[], MonitorSnapshot],
                 backends: Callable[[], Mapping[str, BackendConfig]]) -> None:
        self._snapshot = snapshot
        self._backends = backends

    def seen(self, backend: BackendConfig, *, healthy: bool = True) -> BackendStatus | None:
        """The monitor's last sample of this backend (same name and api_base), None when it has none;
        with `healthy`, only a sample that found it answering /health ok."""
        for b in self._snapshot().backends:
            if b.name == backend.name and b.api_base == backend.api_base and (b.health == "ok" or not healthy):
                return b
        return None

    def slots(self, backend: BackendConfig) -> int | None:
        """The slot count the monitor last read from this backend's /props (None: ask it)."""
        seen = self.seen(backend)
        return seen.total_slots if seen is not None else None

    def model(self, backend: BackendConfig) -> str | None:
        """The model the monitor last read from this backend's /v1/models (None while it has not, or
        while the backend is not healthy: then the resolver asks, and says what failed)."""
        seen = self.seen(backend)
        return seen.model if seen is not None else None

    def reports_progress(self, backend: BackendConfig) -> bool:
        """Whether to ask this backend for prompt progress (`return_progress`): yes unless the
        monitor found a healthy server there that is not llama-server (no build in /props)."""
        seen = self.seen(backend)
        return seen.build is not None if seen is not None else True

    def health(self, name: str) -> tuple[str, str | None, float | None] | None:
        """The monitor's last /health sample of a backend (state, detail, when), for group balancing."""
        backend = self._backends().get(name)
        seen = self.seen(backend, healthy=False) if backend is not None else None
        return (seen.health, seen.health_detail, seen.checked_at) if seen is not None else None
