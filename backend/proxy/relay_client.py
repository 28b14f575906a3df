"""A lean HTTP/1.1 client for the relayed upstream: LiteLLM, or the server at `litellm.url`.

Every Claude Code request crosses this hop, so its cost is the proxy's cost. aiohttp's
client spends about 0.2 ms of CPU per request on work this hop never needs (measured on
this machine: a bare aiohttp server forwarding with aiohttp's client added +0.43 ms p50
to a loopback call; forwarding with this client, +0.21 ms). What is left here:
- parsing is httptools' (llhttp, the parser uvicorn uses and aiohttp's own C parser is
  built on); this module only writes the request line and headers, pools keep-alive
  connections per host and port, and hands the answer's bytes over as they arrive;
- plain `http` to a host and port, a request with its whole body, an answer framed by
  Content-Length, chunked, or the connection's end. The caller sends anything else
  (https, HEAD) through aiohttp; see `lean_target`;
- errors are aiohttp's own classes (ClientConnectorError, ServerDisconnectedError,
  ClientPayloadError, ServerTimeoutError), so the proxy handles both clients alike;
- the answer has the parts of aiohttp's `ClientResponse` the relay reads: `status`,
  `headers`, `content_type`, `content_length`, `content` (`readany`, `iter_any`,
  `is_eof`, `read_nowait`), `close()` and `release()`. `close()` drops the connection,
  which is how LiteLLM (and the leg behind it) learns that the client hung up.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Mapping
from typing import NamedTuple, cast

import httptools
from aiohttp import ClientConnectorError, ClientPayloadError, ServerDisconnectedError, ServerTimeoutError
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

# An idle connection is dropped after this long: under uvicorn's (LiteLLM's) 5 s keep-alive,
# so the pool never hands out a connection the other side has just closed.
IDLE_SECONDS = 2.0
CONNECT_SECONDS = 5.0
# Past this many unread bytes the connection stops reading until the relay catches up.
_HIGH_WATER = 256 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class LeanTarget(NamedTuple):
    """Where a request goes: host and port to connect to, the request target, the Host header."""

    host: str
    port: int
    target: bytes
    host_header: bytes


@functools.lru_cache(maxsize=64)
def lean_target(url: str) -> LeanTarget | None:
    """The target of an `http` URL this client can send to; None for anything else (https, no host)."""
    parsed = URL(url, encoded=True)
    if parsed.scheme != "http" or not parsed.host or parsed.user or parsed.password:
        return None
    port = parsed.port or 80
    host = f"[{parsed.host}]" if ":" in parsed.host else (parsed.raw_host or "")  # an IPv6 literal: brackets
    host_header = host if parsed.is_default_port() else f"{host}:{port}"
    target = parsed.raw_path_qs or "/"
    return LeanTarget(parsed.host, port, target.encode("ascii"), host_header.encode("idna"))


def _encode(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise ValueError("a header name or value holds a line break")
    return text.encode("utf-8", "surrogateescape")


class LeanAnswer:
    """One upstream answer, read as it arrives. `content` is the answer itself (aiohttp's shape)."""

    __slots__ = ("status", "headers", "content_type", "content_length", "_conn", "_chunks", "_buffered",
                 "_waiter", "_done", "_error", "_read_timeout", "_paused", "_reusable")

    def __init__(self, conn: _Connection, read_timeout: float | None) -> None:
        self.status = 0
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.content_type = "application/octet-stream"
        self.content_length: int | None = None
        self._conn: _Connection | None = conn
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: BaseException | None = None
        self._read_timeout = read_timeout
        self._paused = False
        self._reusable = False

    @property
    def content(self) -> LeanAnswer:
        return self

    # -- what the connection tells it ------------------------------------------
    def _headers_done(self, status: int, raw: list[tuple[bytes, bytes]]) -> bool:
        """Takes the answer's head; True when its body ends only with the connection (no length, not chunked)."""
        self.status = status
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in raw:
            headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        self.headers = CIMultiDictProxy(headers)
        ctype = headers.get("content-type")
        if ctype:
            self.content_type = ctype.partition(";")[0].strip().lower()
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            self.content_length = int(length)
        self._wake()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return length is None and not chunked and status not in _NO_BODY_STATUS

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self._conn is not None:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _end(self, reusable: bool) -> None:
        self._done = True
        self._reusable = reusable
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if not self._done and self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _timed_out(self) -> None:
        self._fail(ServerTimeoutError(f"Timeout on reading data from socket ({self._read_timeout:g} s)"))
        self.close()

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(self._read_timeout, self._timed_out) if self._read_timeout else None
        try:
            await self._waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _headers(self) -> None:
        while not self.status:
            if self._error is not None:
                raise self._error
            await self._wait()

    # -- what the relay calls ---------------------------------------------------
    async def readany(self) -> bytes:
        """What has arrived (waiting for some if nothing has); b"" at the answer's end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            await self._wait()
        return self.read_nowait()

    def read_nowait(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused and self._conn is not None:
            self._paused = False
            self._conn.resume()
        return data

    def is_eof(self) -> bool:
        """True when the whole answer has arrived (some of it may still be unread)."""
        return self._done

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_any()])

    def close(self) -> None:
        """Drop the connection: the upstream sees the hang-up. What was not read is lost."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.drop()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if the answer ended cleanly."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._reusable and self._error is None and not self._chunks:
            conn.park()
        else:
            conn.drop()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one answer at a time."""

    def __init__(self, pool: list[_Connection]) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._raw: list[tuple[bytes, bytes]] = []
        self._until_close = False
        self._informational = False
        self.transport: asyncio.Transport | None = None
        self.answer: LeanAnswer | None = None
        self.lost = False
        self.idle_since = 0.0

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if self.answer is None:  # bytes nobody asked for: the connection is not fit to reuse
            self.drop()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.answer._fail(ClientPayloadError(f"the upstream's answer is not valid HTTP: {exc}"))
            self.drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        answer, self.answer = self.answer, None
        if answer is None:
            return
        if not answer.status:
            answer._fail(ServerDisconnectedError("the upstream closed the connection before answering"))
        elif self._until_close and not answer._done:
            answer._end(reusable=False)  # an answer without length ends with its connection
        else:
            answer._fail(ClientPayloadError(f"Response payload is not completed: {exc or 'connection closed'}"))

    # -- httptools callbacks --------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        raw, self._raw = self._raw, []
        status = self._parser.get_status_code()
        # An informational answer (100 Continue, 103 Early Hints) comes before the real one: skipped
        self._informational = 100 <= status < 200
        if self.answer is not None and not self._informational:
            self._until_close = self.answer._headers_done(status, raw)

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer._feed(body)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self._informational:
            self.answer._end(reusable=self._parser.should_keep_alive())

    # -- the pool's side --------------------------------------------------------------
    def send(self, head: bytes, body: bytes, answer: LeanAnswer) -> None:
        assert self.transport is not None
        self.answer = answer
        self._until_close = False
        self.transport.writelines((head, body))  # one system call, no copy of the body

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def park(self) -> None:
        self.answer = None
        if self.lost or self.transport is None or self.transport.is_closing():
            return
        self.idle_since = time.monotonic()
        self._pool.append(self)

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.lost = True


class RelayClient:
    """Keep-alive connections to the relayed upstream, per host and port."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def request(self, method: str, target: LeanTarget, headers: Mapping[str, str], body: bytes, *,
                      read_timeout: float | None, fresh: bool = False) -> LeanAnswer:
        """Send one request and wait for the answer's head. `fresh`: on a new connection."""
        head = [method.encode("ascii"), b" ", target.target, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
        for name, value in headers.items():
            head += (_encode(name), b": ", _encode(value), b"\r\n")
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        conn = None if fresh else self._idle_connection((target.host, target.port))
        if conn is None:
            conn = await self._connect(target)
        answer = LeanAnswer(conn, read_timeout)
        try:
            conn.send(b"".join(head), body, answer)
            await answer._headers()
        except BaseException:
            answer.close()  # cancelled (the client hung up) or failed: the upstream sees the connection end
            raise
        return answer

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        if not pool:
            return None
        oldest = time.monotonic() - IDLE_SECONDS
        while pool:
            conn = pool.pop()  # the most recently used first
            if not conn.lost and conn.idle_since > oldest:
                return conn
            conn.drop()
        return None

    async def _connect(self, target: LeanTarget) -> _Connection:
        loop = asyncio.get_running_loop()
        pool = self._idle.setdefault((target.host, target.port), [])
        try:
            async with asyncio.timeout(CONNECT_SECONDS):
                _, conn = await loop.create_connection(lambda: _Connection(pool), target.host, target.port)
        except TimeoutError:
            raise ServerTimeoutError(f"Connection timeout to host {target.host}:{target.port}") from None
        except OSError as exc:
            key = ConnectionKey(target.host, target.port, False, True, None, None, None)
            raise ClientConnectorError(key, exc) from exc
        return conn

    def close(self) -> None:
        """Drop every idle connection (ccbridge is stopping)."""
        for pool in self._idle.values():
            for conn in pool:
                conn.drop()
            pool.clear()
