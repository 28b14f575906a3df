"""A group of `route: native` backends: the front itself fails over to the next member.

The native route skips LiteLLM, so nothing else can move a request when its backend is
down. `NativeGroupUpstream` is the chosen member's `NativeUpstream`, plus the other members
in the order to try them; when the connection to the current one cannot be made (nothing
was sent, so nothing can run twice), the front asks it to `fail_over` and sends the same
request to the next one. Once a backend has answered, a broken answer is not retried (the
client has part of it); that ends the request with an error, as for a single backend.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence

from backend.config.model import BackendConfig
from backend.llama_api import server_root
from backend.proxy.balance import BackendHealth
from backend.proxy.draft import RequestDraft
from backend.proxy.upstream import NativeUpstream

_AUTH_HEADERS = ("authorization", "x-api-key")


class NativeGroupUpstream(NativeUpstream):
    """The member being tried now, and the ones left (see the module docstring)."""

    def __init__(self, members: Sequence[BackendConfig], health: BackendHealth,
                 resolved: Callable[[BackendConfig], str | None] | None = None) -> None:
        super().__init__(members[0], resolved)
        self._left = list(members[1:])
        self._health = health
        self.tried: list[str] = [members[0].name]

    @property
    def backend(self) -> BackendConfig:
        """The member the request goes to now."""
        return self._backend

    def fail_over(self, exc: BaseException, headers: MutableMapping[str, str], draft: RequestDraft) -> bool:
        """The current member could not be reached: note it, switch to the next member (its key in
        `headers`, its name on the record). False when no member is left."""
        failed = self._backend
        self._health.failed(failed.name, f"cannot connect to {self._root}: {exc or type(exc).__name__}")
        if not self._left:
            return False
        backend = self._left.pop(0)
        self._backend, self._root = backend, server_root(backend.api_base)
        self.tried.append(backend.name)
        for name in _AUTH_HEADERS:
            headers.pop(name, None)
        headers.update(self.auth_headers({}))
        draft.routed_backend = backend.name
        draft.routed_model = (backend.model if backend.model != "auto" else None) or (
            self._resolved(backend) if self._resolved else None)
        return True

    def describe_unreachable(self, exc: BaseException) -> str:
        if len(self.tried) == 1:
            return super().describe_unreachable(exc)
        return (f"ccbridge: cannot reach any backend of the group {', '.join(self.tried)} (the last, "
                f"'{self._backend.name}' at {self._root}: {exc or type(exc).__name__}). Is llama-server running "
                "on them? Start one, or fix their api_base in ccbridge.yaml.")
