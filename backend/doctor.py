"""`ccbridge doctor`: checks a user can run before asking for help.

Each check prints one line: ok, warn or FAIL, what was found and what to do.
Secrets are never printed.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import aiohttp
import httpx

from backend import paths
from backend.claude_env import base_url
from backend.config import ConfigError, load_config
from backend.config.model import LOOPBACK_HOSTS, Config
from backend.monitor.process import parse_flags
from backend.monitor.sampler import sample_once
from backend.monitor.scorecard import Scorecard, probe_model
from backend.monitor.snapshot import Advice, MonitorSnapshot
from backend.monitor.text import describe_gpu, describe_process, describe_server, describe_swa
from backend.redaction import config_secrets, learn, redact
from backend.services import litellm_env
from backend.services.llama_service import command_argv
from backend.services.supervised import port_in_use, port_owner


class Report:
    """Collects check results and prints them as they come."""

    def __init__(self) -> None:
        self.failures = 0
        self.warnings = 0

    def ok(self, text: str) -> None:
        print(redact(f"  ok    {text}"))  # the one redactor: no key in any line

    def warn(self, text: str) -> None:
        self.warnings += 1
        print(redact(f"  warn  {text}"))

    def fail(self, text: str) -> None:
        self.failures += 1
        print(redact(f"  FAIL  {text}"))

    def info(self, text: str) -> None:
        print(redact(f"  info  {text}"))


def _check_proxy(config: Config, r: Report) -> None:
    p = config.proxy
    if p.host not in LOOPBACK_HOSTS and not p.api_key:
        r.fail(f"proxy.host {p.host} is reachable from other machines but proxy.api_key is not set: "
               "set a key or use 127.0.0.1")
    if not port_in_use(p.port, "127.0.0.1"):
        r.ok(f"proxy port {p.port} is free")
        return
    try:
        headers = {"x-api-key": p.api_key} if p.api_key else {}
        resp = httpx.get(f"{base_url(config)}/ccbridge/api/status", headers=headers,
                         timeout=2, trust_env=False)
        if resp.status_code == 200:
            r.ok(f"ccbridge is already running on port {p.port}")
            return
    except httpx.HTTPError:
        pass
    owner = port_owner(p.port)
    who = f"{owner.name()} (pid {owner.pid})" if owner else "another program"
    r.fail(f"proxy port {p.port} is held by {who}: stop it or change proxy.port")


def _check_litellm(config: Config, r: Report) -> None:
    if config.litellm.url:
        try:
            httpx.get(config.litellm.url, timeout=2, trust_env=False)
            r.ok(f"litellm.url {config.litellm.url} answers (ccbridge starts no LiteLLM)")
        except httpx.HTTPError as exc:
            r.fail(f"litellm.url {config.litellm.url} does not answer ({exc}): start it or remove litellm.url")
        return
    venv = litellm_env.venv_dir()
    if litellm_env.is_ready():
        version = litellm_env.installed_version(venv)
        r.ok(f"LiteLLM {version} environment at {venv}")
        if version in litellm_env.MALICIOUS_VERSIONS:
            r.fail(f"LiteLLM {version} is a known malicious release: delete {venv}")
    else:
        r.warn(f"LiteLLM environment not installed yet at {venv}: `ccbridge serve` creates it "
               "(about 700 MB, under a minute)")
    bad = litellm_env.find_malicious_pth()
    site = venv / "lib"
    if site.exists():
        bad += [p for p in site.glob("python*/site-packages/litellm_init.pth")]
    for path in bad:
        r.fail(f"{path} exists: it is the payload of the malicious LiteLLM 1.82.8; delete it and "
               "reinstall that environment")
    if not bad:
        r.ok("no litellm_init.pth on the interpreter's path or in LiteLLM's environment")
    port = config.litellm.port
    if port_in_use(port):
        owner = port_owner(port)
        name = owner.name() if owner else "another program"
        r.warn(f"LiteLLM port {port} is in use by {name}: if that is not ccbridge's LiteLLM, change "
               "litellm.port")
    else:
        r.ok(f"LiteLLM port {port} is free")


def _check_backends(config: Config, r: Report) -> MonitorSnapshot:
    """Each backend's llama-server, its process, the GPU and the advice (backend/monitor)."""
    for backend in config.backends.values():
        if backend.command:
            _check_command(backend.name, command_argv(backend.command, backend.api_base), r)
    snap = asyncio.run(sample_once(config.backends))
    for b in snap.backends:
        if b.health == "unreachable":
            continue  # the advice below says so, with the fix
        ctx = f", context {b.n_ctx_slot}/slot" if b.n_ctx_slot else ""
        slots = f", {b.total_slots} slot(s)" if b.total_slots else ""
        state = "" if b.health == "ok" else f" (health: {b.health}, {b.health_detail})"
        r.ok(f"backend '{b.name}' serves {b.model or '?'}{ctx}{slots}{state}")
        server = describe_server(b)
        if server:
            r.ok(f"backend '{b.name}': {server}")
        if b.process is not None:
            r.ok(f"backend '{b.name}' process: {describe_process(b.process)}")
        elif b.process_note:
            r.info(f"backend '{b.name}' process: {b.process_note}")
        if b.swa is not None:
            r.info(f"backend '{b.name}' model: {describe_swa(b.swa)}")
    _check_models(config, snap, r)
    for line in describe_gpu(snap.gpu, snap.host):
        (r.ok if snap.gpu.available else r.info)(line)
    seen = {(a.code, a.backend) for a in snap.advice}
    live = [a for a in _running_advice(config) if (a.code, a.backend) not in seen]
    serving = port_in_use(config.proxy.port, "127.0.0.1")
    for a in (*snap.advice, *live):
        managed = config.backends.get(a.backend or "")
        if a.code == "unreachable" and managed is not None and managed.command and not serving:
            r.info(f"backend '{a.backend}' is not running: `ccbridge serve` starts it from "
                   f"backends.{a.backend}.command")
            continue
        prefix = f"backend '{a.backend}': " if a.backend and not a.text.startswith("backend ") else ""
        line = f"{prefix}{a.text}. Fix: {a.fix}"
        {"error": r.fail, "warn": r.warn, "info": r.info}[a.level](line)
    return snap


def _check_models(config: Config, snap: MonitorSnapshot, r: Report) -> None:
    """The model scorecard of each idle backend: tools rendered, tool calls, thinking, context, window."""
    idle = [b for b in snap.backends if b.health == "ok" and not b.busy_slots]
    for b in snap.backends:
        if b.health == "ok" and b.busy_slots:
            r.info(f"backend '{b.name}' model: not probed, llama-server is busy (a probe would make a turn "
                   "wait); run ccbridge doctor again when it is idle")
    if not idle:
        return

    async def probe_all() -> list[Scorecard]:
        async with aiohttp.ClientSession() as session:
            return [await probe_model(session, config.backends[b.name], b) for b in idle]

    for card in asyncio.run(probe_all()):
        report = {"ok": r.ok, "warn": r.warn, "fail": r.fail, "info": r.info}
        for line in card.lines:
            report[line.level](f"backend '{card.backend}' model: {line.text()}")


def _check_groups(config: Config, snap: MonitorSnapshot, r: Report) -> None:
    """Every backend of each group alias: which answer (requests go to those), and whether they serve
    the same model with the same context (a session a failover moves goes on there)."""
    for rule in config.aliases:
        if not rule.is_group:
            continue
        seen = {b.name: b for b in snap.backends}
        states = {m: seen[m].health if m in seen else "unknown" for m in rule.members}
        where = f'group {rule.target} (alias "{rule.pattern}")'
        listing = ", ".join(f"{m} {state}" for m, state in states.items())
        up = [m for m, state in states.items() if state == "ok"]
        down = [m for m in rule.members if m not in up]
        if not up:
            r.fail(f"{where}: no backend answers ({listing}): start llama-server on at least one of them")
            continue
        if down:
            r.warn(f"{where}: {', '.join(down)} not answering ({listing}); its sessions go to {', '.join(up)} "
                   "until it answers again: start it, or fix its api_base")
        else:
            r.ok(f"{where}: every backend answers ({listing}); each Claude Code session stays on one of them "
                 f"(groups.balance: {config.groups.balance})")
        models = {m: seen[m].model for m in up if seen[m].model}
        if len(set(models.values())) > 1:
            served = ", ".join(f"{m}: {v}" for m, v in models.items())
            r.warn(f"{where}: the backends serve different models ({served}): a session a failover moves goes on "
                   "with another model; serve the same model on all of them")
        contexts: dict[str, int] = {m: n for m in up if (n := seen[m].n_ctx_slot)}
        if len(set(contexts.values())) > 1:
            smallest = min(contexts, key=lambda m: contexts[m])
            r.warn(f"{where}: context per slot differs ({', '.join(f'{m}: {v}' for m, v in contexts.items())}): "
                   f"a session moved to {smallest} may not fit; start them with the same -c and -np")


def _check_command(name: str, argv: list[str], r: Report) -> None:
    """A backend's `command`: the program and its model file exist (ccbridge serve runs it)."""
    exe = shutil.which(argv[0])
    if exe is None:
        r.fail(f"backend '{name}' command: {argv[0]} not found: give its full path in backends.{name}.command")
        return
    model = parse_flags(argv).model
    if model and not model.startswith(("http://", "https://")) and "/" in model and not Path(model).exists():
        r.fail(f"backend '{name}' command: the model file {model} does not exist")
        return
    r.ok(f"backend '{name}' is started by ccbridge (service llama:{name}): {exe}")


def _running_advice(config: Config) -> list[Advice]:
    """Advice only a running ccbridge knows (failed requests, cache misses), from its status API."""
    if not port_in_use(config.proxy.port, "127.0.0.1"):
        return []
    headers = {"x-api-key": config.proxy.api_key} if config.proxy.api_key else {}
    try:
        resp = httpx.get(f"{base_url(config)}/ccbridge/api/status", headers=headers,
                         timeout=3, trust_env=False)
        items = resp.json()["monitor"]["advice"]
        return [Advice(a["level"], a["code"], a["text"], a["fix"], a.get("backend")) for a in items
                if a.get("code") in ("request_context_exceeded", "cache_low")]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return []


def run_doctor(config_path: str | None) -> int:
    path = Path(config_path).expanduser() if config_path else paths.default_config_file()
    r = Report()
    print(f"ccbridge doctor: {path}")
    try:
        config = load_config(path)
        learn(config_secrets(config))
        r.ok(f"config is valid ({len(config.backends)} backend(s), {len(config.aliases)} alias(es))")
    except (ConfigError, FileNotFoundError) as exc:
        r.fail(f"{exc}")
        print("fix the config first (`ccbridge serve` writes a default one if none exists)")
        return 1
    _check_proxy(config, r)
    _check_litellm(config, r)
    snap = _check_backends(config, r)
    _check_groups(config, snap, r)
    print(f"{r.failures} problem(s), {r.warnings} warning(s)")
    return 1 if r.failures else 0
