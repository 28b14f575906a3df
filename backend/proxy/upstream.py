"""Where the front proxy sends requests: a managed LiteLLM, a given URL, or llama-server itself.

`backend.proxy.routing` chooses among them, once per config; the front asks
only what the `Upstream` protocol offers.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Protocol

from aiohttp import ClientError, ClientSession, ClientTimeout

from backend.config.model import AliasRule, BackendConfig
from backend.llama_api import bearer, server_root

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

    async def count_tokens(self, session: ClientSession, body: bytes) -> int | None:
        """llama-server's count of this request's prompt tokens (None: not known; always, unless `direct`)."""
        ...

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        """The upstream could not be reached (nothing was sent): switch to another member of a group of
        native backends, or False when there is none to try (always, but for such a group)."""
        ...


class Relayed:
    """What every upstream but llama-server itself answers: not direct, no token count, no fail-over."""

    direct = False

    async def count_tokens(self, session: ClientSession, body: bytes) -> int | None:
        return None

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
    return value if isinstance(value, int) and not isinstance(value, bool) else None

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

    async def count_tokens(self, session: ClientSession, body: bytes) -> int | None:
        """Asks llama-server's own count_tokens for this request's prompt size: the native route's stand-in
        when llama-server left out `message_start` (the only event with the input usage)."""
        return await count_prompt_tokens(session, self._root + COUNT_TOKENS_PATH, body, self.auth_headers({}))

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        return False
