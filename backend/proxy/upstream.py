"""Where the front proxy sends requests: a managed LiteLLM, a given URL, or llama-server itself.

`backend.proxy.routing` chooses among them, once per config; the front asks
only what the `Upstream` protocol offers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import AliasRule, BackendConfig
from backend.llama_api import bearer, server_root, slots_url

if TYPE_CHECKING:
    from backend.proxy.draft import RequestDraft

# The Anthropic paths llama-server (and LiteLLM) serve.
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


def no_release() -> None:
    """The release call of an upstream that needs no lease bookkeeping."""


class UpstreamUnavailable(Exception):
    """The upstream cannot take requests; the message says why and what to do."""


class Upstream(Protocol):
    """What the front proxy needs from whatever serves Anthropic /v1/messages."""

    @property
    def base_url(self) -> str: ...

    @property
    def paired(self) -> bool:
        """True when calls go through the backend leg (hang-ups can be passed on)."""
        ...

    def acquire(self) -> tuple[str, Callable[[], None]]:
        """The base URL for one request, and the call that ends its lease (for draining)."""
        ...

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]: ...

    async def wait_ready(self, timeout: float) -> None:
        """Return when requests can be sent; raise UpstreamUnavailable otherwise."""
        ...

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        """The `model` value the upstream expects for this route."""
        ...

    def describe_unreachable(self, exc: BaseException) -> str: ...

    @property
    def direct(self) -> bool:
        """True when requests go straight to llama-server (`route: native`): each on a new connection,
        and its own count_tokens can size a `message_start` it left out."""
        ...

    async def prompt_usage(self, session: ClientSession, body: bytes) -> tuple[int | None, int | None]:
        """(new, cached) prompt tokens of this request, asked while its answer streams: what a `message_start`
        llama-server left out would have said (None: not known; always, unless `direct`)."""
        ...

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        """The upstream could not be reached (nothing was sent): switch to another member of a group of
        native backends, or False when there is none to try (always, but for such a group)."""
        ...


class Relayed:
    """What every upstream but llama-server itself answers: not direct, no token count, no fail-over."""

    direct = False

    async def prompt_usage(self, session: ClientSession, body: bytes) -> tuple[int | None, int | None]:
        return None, None

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        return False


class Starting(Relayed):
    """The upstream before the bridge has started (no LiteLLM made yet): requests are told to wait."""

    paired = False
    base_url = ""

    def acquire(self) -> tuple[str, Callable[[], None]]:
        return "", no_release

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        return {}

    async def wait_ready(self, timeout: float) -> None:
        raise UpstreamUnavailable("ccbridge is starting; try again in a moment.")

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        return backend.name

    def describe_unreachable(self, exc: BaseException) -> str:
        return "ccbridge is starting; try again in a moment."


STARTING = Starting()
"""The upstream of a routing made before the bridge started."""


class ExternalUpstream(Relayed):
    """An already running LiteLLM (or any Anthropic-compatible server): `litellm.url`.

    The client's own key is passed through unless `litellm.api_key` is set.
    """

    paired = False

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._url = url.rstrip("/")
        self._api_key = api_key

    @property
    def base_url(self) -> str:
        return self._url

    def acquire(self) -> tuple[str, Callable[[], None]]:
        return self._url, no_release

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        if self._api_key:
            return {**bearer(self._api_key), "x-api-key": self._api_key}
        return {k: v for k, v in client_headers.items() if k in ("authorization", "x-api-key")}

    async def wait_ready(self, timeout: float) -> None:
        return None

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        if rule.model:
            return rule.model
        return backend.model if backend.model != "auto" else backend.name

    def describe_unreachable(self, exc: BaseException) -> str:
        return (
            f"ccbridge cannot reach the upstream at {self._url} (litellm.url in ccbridge.yaml): "
            f"{exc or type(exc).__name__}. Start that server, or remove litellm.url so ccbridge "
            f"starts its own LiteLLM."
        )


async def count_prompt_tokens(session: ClientSession, url: str, body: bytes, headers: dict[str, str]) -> int | None:
    """llama-server's count of a Messages request's prompt (`url`: its /v1/messages/count_tokens); None
    when it cannot tell. llama-server's Anthropic stream sometimes leaves out `message_start`, the only
    event that carries the prompt's size."""
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json", **headers},
                                timeout=ClientTimeout(total=10)) as resp:
            value = (await resp.json(content_type=None)).get("input_tokens") if resp.status == 200 else None
    except (TimeoutError, ClientError, OSError, ValueError, AttributeError):
        return None
    return _count(value)


def _count(value: Any) -> int | None:
    """A token count from llama-server's JSON: a non-negative int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


async def read_slots(session: ClientSession, root: str, headers: dict[str, str]) -> list[Any] | None:
    """llama-server's `/slots` list; None when it cannot tell (`--no-slots`, an error)."""
    try:
        async with session.get(slots_url(root), headers=headers, timeout=ClientTimeout(total=5)) as resp:
            slots = await resp.json(content_type=None) if resp.status == 200 else None
    except (TimeoutError, ClientError, OSError, ValueError):
        return None
    return slots if isinstance(slots, list) else None


def running_prompt_cache(slots: list[Any], prompt_tokens: int) -> int | None:
    """How much of a prompt of `prompt_tokens` llama-server took from its cache, for a request it is
    answering now: the busy slot that has read that many (cached plus processed) and decoded a token.
    None when no slot fits, or fitting slots disagree. (A finished request's slot has forgotten it:
    llama-server clears a slot's counts when it lets go of the request.)"""
    found = set()
    for slot in slots:
        if not isinstance(slot, dict) or not slot.get("is_processing"):
            continue
        cached, processed = _count(slot.get("n_prompt_tokens_cache")), _count(slot.get("n_prompt_tokens_processed"))
        steps = slot.get("next_token")
        step = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else {}
        if cached is not None and processed is not None and cached + processed == prompt_tokens and (
                _count(step.get("n_decoded")) or 0) >= 1:
            found.add(cached)
    return found.pop() if len(found) == 1 else None


class PromptSizer:
    """The native route's stand-in for the usage of a `message_start` llama-server left out. It leaves
    it out when its first token is part of a UTF-8 character: its stream holds back partial
    characters, and only the partial result of the first token carries `message_start`."""

    def __init__(self, upstream: Upstream, session: ClientSession, draft: RequestDraft, body: bytes) -> None:
        self._upstream, self._session, self._draft, self._body = upstream, session, draft, body

    async def measure(self) -> None:
        """Ask, while the answer streams, for the prompt's new and cached tokens (for a routed request)."""
        if self._draft.routed_backend is not None:
            self._draft.input_tokens, self._draft.cache_read_tokens = await self._upstream.prompt_usage(
                self._session, self._body)


class NativeUpstream:
    """`route: native`: llama-server's own Anthropic endpoint, no LiteLLM in between.

    A hang-up closes our connection to llama-server, which stops a streaming
    generation at once. The client's key is never passed on; the backend's own
    `api_key` is sent when set.
    """

    paired = False
    direct = True

    def __init__(self, backend: BackendConfig, resolved: Callable[[BackendConfig], str | None] | None = None) -> None:
        self._backend = backend
        self._root = server_root(backend.api_base)
        self._resolved = resolved

    @property
    def base_url(self) -> str:
        return self._root

    def acquire(self) -> tuple[str, Callable[[], None]]:
        return self._root, no_release

    def auth_headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        key = self._backend.api_key
        return {**bearer(key), "x-api-key": key} if key else {}

    async def wait_ready(self, timeout: float) -> None:
        return None

    def model_for(self, rule: AliasRule, backend: BackendConfig) -> str:
        if rule.model:
            return rule.model
        if backend.model != "auto":
            return backend.model
        return (self._resolved(backend) if self._resolved else None) or backend.name

    def describe_unreachable(self, exc: BaseException) -> str:
        return (
            f"ccbridge: cannot reach backend '{self._backend.name}' at {self._root} "
            f"({exc or type(exc).__name__}). Is llama-server running? Start it, or fix "
            f"backends.{self._backend.name}.api_base."
        )

    async def prompt_usage(self, session: ClientSession, body: bytes) -> tuple[int | None, int | None]:
        """llama-server's count_tokens for the prompt's size and, asked at the same time, `/slots` for the
        part of it the slot serving this request took from its cache (`running_prompt_cache`)."""
        headers = self.auth_headers({})
        total, slots = await asyncio.gather(
            count_prompt_tokens(session, self._root + COUNT_TOKENS_PATH, body, headers),
            read_slots(session, self._root, headers))
        cached = running_prompt_cache(slots, total) if total is not None and slots is not None else None
        return (total if cached is None or total is None else total - cached), cached

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        return False
