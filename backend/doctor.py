"""`ccbridge doctor`: checks a user can run before asking for help.

Each check prints one line: ok, warn or FAIL, what was found and what to do.
Secrets are never printed.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from backend import paths
from backend.backend_probe import context_advice, probe_backend
from backend.config import ConfigError, load_config
from backend.config.model import LOOPBACK_HOSTS, Config
from backend.services import litellm_env
from backend.services.litellm_service import port_in_use, port_owner


class Report:
    """Collects check results and prints them as they come."""

    def __init__(self) -> None:
        self.failures = 0
        self.warnings = 0

    def ok(self, text: str) -> None:
        print(f"  ok    {text}")

    def warn(self, text: str) -> None:
        self.warnings += 1
        print(f"  warn  {text}")

    def fail(self, text: str) -> None:
        self.failures += 1
        print(f"  FAIL  {text}")


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
        resp = httpx.get(f"http://127.0.0.1:{p.port}/ccbridge/api/status", headers=headers,
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


def _check_backends(config: Config, r: Report) -> None:
    for backend in config.backends.values():
        info = probe_backend(backend)
        if not info.reachable:
            r.fail(f"backend '{backend.name}' at {backend.api_base} is not reachable ({info.error}): "
                   "start llama-server there or fix its api_base")
            continue
        ctx = f", context {info.n_ctx_slot}/slot" if info.n_ctx_slot else ""
        slots = f", {info.total_slots} slot(s)" if info.total_slots else ""
        r.ok(f"backend '{backend.name}' serves {info.model}{ctx}{slots}")
        advice = context_advice(info)
        if advice:
            (r.fail if info.n_ctx_slot and info.n_ctx_slot < 32_768 else r.warn)(
                f"backend '{backend.name}': {advice}")


def run_doctor(config_path: str | None) -> int:
    path = Path(config_path).expanduser() if config_path else paths.default_config_file()
    r = Report()
    print(f"ccbridge doctor: {path}")
    try:
        config = load_config(path)
        r.ok(f"config is valid ({len(config.backends)} backend(s), {len(config.aliases)} alias(es))")
    except (ConfigError, FileNotFoundError) as exc:
        r.fail(f"{exc}")
        print("fix the config first (`ccbridge serve` writes a default one if none exists)")
        return 1
    _check_proxy(config, r)
    _check_litellm(config, r)
    _check_backends(config, r)
    print(f"{r.failures} problem(s), {r.warnings} warning(s)")
    return 1 if r.failures else 0
