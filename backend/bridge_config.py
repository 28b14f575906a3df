"""The bridge's config: put in force all or nothing, re-read on an edit, saved with comments kept.

`ConfigKeeper` is the part of `backend.bridge.Bridge` that owns `ccbridge.yaml` at run
time: applying a new config (LiteLLM first, since it is the step that can fail), the
file watcher that applies an external edit, the panel's edits (aliases, `--swa-full`),
and the routing each config makes (`backend.proxy.routing`: the upstreams, chosen
there once per config, and ccbridge's own LiteLLM made here when a config first needs it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import ClientSession

from backend.config import AliasTable, Config, ConfigDocument, ConfigError, load_config
from backend.config.model import LOOPBACK_HOSTS, BackendConfig
from backend.control import Alias, ConfigNotApplied
from backend.events import ConfigApplied, EventBus, LogLine
from backend.proxy.balance import GroupBalancer, groups_of
from backend.proxy.routing import Routing, make_routing, needs_litellm
from backend.redaction import Redactor, config_secrets, learn
from backend.services.litellm_service import LiteLLMService
from backend.services.llama_service import LlamaServers, command_with_flag
from backend.store import HistoryStore

_WATCH_INTERVAL = 1.0


class StartupError(Exception):
    """ccbridge cannot start as configured; the message says what to change."""


def check_exposure(config: Config) -> None:
    """Listening beyond loopback without a key would open the model to the network."""
    if config.proxy.host not in LOOPBACK_HOSTS and not config.proxy.api_key:
        raise StartupError(
            f"proxy.host is {config.proxy.host!r}, which other machines can reach, but "
            "proxy.api_key is not set. Set proxy.api_key in ccbridge.yaml (clients then send it "
            "as ANTHROPIC_API_KEY), or keep proxy.host: 127.0.0.1."
        )


class ConfigKeeper:
    """The config in force and every way it changes (mixed into `Bridge`, which sets these)."""

    config: Config
    bus: EventBus
    balancer: GroupBalancer
    history: HistoryStore
    llamas: LlamaServers
    litellm: LiteLLMService | None
    _routing: Routing
    _staged: Config | None  # a config being applied, while LiteLLM tries it
    _config_lock: asyncio.Lock  # one config change at a time: file watcher, aliases, --swa-full
    _config_mtime: float | None
    _run_dir: Path
    _leg_secret: str
    _leg_port: int | None
    _session: ClientSession | None
    _resolved_model: Callable[[BackendConfig], str | None]

    async def apply_config(self, new: Config) -> tuple[str, ...]:
        """Put a config in force, all or nothing (see `_apply`); one config change at a time."""
        async with self._config_lock:
            return await self._apply(new)

    async def _apply(self, new: Config) -> tuple[str, ...]:
        """Build the new state, start what it needs, then swap (call it holding `_config_lock`).

        LiteLLM is the step that can fail: when its inputs changed (a new or removed backend or
        group, a new port) a new LiteLLM is started from the new config while the running one
        serves, and only once it is healthy are config and routing swapped. If it fails nothing
        changed: the running LiteLLM and config stay, and `ConfigNotApplied` says why. The rest
        follows the swap: a LiteLLM no longer needed stops, one newly needed starts (its supervisor
        retries and requests wait for it), a llama-server whose command changed restarts (two
        cannot hold one port)."""
        try:
            check_exposure(new)
        except StartupError as exc:
            raise ConfigError(str(exc)) from None
        learn(config_secrets(new))
        old = self.config
        aliases = await asyncio.to_thread(AliasTable, new.aliases)  # alias patterns compile: ~35 ms for 600
        restarted: tuple[str, ...] = ()
        litellm = self.litellm
        if (litellm is not None and needs_litellm(new)
                and (set(old.backends) != set(new.backends) or old.litellm != new.litellm
                     or groups_of(old.aliases) != groups_of(new.aliases) or old.groups != new.groups)):
            # LiteLLM's config names the backends and groups only (the leg reads api_base, model and
            # keys live), so only a new or removed backend or group, or a new port, needs a restart.
            settings, litellm.settings = litellm.settings, new.litellm
            self._staged = new
            try:
                await litellm.restart()
            except Exception as exc:  # noqa: BLE001 - any failure keeps the running state
                litellm.settings = settings
                raise ConfigNotApplied(f"LiteLLM did not start with the new config ({exc}); the running LiteLLM "
                                       "and config are kept") from exc
            finally:
                self._staged = None
            restarted = ("litellm",)
        self.config = new
        self._bodies_config(new)
        had = self.litellm
        self._routing = self._routing_for(new, aliases)
        if not needs_litellm(new) and self.litellm is not None:
            await self.litellm.stop()  # every backend went native (or to litellm.url)
            self.litellm = None
        elif self.litellm is not None and had is None:
            await self.litellm.start()
            restarted = ("litellm",)
        self.balancer.forget(groups_of(new.aliases))
        restarted += await self.llamas.sync(new.backends)
        self.bus.publish(ConfigApplied(str(new.source), time.time(), restarted))
        return restarted

    async def reload_config(self) -> Config:
        """Re-read ccbridge.yaml; an invalid file is refused and the running config kept."""
        async with self._config_lock:
            return await self._reload()

    async def _reload(self) -> Config:
        if self.config.source is None:
            return self.config
        new = await asyncio.to_thread(load_config, self.config.source)  # YAML parsing off the event loop
        await self._apply(new)
        return new

    async def save_aliases(self, aliases: list[Alias]) -> list[Alias]:
        """Validate, write ccbridge.yaml (comments kept, fsynced, off the event loop), apply to the next request."""
        source = self.config.source
        if source is None:
            raise ConfigError("this bridge was started without a config file; nothing to save to")

        def edit() -> tuple[ConfigDocument, Config]:
            doc = ConfigDocument.load(source)
            doc.set_aliases(aliases)
            return doc, doc.to_config()  # raises ConfigError with the reason; nothing written

        async with self._config_lock:
            doc, new = await asyncio.to_thread(edit)
            await self._apply(new)  # all or nothing: on failure nothing is written either
            await self._save(doc)
        return [(r.pattern, r.target) for r in new.aliases]

    async def enable_swa_full(self, backend: str) -> tuple[str, ...]:
        """Add `--swa-full` to a ccbridge-run llama-server's `command` in ccbridge.yaml (comments kept)
        and restart it, so a sliding-window model keeps the prompt start new sessions share.
        Returns the restarted services."""
        cfg = self.config.backends.get(backend)
        if cfg is None or not cfg.command:
            raise ConfigError(f"backend '{backend}' is not run by ccbridge (it has no command): add --swa-full to "
                              "the llama-server command line you start yourself",
                              key=f"backends.{backend}.command", file=self.config.source)
        source = self.config.source
        if source is None:
            raise ConfigError("this bridge was started without a config file; nothing to save to")
        command = command_with_flag(cfg.command, "--swa-full")

        def edit() -> tuple[ConfigDocument, Config]:  # YAML read and checked off the event loop
            doc = ConfigDocument.load(source)
            doc.set_value(["backends", backend, "command"], command)
            return doc, doc.to_config()  # raises ConfigError with the reason; nothing written

        async with self._config_lock:
            doc, new = await asyncio.to_thread(edit)
            restarted = await self._apply(new)
            await self._save(doc)
        return restarted

    async def _save(self, doc: ConfigDocument) -> None:
        """Write ccbridge.yaml off the loop (the config is in force already) and take its new mtime as seen, so
        the watcher does not apply it again."""
        await asyncio.to_thread(doc.save)
        self._config_mtime = await asyncio.to_thread(self._mtime)

    def _bodies_config(self, config: Config) -> None:
        """The history's body caps and the secrets it blanks, from the config in force."""
        self.history.body_max_bytes = config.history.body_max_kb * 1024
        self.history.bodies_max_bytes = int(config.history.bodies_max_mb * 1024 * 1024)
        self.history.redact = Redactor(config_secrets(config))

    def _body_limit(self) -> int:
        """Bytes of each body the front keeps (0: `history.bodies` is off)."""
        return self.config.history.body_max_kb * 1024 if self.config.history.bodies else 0

    def _routing_for(self, config: Config, aliases: AliasTable) -> Routing:
        """The routing for `config` (`aliases` its compiled alias table), with its upstreams; ccbridge's own
        LiteLLM is made here when the config first needs one (its supervisor starts it)."""
        if needs_litellm(config) and self.litellm is None:
            self.litellm = LiteLLMService(
                settings=config.litellm,
                backends=lambda: self._litellm_config().backends,
                leg_url=lambda: f"http://127.0.0.1:{self._leg_port}",
                leg_secret=self._leg_secret,
                run_dir=self._run_dir,
                bus=self.bus,
                session=self._session,  # type: ignore[arg-type]
                groups=lambda: groups_of(self._litellm_config().aliases),
                balance=lambda: self._litellm_config().groups.balance,
            )
        return make_routing(config, aliases, litellm=self.litellm, balancer=self.balancer,
                            resolved=self._resolved_model)

    def _litellm_config(self) -> Config:
        """What LiteLLM's config is written from: the config being applied while a restart tries it,
        else the one in force."""
        return self._staged or self.config

    def _mtime(self) -> float | None:
        source = self.config.source
        try:
            return source.stat().st_mtime if source else None
        except OSError:
            return None

    async def _watch_config(self) -> None:
        """Apply external edits of ccbridge.yaml; refuse invalid ones with the reason, and say truthfully
        whether the running config was kept."""
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            if self._mtime() == self._config_mtime:
                continue
            async with self._config_lock:  # an API change in progress saves first and takes the mtime as seen
                mtime = self._mtime()
                if mtime is None or mtime == self._config_mtime:
                    continue
                self._config_mtime = mtime
                before = self.config
                try:
                    await self._reload()
                    self._say(f"applied edited {self.config.source}")
                except Exception as exc:  # noqa: BLE001 - keep running on any bad edit
                    if self.config is before:
                        self._say(f"ignored edit of {self.config.source}: {exc} (running config kept)")
                    else:  # swapped, then a later step failed: say so, not "kept"
                        self._say(f"applied edited {self.config.source}, but then: {exc}")

    def _say(self, line: str) -> None:
        self.bus.publish(LogLine("proxy", line, time.time()))
