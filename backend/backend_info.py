"""What a model server says about itself: model id, context per slot, slots.

`backend.monitor.llama.probe_backend` fills a `BackendInfo` for `ccbridge env`
and the launcher (to size Claude Code's output cap). Never raises: a missing
value stays None and `error` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

# Claude Code's first turn is ~15k (2.1.197) to ~20k tokens (2.1.330), FACTS: under this it fails,
# and 2.1.330 will not compact before a 100k window.
MIN_CONTEXT = 32_768
COMFORTABLE_CONTEXT = 100_000


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A backend's answers to GET /v1/models and GET /props."""

    name: str
    api_base: str
    reachable: bool
    model: str | None = None
    n_ctx_slot: int | None = None  # context per slot (what one request can use)
    n_ctx_train: int | None = None
    total_slots: int | None = None
    error: str | None = None
    health: str = "unknown"  # GET /health: ok, loading (503 while the model loads), unreachable, error


def output_cap(info: BackendInfo | None, configured: int | None) -> int:
    """A CLAUDE_CODE_MAX_OUTPUT_TOKENS that leaves room for the prompt in the context."""
    cap = 8000
    if info is not None and info.n_ctx_slot:
        cap = min(32_000, max(1024, info.n_ctx_slot // 4))
    if configured:
        cap = min(cap, configured)
    return cap
