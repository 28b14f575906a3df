"""Where a request goes: the one place that chooses the backend and the upstream.

A `Routing` is built once per config (at start and on each reload): the alias
table, the backends, and the upstreams they are reached through, made once:
the main upstream (the LiteLLM at `litellm.url`, ccbridge's own LiteLLM, or,
with every backend on `route: native`, the first backend's llama-server) and
each `route: native` backend's own llama-server. Per request, `route` only
looks up: it checks the body, resolves the model name by the alias table,
picks the group member, and rewrites the body for the upstream it picked. It
changes nothing outside the request's draft; what it did (a billing line
removed, the shared message moved, an unknown model) it says in its answer,
and the front counts and reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from backend.config import Config
from backend.config.aliases import AliasTable
from backend.config.model import BackendConfig, ProxyConfig
from backend.proxy import fastjson
from backend.proxy.balance import GroupBalancer
from backend.proxy.draft import RequestDraft
from backend.proxy.group_upstream import NativeGroupUpstream
from backend.proxy.misses import PromptShape
from backend.proxy.prompt import is_subagent, prompt_family, shared_first, strip_billing_line
from backend.proxy.toolrepair import ToolCatalog
from backend.proxy.upstream import (
    COUNT_TOKENS_PATH,
    MESSAGES_PATH,
    STARTING,
    ExternalUpstream,
    NativeUpstream,
    Upstream,
)
from backend.proxy.validate import RequestInvalid, check_messages_request

# Paths whose JSON body carries a Claude model name to route.
ROUTED_PATHS = frozenset({MESSAGES_PATH, COUNT_TOKENS_PATH})

Resolved = Callable[[BackendConfig], str | None]
"""The model id a `model: auto` backend serves, as last read (None: not known yet)."""


def _unknown(backend: BackendConfig) -> str | None:
    return None


@dataclass(frozen=True, slots=True)
class Routing:
    """The part of the config the proxy reads per request, with its upstreams; swapped whole on reload."""

    proxy: ProxyConfig
    backends: dict[str, BackendConfig]
    aliases: AliasTable
    config_path: str
    balancer: GroupBalancer | None = None  # chooses the member of a group alias (kept across reloads)
    shared_first: bool = True  # cache.shared_first: the "# Environment" message goes ahead of the prompt
    upstream: Upstream = STARTING  # every request the native route does not take (see `main_upstream`)
    native: Mapping[str, NativeUpstream] = field(default_factory=dict)  # each `route: native` backend's own
    resolved_model: Resolved = _unknown


def needs_litellm(config: Config) -> bool:
    """Whether ccbridge runs a LiteLLM of its own: a backend is not on the native route and
    `litellm.url` names no other."""
    return not config.litellm.url and any(b.route != "native" for b in config.backends.values())


def make_routing(config: Config, aliases: AliasTable, *, litellm: Upstream | None = None,
                 balancer: GroupBalancer | None = None, resolved: Resolved = _unknown) -> Routing:
    """The routing for `config`: `aliases` is its alias table (compiled off the event loop), `litellm`
    ccbridge's own LiteLLM when `needs_litellm` (None: not made yet, requests are told it is starting)."""
    native = {b.name: NativeUpstream(b, resolved) for b in config.backends.values() if b.route == "native"}
    upstream: Upstream
    if config.litellm.url:
        upstream = ExternalUpstream(config.litellm.url, config.litellm.api_key)
    elif needs_litellm(config):
        upstream = litellm if litellm is not None else STARTING
    else:  # every backend is native: llama-server itself serves the other paths
        first = next(iter(config.backends.values()))
        upstream = native[first.name]
    return Routing(
        proxy=config.proxy,
        backends=dict(config.backends),
        aliases=aliases,
        config_path=str(config.source) if config.source else "ccbridge.yaml",
        balancer=balancer,
        shared_first=config.cache.shared_first,
        upstream=upstream,
        native=native,
        resolved_model=resolved,
    )


@dataclass(slots=True)
class Routed:
    """Where one request goes, decided by `route`, and what routing changed in its body."""

    body: bytes
    backend: str
    model: str | None
    upstream: Upstream
    billing_removed: bool = False  # Claude Code's billing line was taken out of the system prompt
    shared_moved: bool = False  # the shared "# Environment" message was moved ahead of the prompt


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request `route` will not send: the Anthropic error to answer with."""

    status: int
    message: str
    error_type: str | None = None
    unknown_model: str | None = None  # no alias matched this model name


def route(body: bytes, routing: Routing, draft: RequestDraft, *, shapes: bool = False) -> Routed | Refusal:
    """Check the body, pick the backend by the alias table, rewrite `model`, cap `max_tokens`, drop the
    billing line; a `route: native` backend is sent straight to llama-server's /v1/messages. Fills in
    the draft (model, backend, family; its prompt shape when `shapes`, to name cache misses)."""
    try:
        obj, fast = fastjson.loads(body)
    except ValueError as exc:
        return Refusal(400, f"request body is not valid JSON: {exc}")
    if not isinstance(obj, dict):
        return Refusal(400, "request body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        return Refusal(400, "model: field required (a string naming a Claude model)"
                       if model is None else "model: expected a string")
    draft.requested_model = model
    draft.stream = obj.get("stream") is True
    try:
        check_messages_request(obj, count_tokens=draft.path == COUNT_TOKENS_PATH)
    except RequestInvalid as exc:
        return Refusal(400, str(exc), "invalid_request_error")
    rule = routing.aliases.resolve(model)
    if rule is None:
        return Refusal(
            404,
            f"ccbridge: no alias matches model {model!r}. Add one to the aliases section of "
            f"{routing.config_path}, e.g.  \"{model}\": <backend>  (or a catch-all \"*\": "
            "<backend>); it applies to the next request.",
            "not_found_error",
            unknown_model=model,
        )
    billing = strip_billing_line(obj)
    if billing is not None:
        draft.subagent = is_subagent(billing)
    moved = bool(routing.shared_first and shared_first(obj))
    draft.family = prompt_family(obj)
    # a group alias: the member chosen for this session first, then the ones to fail over to
    order = [rule.backend] if not rule.is_group or routing.balancer is None else \
        routing.balancer.order(draft.id, rule.members, draft.session_id)
    backend = routing.backends[order[0]]
    draft.alias_rule = rule.pattern
    draft.routed_backend = backend.name
    routed_model = rule.model or (backend.model if backend.model != "auto" else None)
    draft.routed_model = routed_model or routing.resolved_model(backend)
    if shapes and draft.path == MESSAGES_PATH:
        draft.shape = PromptShape.of(obj, backend.name, draft.session_id, draft.family, draft.started_at)
    if backend.repair_tool_calls and draft.path == MESSAGES_PATH and obj.get("tools"):
        draft.tools = ToolCatalog(obj["tools"]) or None  # a call written as text may need repair
    upstream = routing.upstream
    if backend.route == "native":
        # no slot pinning here: llama-server's /v1/messages conversion drops `id_slot`
        upstream = routing.native[backend.name] if len(order) == 1 or routing.balancer is None else \
            NativeGroupUpstream([routing.backends[m] for m in order], routing.balancer.health,
                                routing.resolved_model)
        if draft.path == MESSAGES_PATH and not draft.stream:
            # llama-server ignores a hang-up on a plain request: ask for a stream, assemble the answer
            obj["stream"] = True
            draft.assemble = True
        thinking = obj.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "disabled":
            # llama-server's Anthropic endpoint only reads `enabled`; a thinking template must be told
            kwargs = obj.setdefault("chat_template_kwargs", {})
            if isinstance(kwargs, dict):
                kwargs.setdefault("enable_thinking", False)
    obj["model"] = upstream.model_for(rule, backend)
    cap = backend.max_tokens
    if cap and isinstance(obj.get("max_tokens"), int) and obj["max_tokens"] > cap:
        obj["max_tokens"] = cap
    # Key order and values are kept, so the prompt LiteLLM renders (and
    # llama-server's prompt cache) is the same as for the original bytes.
    return Routed(fastjson.dumps(obj, fast), backend.name, routed_model, upstream, billing is not None, moved)
