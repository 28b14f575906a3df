"""Reading a request body, or an upstream's whole answer: one reader each for the front proxy and the leg.

Both sides must accept the same bodies (`proxy.max_body_mb`): a 1.3 MB Claude
Code request (many MCP tools, a pasted image, a long session) that the front
accepted must not be refused by the leg behind LiteLLM. aiohttp's own
`request.read()` caps bodies at `client_max_size` (1 MiB by default), so the
body is read here, streamed, against our own limit and deadline. A non-streamed
answer (LiteLLM's, llama-server's) is held whole in memory too, so it gets the same
limit (`read_answer`): a runaway upstream cannot make ccbridge buffer without end.
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientPayloadError, ClientResponse, StreamReader, web

from backend.proxy.relay_client import LeanAnswer

# Seconds a client may take to send its whole request body (a stalled upload is cut off).
BODY_TIMEOUT = 60.0


class BodyRefused(Exception):
    """The body cannot be taken; `status` and the message say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AnswerTooLarge(ClientPayloadError):
    """An upstream's non-streamed answer is over the limit (a payload error: callers treat it as a broken answer)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"it is over {limit / 1024 / 1024:g} MiB, the most ccbridge holds of an answer "
                         "(proxy.max_body_mb in ccbridge.yaml; raise it, or ask for less with max_tokens)")


def byte_limit(max_body_mb: float) -> int:
    return int(max_body_mb * 1024 * 1024)


def _arrived_whole(stream: StreamReader | LeanAnswer) -> bytes | None:
    """All of a body that has already arrived in full (its end was read), or None if more is to come."""
    return stream.read_nowait() if stream.is_eof() else None


async def read_answer(response: ClientResponse | LeanAnswer, limit: int) -> bytes:
    """An upstream's whole answer, at most `limit` bytes; AnswerTooLarge past it (nothing more is read)."""
    if response.content_length is not None and response.content_length > limit:
        raise AnswerTooLarge(limit)
    data = _arrived_whole(response.content)  # most plain answers come with their headers
    if data is not None:
        if len(data) > limit:
            raise AnswerTooLarge(limit)
        return data
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise AnswerTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: web.BaseRequest, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, at most `limit` bytes, within `timeout` seconds (default BODY_TIMEOUT);
    BodyRefused otherwise."""
    timeout = BODY_TIMEOUT if timeout is None else timeout
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefused(
            413,
            f"request body is {request.content_length} bytes; ccbridge accepts at most {limit} "
            "(proxy.max_body_mb in ccbridge.yaml).",
        )
    if not request.body_exists:
        return b""
    data = _arrived_whole(request.content)  # most requests: no waiting, no timer
    if data is not None:
        if len(data) > limit:
            raise BodyRefused(413, f"request body over {limit} bytes (proxy.max_body_mb in ccbridge.yaml).")
        return data
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"request body over {limit} bytes (proxy.max_body_mb in ccbridge.yaml).")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyRefused(408, f"the request body did not arrive within {timeout:.0f} s; closing.") from None
    return b"".join(chunks)
