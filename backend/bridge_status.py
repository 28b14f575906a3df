"""What the bridge says about itself: the status, its services, the env lines, group shares.

`StatusReport` is the part of `backend.bridge.Bridge` that answers the status API,
the panel, `ccbridge statusline` and /metrics' group rows, from what the bridge
holds (no I/O: the status is asked often).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from backend import __version__
from backend.backend_info import BackendInfo
from backend.claude_env import base_url, claude_settings, shell_lines
from backend.config import Config
from backend.events import EventBus
from backend.metrics import RequestMetrics
from backend.metrics.sessions import SessionBoard
from backend.monitor.sampler import BackendMonitor
from backend.monitor.scorecard import ScorecardBook
from backend.proxy.balance import GroupBalancer, groups_of
from backend.proxy.front import FrontProxy
from backend.proxy.leg import BackendLeg
from backend.proxy.models import ModelResolver
from backend.proxy.warm import Warmer
from backend.serve_info import started_by
from backend.services.litellm_service import LiteLLMService
from backend.services.llama_service import LlamaServers
from backend.services.slot_files import SlotFiles
from backend.store import HistoryStore


class StatusReport:
    """The bridge's answers about itself (mixed into `Bridge`, which sets these)."""

    config: Config
    bus: EventBus
    metrics: RequestMetrics
    sessions: SessionBoard
    monitor: BackendMonitor
    scorecards: ScorecardBook
    balancer: GroupBalancer
    history: HistoryStore
    slot_files: SlotFiles
    warmer: Warmer
    llamas: LlamaServers
    litellm: LiteLLMService | None
    front: FrontProxy | None
    leg: BackendLeg | None
    started_at: float | None
    unknown_models: dict[str, dict[str, Any]]
    unknown_models_forgotten: int
    _resolver: ModelResolver | None

    @property
    def proxy_url(self) -> str:
        return base_url(self.config)

    async def status(self) -> dict[str, Any]:
        """Everything the status API and the panel show."""
        return self.status_now()

    def status_now(self) -> dict[str, Any]:
        """`status()` for a caller on the bridge's loop that cannot await."""
        metrics = self.metrics.snapshot()
        services = self.services(metrics.in_flight)
        return {
            "version": __version__,
            "config_path": str(self.config.source) if self.config.source else None,
            "proxy_url": self.proxy_url,
            "api_key_set": bool(self.config.proxy.api_key),  # whether clients need one; the key is never sent
            "services": services,
            "slot_restores": {name: r.as_dict() for name, r in self.slot_files.restored.items()},
            "warming": dict(self.warmer.progress),  # backend -> the warm-up in flight (share read so far)
            "warmups": list(self.warmer.recent),
            "aliases": [{"pattern": r.pattern, "target": r.target} for r in self.config.aliases],
            "backends": [
                {"name": b.name, "api_base": b.api_base, "model": b.model,
                 "resolved_model": self._resolver.cached(b) if self._resolver else None,
                 "max_tokens": b.max_tokens}
                for b in self.config.backends.values()
            ],
            "unknown_models": [
                {"model": m, **info} for m, info in sorted(
                    self.unknown_models.items(), key=lambda kv: -kv[1]["last_seen"])
            ],
            "unknown_models_forgotten": self.unknown_models_forgotten,
            "history_warning": self.history.warning,
            "metrics": metrics.to_dict(),
            "monitor": self.monitor.snapshot().to_dict(),
            "scorecards": self.scorecards.cards(),
            "groups": self.groups(),
            "claude_env": self.claude_env_lines(),
        }

    async def session_status(self, session_id: str | None) -> dict[str, Any]:
        """What `ccbridge statusline` shows for one Claude Code session: its request (in flight, else
        the last), the backend's model, health and context, and any service not serving. Cheap: no
        I/O, no history read (it is asked every second by every open Claude Code)."""
        view = self.sessions.view(session_id)
        name = ((view["request"] or {}).get("backend") or (view["last"] or {}).get("backend")
                or next(iter(self.config.backends), None))
        backend: dict[str, Any] = {"name": name}
        for seen in self.monitor.snapshot().backends:
            if seen.name == name:
                backend.update(model=seen.model, health=seen.health, health_detail=seen.health_detail,
                               n_ctx_slot=seen.n_ctx_slot, gen_tps=seen.gen_tps, busy_slots=seen.busy_slots,
                               total_slots=seen.total_slots)
        services = [{"name": s["name"], "state": s["state"]} for s in self.services()
                    if s["name"] in ("litellm", f"llama:{name}")]
        return {**view, "backend": backend, "services": services}

    def claude_env_lines(self) -> list[str]:
        """What `ccbridge env` prints (without its comments), sized from the monitor's last look
        at the first backend; `proxy.api_key` is never sent: a placeholder stands for it."""
        config = self.config
        first = next(iter(config.backends.values()), None)
        info = None
        for seen in self.monitor.snapshot().backends:
            if first is not None and seen.name == first.name:
                info = BackendInfo(first.name, first.api_base, seen.health == "ok", seen.model,
                                   seen.n_ctx_slot, seen.n_ctx_train, seen.total_slots)
        lines = shell_lines(claude_settings(config, info), why=False)
        key = config.proxy.api_key
        return [line.replace(key, "<proxy.api_key>") for line in lines] if key else lines

    def services(self, in_flight: int | None = None) -> list[dict[str, Any]]:
        """One dict per service: the proxy, LiteLLM (or why there is none), each managed llama-server."""
        services: list[dict[str, Any]] = []
        if self.litellm is not None:
            services.append(asdict(self.litellm.status()))
        else:
            unused = not self.config.litellm.url
            services.append({"name": "litellm", "state": "unused" if unused else "external",
                             "url": self.config.litellm.url,
                             "detail": "every backend has route: native" if unused else None})
        services.extend(asdict(s) for s in self.llamas.statuses())
        assert self.front is not None
        services.insert(0, {
            "name": "proxy",
            "state": "ready",
            "url": self.proxy_url,
            "port": self.config.proxy.port,
            "started_at": self.started_at,
            "pid": os.getpid(),
            "started_by": started_by(),
            "version": __version__,
            "in_flight": self.metrics.snapshot().in_flight if in_flight is None else in_flight,
            "probes_answered": self.front.probes_answered,
            "billing_lines_removed": self.front.billing_lines_removed,
            "shared_first_moved": self.front.shared_moved,
            "refused_retries": self.leg.refused_total if self.leg else 0,
            "listener_errors": self.bus.listener_errors,
            "bodies_dropped": self.history.bodies_dropped,  # not kept: the history writer was too far behind
            "restarts": 0,
            "last_error": None,
        })
        return services

    def groups(self) -> list[dict[str, Any]]:
        """Each group alias's backends: health, requests answered and their share, sessions, failovers,
        and the share of their prompts llama-server served from its cache (status API, panel, /metrics)."""
        groups = self.balancer.snapshot(groups_of(self.config.aliases))
        cache = {c.key: c for c in self.monitor.snapshot().cache.by_backend}
        for group in groups:
            for member in group["members"]:
                stats = cache.get(member["backend"])
                member["cache_share"] = stats.share if stats else None
                member["later_turns_cache_share"] = stats.later_share if stats else None
        return groups

    def _route_of(self, backend: str | None) -> str:
        """The route a backend's requests take: native, litellm (ours) or external (litellm.url)."""
        cfg = self.config.backends.get(backend or "")
        if cfg is None:
            return "-"
        if cfg.route == "native":
            return "native"
        return "external" if self.config.litellm.url else "litellm"
