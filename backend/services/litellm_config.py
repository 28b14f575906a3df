"""The files LiteLLM is started with: its config, rendered from ccbridge.yaml, and its master key.

One model per backend (and, for each group of backends an alias names, model
groups that fail over between them; see `render_config`), whose `api_base` is
the backend leg inside ccbridge, chat-completions routing for Anthropic
messages (FACTS: the default Responses route fails on llama-server), client
`x-*` headers forwarded (the pairing id), retries off. Both files are 0600:
they hold the master key and the leg's secret.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML

from backend.config.model import BackendConfig
from backend.proxy.balance import failover_order, group_name, litellm_model

# A group member that failed this many times in a minute is skipped by LiteLLM for COOLDOWN_S
# (LiteLLM never cools down the only deployment of a model group: single backends are unaffected).
ALLOWED_FAILS = 1
COOLDOWN_S = 10


def _deployment(model_name: str, backend: str, leg_url: str, leg_secret: str, order: int | None = None) -> dict:
    params: dict = {
        # the leg puts the real model id in; LiteLLM only needs a name
        "model": f"openai/{backend}",
        "api_base": f"{leg_url}/leg/{backend}",
        "api_key": leg_secret,
        "max_retries": 0,
    }
    if order is not None:
        params["order"] = order  # LiteLLM tries the lowest order first, then the next on an error
    # Without model_info, LiteLLM sends an Anthropic request with `thinking: {"type": "enabled"}`
    # to the backend's OpenAI Responses API and drops llama-server's reasoning on the way
    # back; marked so, it stays on chat completions and passes `reasoning_effort` on.
    return {"model_name": model_name, "litellm_params": params, "model_info": {"supports_reasoning": False}}


def render_config(
    backends: Mapping[str, BackendConfig], leg_url: str, leg_secret: str, master_key: str,
    groups: Iterable[Sequence[str]] = (), balance: str = "session",
) -> dict:
    """LiteLLM's config as a plain dict (written as YAML).

    One model group per backend (named like it); and for each group of backends an alias names,
    one model group per member, `<group>@<member>`, holding every member: that member at order 1
    and the others after it (orders 2, 3, ...). ccbridge picks the member (session affinity);
    LiteLLM fails over to the next order when the call to it fails (the leg answers 502 when the
    backend cannot be reached), and cools a failing member down.

    With `groups.balance: litellm`, also one model group per group, `<group>`, whose member LiteLLM
    picks itself: its `session_affinity` pre-call check (from `X-Claude-Code-Session-Id`, which it
    reads itself) and its failover within a model group (`enable_weighted_failover`)."""
    model_list = [_deployment(name, name, leg_url, leg_secret) for name in backends]
    groups = [tuple(members) for members in groups]
    for members in groups:
        for first in members:
            model_list.extend(_deployment(litellm_model(members, first), member, leg_url, leg_secret, order)
                              for order, member in enumerate(failover_order(members, first), start=1))
    router: dict = {"num_retries": 0, "allowed_fails": ALLOWED_FAILS, "cooldown_time": COOLDOWN_S}
    if balance == "litellm" and groups:
        for members in groups:
            model_list.extend(_deployment(group_name(members), member, leg_url, leg_secret) for member in members)
        router["model_group_affinity_config"] = {group_name(members): ["session_affinity"] for members in groups}
        router["enable_weighted_failover"] = True
    return {
        "model_list": model_list,
        "litellm_settings": {
            "use_chat_completions_url_for_anthropic_messages": True,
            "num_retries": 0,
            "drop_params": True,
        },
        "router_settings": router,
        "general_settings": {
            "master_key": master_key,
            "forward_client_headers_to_llm_api": True,
        },
    }


def write_config(run_dir: Path, data: dict) -> Path:
    """`render_config`'s dict as run_dir/litellm.yaml, replaced at once, readable by this user only."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "litellm.yaml"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False
        yaml.dump(data, fh)
    os.replace(tmp, path)
    return path


def load_master_key(run_dir: Path) -> str:
    """One random key per install, in a 0600 file (LiteLLM wants an `sk-` prefix)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "litellm-master-key"
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text().strip()
        if key.startswith("sk-"):
            return key
    key = "sk-ccbridge-" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key
