"""How a request ended, in words and in its record.

The front proxy's last steps that need nothing of the proxy's own state: an
upstream error re-worded so it says what to fix (`reworded`), the stream
meter's figures on the draft (`apply_meter`), and the draft frozen into its
`RequestRecord` with what the paired backend call saw and, for a prompt-cache
miss, why (`final_record`).
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from backend.events import RequestRecord
from backend.proxy.draft import RequestDraft
from backend.proxy.errors import context_overflow, context_overflow_message, error_type_for, extract_message
from backend.proxy.misses import MissExplainer
from backend.proxy.pairing import Pair
from backend.proxy.sse import AnthropicStreamMeter


def apply_meter(draft: RequestDraft, meter: AnthropicStreamMeter) -> None:
    """What the stream meter read (usage, time to first content) onto the draft."""
    draft.merge_usage(meter.record_fields())
    if meter.first_content_at is not None:
        draft.ttft_ms = (meter.first_content_at - draft.t0) * 1000.0
        draft.first_at = meter.first_content_at


def reworded(status: int, data: bytes, draft: RequestDraft, pair: Pair | None,
             config_path: str) -> tuple[int, str, str]:
    """An upstream error as (status, message, error type) that says what is wrong and how to fix it."""
    message = extract_message(data) or f"upstream answered HTTP {status}"
    error_type: str | None = None
    if pair is not None and pair.unreachable:
        status, message = 502, (
            f"ccbridge: {pair.unreachable}. Is llama-server running? Start it, or fix "
            f"backends.{pair.backend}.api_base in {config_path}."
        )
    elif pair is not None and (overflow := context_overflow(pair.backend_error)):
        status, error_type = 400, "invalid_request_error"
        message = context_overflow_message(pair.backend or "?", *overflow)
    elif overflow := context_overflow(data):
        status, error_type = 400, "invalid_request_error"
        message = context_overflow_message(draft.routed_backend or "?", *overflow)
    return status, message, error_type or error_type_for(status)


def final_record(draft: RequestDraft, response: web.StreamResponse | None, pair: Pair | None,
                 misses: MissExplainer | None) -> RequestRecord:
    """The request's record: the status it ended with, what its backend call saw (`pair`), and why
    the prompt cache missed when `misses` can tell."""
    timings = None
    if pair is not None:
        draft.backend_calls = pair.calls
        if pair.backend and pair.backend != draft.routed_backend:
            # a group member failed and LiteLLM fell back to another: the leg saw which answered
            draft.routed_backend, draft.routed_model = pair.backend, pair.model
        if pair.model and not draft.routed_model:
            draft.routed_model = pair.model
        timings = pair.timings
    status = response.status if response is not None else draft.sent_status
    if status is None and draft.client_hung_up:
        status = 499  # nginx's "client closed request": it left before any answer
    elif status is None and draft.error:
        status = 503  # ccbridge stopped before any answer was sent
    if response is not None and status and status >= 400 and not draft.error:
        body = getattr(response, "body", None)
        if isinstance(body, bytes | bytearray):
            draft.fail(extract_message(bytes(body)) or f"HTTP {status}")
    record = draft.to_record(status, timings)
    if misses is not None and draft.shape is not None and status == 200:
        cached, fresh = record.backend_cache_n, record.backend_prompt_n
        if cached is None or fresh is None:  # the native route: llama-server's Anthropic usage
            cached, fresh = record.cache_read_tokens, record.input_tokens
        draft.shape = replace(draft.shape, backend=record.routed_backend or draft.shape.backend)
        if why := misses.explain(draft.shape, cached, fresh):
            record = replace(record, miss_reason=why)
    return record
