"""The streaming relay: an upstream's SSE answer to the client, whole events at a time.

`pump` is the loop the front proxy runs for every streamed answer: frame the
upstream's bytes into events, fix what Claude Code cannot read (a bare error, a
missing `message_start`, anything after the stream's end), meter usage and time
to first token, hold text that may be a tool call written as text, and write.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import ClientConnectionError, ClientPayloadError, ClientResponse, ServerTimeoutError, web

from backend.events import Event, RequestProgress
from backend.proxy.draft import RequestDraft
from backend.proxy.relay_client import LeanAnswer
from backend.proxy.sse import AnthropicStreamMeter, SSEFramer
from backend.proxy.stream_fix import BARE_ERROR, message_start_event, rewrite_bare_errors, through_end
from backend.proxy.toolrepair import StreamRepair

# what reading an upstream's answer raises when the upstream (not ccbridge, not the client) broke it
UPSTREAM_BROKE = (TimeoutError, ClientPayloadError, ClientConnectionError, ServerTimeoutError)


async def pump(up: ClientResponse | LeanAnswer, response: web.StreamResponse, draft: RequestDraft,
               meter: AnthropicStreamMeter, *, measure: Callable[[], Awaitable[None]] | None,
               repair: StreamRepair | None,
               publish: Callable[[Event], None], stopping: Callable[[], bool]) -> str | None:
    """Relay whole events until the stream ends (its `message_stop` or `error`, or the upstream's end);
    returns why it broke off, or None. `measure`: the native route's question for the prompt's usage
    (onto the draft), for a stand-in `message_start`. `repair`: holds text that may be a tool call written as text.
    `publish` tells the bus when generation starts; `stopping` says whether ccbridge is stopping."""
    repair_start = measure is not None
    framer = SSEFramer()
    generating = ended = False
    while True:
        try:
            chunk = await up.content.readany()
        except UPSTREAM_BROKE as exc:
            if stopping():
                return "ccbridge stopped while this request was in flight; start it again (`ccbridge serve`)."
            return f"ccbridge: the upstream stream broke off: {exc or type(exc).__name__}"
        # At the end, an event still without its blank line is incomplete: SSE readers drop it,
        # and so does ccbridge (sending it would glue it to the error event that follows).
        data = framer.feed(chunk) if chunk else b""
        if data and not ended:  # after the stream's end, the rest is read (the connection is kept) unsent
            if BARE_ERROR in data:
                data = rewrite_bare_errors(data)
            if b"message_stop" in data or b"error" in data:
                data, ended = through_end(framer.events(data))
            # the meter reads what the upstream said, not the stand-in below (its usage is unknown)
            meter.feed_events(data, time.monotonic())
            if not generating and meter.first_content_at is not None:
                generating = True
                publish(RequestProgress(draft.id, "generating", time.time()))
            if repair_start and measure is not None and data.strip():
                repair_start = False
                if not data.lstrip().startswith(b"event: message_start"):
                    await measure()
                    data = message_start_event(draft.id, draft.routed_model, draft.input_tokens,
                                               draft.cache_read_tokens) + data
            if repair is not None:
                data = repair.feed(data)
                if not data:
                    continue
            draft.keep_answer(data)
            try:
                await response.write(data)
            except ConnectionError:
                # The client is gone. aiohttp's ClientConnectionResetError is also a
                # ClientConnectionError, so it must be caught here, not as an upstream failure.
                draft.client_hung_up = True
                return None
            if meter.error is not None:
                return None
        if not chunk:
            return None
