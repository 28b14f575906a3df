"""The lean client of the relayed upstream (backend/proxy/relay_client.py), against real loopback servers.

Each test runs a small asyncio server that writes raw HTTP, so what the client must cope with
(keep-alive, chunked and close-delimited bodies, a connection closed while idle, a stall, a
hang-up) is on the wire exactly, and what the server saw can be checked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest
import uvloop
from aiohttp import ClientConnectorError, ClientPayloadError, ServerDisconnectedError, ServerTimeoutError

from backend.proxy import relay_client
from backend.proxy.body import read_answer
from backend.proxy.relay_client import RelayClient, lean_target

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def _run(main: Callable[[int, list], Awaitable[None]], handler: Handler) -> list:
    """Serve `handler` on a free loopback port and run `main(port, seen)`; `seen` collects what the server saw."""
    seen: list = []

    async def outer() -> None:
        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(("connection", writer.get_extra_info("peername")[1]))
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                seen.append(("gone", type(exc).__name__))
            finally:
                writer.close()

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await main(port, seen)

    uvloop.run(outer())
    return seen


async def _whole(client: RelayClient, port: int, path: str = "/v1", method: str = "POST", body: bytes = b"{}",
                 **headers: str) -> tuple[int, bytes]:
    """One request through `client` to the test server, its answer read whole and its connection released."""
    up = await client.request(method, lean_target(f"http://127.0.0.1:{port}{path}"), headers, body, read_timeout=5)
    try:
        return up.status, await read_answer(up, 16 << 20)
    finally:
        up.release()


def _answer(body: bytes, *, keep: bool = True) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n%s"
            % (len(body), b"" if keep else b"Connection: close\r\n", body))


def test_lean_target_takes_plain_http_only():
    assert lean_target("http://127.0.0.1:4000/v1/messages?beta=true") == (
        "127.0.0.1", 4000, b"/v1/messages?beta=true", b"127.0.0.1:4000")
    assert lean_target("http://example.test/v1/messages").host_header == b"example.test"
    assert lean_target("http://[::1]:8082/v1/messages") == ("::1", 8082, b"/v1/messages", b"[::1]:8082")
    assert lean_target("https://127.0.0.1:4000/v1/messages") is None  # aiohttp's client speaks TLS
    assert lean_target("http://user:secret@127.0.0.1:4000/v1") is None


def test_answers_come_whole_and_the_connection_is_kept_for_the_next_request():
    async def handler(reader, writer):
        while True:
            head, body = await _read_request(reader)
            writer.write(_answer(b'{"echo": %d, "head": "%s"}' % (len(body), head.split(b"\r\n")[0])))
            await writer.drain()

    async def main(port, seen):
        client = RelayClient()
        target = lean_target(f"http://127.0.0.1:{port}/v1/messages")
        answers = []
        for size in (3, 70_000):  # a big body goes out in its own write
            up = await client.request("POST", target, {"x-ccbridge-id": "abc"}, b"x" * size, read_timeout=5)
            assert up.status == 200 and up.content_type == "application/json" and up.content_length is not None
            answers.append(await read_answer(up, 1 << 20))
            up.release()
        assert answers == [b'{"echo": 3, "head": "POST /v1/messages HTTP/1.1"}',
                           b'{"echo": 70000, "head": "POST /v1/messages HTTP/1.1"}']
        client.close()

    seen = _run(main, handler)
    assert [s for s in seen if s[0] == "connection"].__len__() == 1  # the second request reused the first connection


def test_a_chunked_stream_is_handed_over_as_it_arrives():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for event in (b"event: one\ndata: {}\n\n", b"event: two\ndata: {}\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.2)  # the client must have the first event before the second is written
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main(port, seen):
        client = RelayClient()
        up = await client.request("POST", lean_target(f"http://127.0.0.1:{port}/v1/messages"), {}, b"{}",
                                  read_timeout=5)
        assert up.content_type == "text/event-stream" and up.content_length is None
        loop = asyncio.get_running_loop()
        got = []
        while chunk := await up.content.readany():
            got.append((chunk, loop.time()))
        assert [c for c, _ in got] == [b"event: one\ndata: {}\n\n", b"event: two\ndata: {}\n\n"]
        assert got[1][1] - got[0][1] > 0.1
        up.release()
        client.close()

    _run(main, handler)


def test_an_answer_without_length_ends_with_its_connection_which_is_not_reused():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"part two")
        await writer.drain()

    async def main(port, seen):
        client = RelayClient()
        for _ in range(2):
            assert await _whole(client, port, "/x", "GET", b"") == (200, b"part one, part two")
        client.close()

    seen = _run(main, handler)
    assert len([s for s in seen if s[0] == "connection"]) == 2


def test_an_idle_connection_the_upstream_closed_is_not_handed_out():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(_answer(b"{}"))
        await writer.drain()  # then the handler returns: the server closes the idle connection

    async def main(port, seen):
        client = RelayClient()
        for _ in range(3):
            assert await _whole(client, port) == (200, b"{}")
            await asyncio.sleep(0.1)  # the close arrives
        client.close()

    seen = _run(main, handler)
    assert len([s for s in seen if s[0] == "connection"]) == 3


def test_a_connection_closed_before_the_answer_is_a_server_disconnect(monkeypatch):
    async def handler(reader, writer):
        await _read_request(reader)  # read the request and close without an answer

    async def main(port, seen):
        client = RelayClient()
        with pytest.raises(ServerDisconnectedError):
            await client.request("POST", lean_target(f"http://127.0.0.1:{port}/v1"), {}, b"{}", read_timeout=5)

    _run(main, handler)


def test_an_idle_connection_past_its_time_is_dropped(monkeypatch):
    monkeypatch.setattr(relay_client, "IDLE_SECONDS", 0.05)

    async def handler(reader, writer):
        while True:
            await _read_request(reader)
            writer.write(_answer(b"{}"))
            await writer.drain()

    async def main(port, seen):
        client = RelayClient()
        for _ in range(2):
            assert await _whole(client, port) == (200, b"{}")
            await asyncio.sleep(0.1)
        client.close()

    seen = _run(main, handler)
    assert len([s for s in seen if s[0] == "connection"]) == 2


def test_no_upstream_listening_is_a_connector_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused

        async def main() -> None:
            with pytest.raises(ClientConnectorError, match=f"127.0.0.1:{port}"):
                await RelayClient().request("POST", lean_target(f"http://127.0.0.1:{port}/v1"), {}, b"{}",
                                            read_timeout=5)

        uvloop.run(main())


def test_a_stalled_answer_times_out_and_a_hang_up_reaches_the_upstream():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client's end of the connection
        raise ConnectionResetError

    async def main(port, seen):
        client = RelayClient()
        up = await client.request("POST", lean_target(f"http://127.0.0.1:{port}/v1"), {}, b"{}", read_timeout=0.3)
        assert await up.content.readany() == b"hello"
        with pytest.raises(ServerTimeoutError):
            await up.content.readany()
        for _ in range(50):
            if ("gone", "ConnectionResetError") in seen:
                break
            await asyncio.sleep(0.02)
        with pytest.raises((ServerTimeoutError, ClientPayloadError)):
            await up.content.readany()  # the answer stays broken
        up.release()

    seen = _run(main, handler)
    assert ("gone", "ConnectionResetError") in seen


def test_closing_mid_answer_drops_the_connection_and_a_waiting_reader_learns_it():
    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()
        raise ConnectionResetError

    async def main(port, seen):
        client = RelayClient()
        up = await client.request("POST", lean_target(f"http://127.0.0.1:{port}/v1"), {}, b"{}", read_timeout=5)
        reading = asyncio.ensure_future(up.content.readany())
        await asyncio.sleep(0.05)
        up.close()  # what the proxy does when Claude Code hangs up, or ccbridge stops
        with pytest.raises(ClientPayloadError):
            await asyncio.wait_for(reading, 2)
        for _ in range(50):
            if ("gone", "ConnectionResetError") in seen:
                break
            await asyncio.sleep(0.02)

    seen = _run(main, handler)
    assert ("gone", "ConnectionResetError") in seen


def test_a_header_with_a_line_break_is_refused_before_anything_is_sent():
    async def main() -> None:
        with pytest.raises(ValueError, match="line break"):
            await RelayClient().request("POST", lean_target("http://127.0.0.1:9/v1"), {"x-a": "b\r\nx-evil: 1"},
                                        b"{}", read_timeout=5)

    uvloop.run(main())


def test_a_reader_that_falls_behind_stops_the_connection_reading_and_loses_nothing():
    size = 8 * 1024 * 1024

    async def handler(reader, writer):
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % size)
        for i in range(size // 65536):
            writer.write(bytes([i % 251]) * 65536)
            await writer.drain()

    async def main(port, seen):
        client = RelayClient()
        up = await client.request("POST", lean_target(f"http://127.0.0.1:{port}/v1"), {}, b"{}", read_timeout=5)
        await asyncio.sleep(0.5)  # the relay is slow: its client reads slowly
        held = up._buffered
        data = await up.content.read()
        assert held <= 2 * relay_client._HIGH_WATER, held  # the rest waited in the sockets, not in memory
        assert len(data) == size and data == b"".join(bytes([i % 251]) * 65536 for i in range(size // 65536))
        up.release()
        client.close()

    _run(main, handler)


def test_an_informational_answer_before_the_real_one_is_skipped():
    async def handler(reader, writer):
        while True:
            await _read_request(reader)
            for part in (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n",
                         _answer(b'{"ok": true}')):
                writer.write(part)  # each on its own: the client must not take the first for the answer
                await writer.drain()
                await asyncio.sleep(0.05)

    async def main(port, seen):
        client = RelayClient()
        for _ in range(2):  # and the connection is still fit for the next request
            assert await _whole(client, port) == (200, b'{"ok": true}')
        client.close()

    seen = _run(main, handler)
    assert len([s for s in seen if s[0] == "connection"]) == 1
