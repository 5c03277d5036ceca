"""The consumer's HTTP client against real sockets on 127.0.0.1: tiny servers
that answer exactly what each test needs, including the ways answers go wrong.
Every test runs on asyncio's loop and on uvloop, which the consumer runs on
(``both_loops`` in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from services.consumer.http import AnswerLost, ConnectFailed, Origin, PoolLimits

pytestmark = pytest.mark.both_loops

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


class Server:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[Server]]]:
    started: list[Server] = []

    async def start(script: Script) -> Server:
        server = Server(script)
        server.server = await asyncio.start_server(server._handle, "127.0.0.1", 0)
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.server is not None
        server.server.close()


def keep_answering(answer: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
    return script


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection_and_sends_json(serve) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")

    server = await serve(script)
    origin = Origin(server.url)
    for _ in range(3):
        response = await origin.request("POST", "/payments", b'{"a":1}', timeout=2)
        assert (response.status, response.body) == (200, b"{}")
    assert server.connections == 1
    head, body = seen[0]
    assert head.startswith(b"POST /payments HTTP/1.1\r\n") and body == b'{"a":1}'
    assert b"Content-Type: application/json\r\n" in head and b"Host: 127.0.0.1:" in head


@pytest.mark.asyncio
async def test_chunked_and_close_delimited_bodies(serve) -> None:
    chunked = await serve(keep_answering(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: y\r\n\r\n"))
    origin = Origin(chunked.url)
    assert (await origin.request("GET", "/x", timeout=2)).body == b'{"a":1}'
    assert (await origin.request("GET", "/x", timeout=2)).body == b'{"a":1}'
    assert chunked.connections == 1

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.0 404 Not Found\r\n\r\nnothing here")
        await writer.drain()

    closing = await serve(until_close)
    origin = Origin(closing.url)
    for _ in range(2):
        response = await origin.request("GET", "/payments/x", timeout=2)
        assert (response.status, response.body) == (404, b"nothing here")
    assert closing.connections == 2  # not reused after a close-delimited body


@pytest.mark.asyncio
async def test_headers_are_read_case_insensitively(serve) -> None:
    server = await serve(keep_answering(
        b"HTTP/1.1 429 Too Many Requests\r\nRETRY-AFTER: 3\r\ncontent-length: 0\r\n\r\n"))
    response = await Origin(server.url).request("GET", "/payments/service-health", timeout=2)
    assert (response.status, response.headers[b"retry-after"]) == (429, b"3")


@pytest.mark.asyncio
async def test_nothing_listening_is_a_connect_failure() -> None:
    with pytest.raises(ConnectFailed):
        await Origin("http://127.0.0.1:1").request("POST", "/payments", b"{}", timeout=2)


@pytest.mark.asyncio
async def test_a_slow_answer_is_lost_not_failed(serve) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    server = await serve(slow)
    with pytest.raises(AnswerLost):
        await Origin(server.url).request("POST", "/payments", b"{}", timeout=0.2)


@pytest.mark.asyncio
async def test_a_connection_dropped_mid_answer_is_lost_and_never_reused(serve) -> None:
    calls = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        while True:
            await read_request(reader)
            calls += 1
            if calls == 2:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{")
                await writer.drain()
                return  # closes with the body incomplete
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = await serve(flaky)
    origin = Origin(server.url)
    assert (await origin.request("POST", "/payments", b"{}", timeout=2)).status == 200
    with pytest.raises(AnswerLost):
        await origin.request("POST", "/payments", b"{}", timeout=2)
    assert (await origin.request("POST", "/payments", b"{}", timeout=2)).status == 200
    assert server.connections == 2


@pytest.mark.asyncio
async def test_idle_connections_closed_by_the_server_or_too_old_are_not_reused(serve) -> None:
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()  # then closes: keep-alive not honoured

    server = await serve(one_per_connection)
    origin = Origin(server.url)
    for _ in range(3):
        assert (await origin.request("GET", "/", timeout=2)).status == 200
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
    assert server.connections == 3

    kept = await serve(keep_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    origin = Origin(kept.url, PoolLimits(idle_seconds=0.05))
    await origin.request("GET", "/", timeout=2)
    await asyncio.sleep(0.1)
    await origin.request("GET", "/", timeout=2)
    assert kept.connections == 2


@pytest.mark.asyncio
async def test_a_cancelled_request_closes_its_connection(serve) -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.3)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = await serve(slow)
    origin = Origin(server.url)
    task = asyncio.create_task(origin.request("POST", "/payments", b"{}", timeout=2))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await origin.request("POST", "/payments", b"{}", timeout=2)).status == 200
    assert server.connections == 2  # the late answer never reaches the next request


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="only plain http"):
        Origin("https://example.invalid")


@pytest.mark.asyncio
async def test_an_answer_split_across_segments_is_put_together(serve) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            for start, stop in ((0, 5), (5, 20), (20, 38), (38, len(answer))):
                writer.write(answer[start:stop])
                await writer.drain()
                await asyncio.sleep(0.01)

    server = await serve(trickle)
    origin = Origin(server.url)
    for _ in range(2):
        assert (await origin.request("GET", "/", timeout=2)).body == b'{"ok":true}'
    assert server.connections == 1


@pytest.mark.asyncio
async def test_garbage_instead_of_an_answer_is_lost(serve) -> None:
    server = await serve(keep_answering(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(AnswerLost):
        await Origin(server.url).request("POST", "/payments", b"{}", timeout=2)
