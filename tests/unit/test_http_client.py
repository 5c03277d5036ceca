"""The consumer's HTTP client against real sockets on 127.0.0.1: tiny servers
that answer exactly what each test needs, including the ways answers go wrong.
Every test runs on asyncio's loop and on uvloop, which the consumer runs on
(``both_loops`` in conftest.py)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from rawhttp import Script, Server, read_request

from services.consumer.http import AnswerLost, ConnectFailed, ConnectionLimits, Origin, PoolExhausted
from tools.waiting import wait_until_async

pytestmark = pytest.mark.both_loops

@pytest_asyncio.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[Server]]]:
    started: list[Server] = []

    async def start(script: Script) -> Server:
        server = await Server(script).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Waits for ``condition``, however long a loaded machine takes, up to a generous bound."""
    await wait_until_async(condition, timeout=within, what=what, interval=0.005)


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
        # The server's FIN arrives while the connection is idle.
        await until(lambda: all(idle.reader.at_eof() for idle in origin._idle), "the server's FIN")
    assert server.connections == 3

    kept = await serve(keep_answering(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    origin = Origin(kept.url, ConnectionLimits(idle_seconds=0.05))
    await origin.request("GET", "/", timeout=2)
    await asyncio.sleep(0.1)
    await origin.request("GET", "/", timeout=2)
    assert kept.connections == 2


@pytest.mark.asyncio
async def test_a_cancelled_request_closes_its_connection(serve) -> None:
    arrived, answer = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        arrived.set()
        await answer.wait()  # the answer comes once the request was cancelled
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    server = await serve(slow)
    origin = Origin(server.url)
    task = asyncio.create_task(origin.request("POST", "/payments", b"{}", timeout=10))
    await asyncio.wait_for(arrived.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    answer.set()
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


# -- interim answers ------------------------------------------------------------------------------

OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.asyncio
async def test_interim_answers_are_skipped_for_the_final_one(serve) -> None:
    server = await serve(keep_answering(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"))
    origin = Origin(server.url)
    for _ in range(2):
        response = await origin.request("POST", "/payments", b"{}", timeout=2)
        assert (response.status, response.body) == (201, b"{}")
    assert server.connections == 1  # the interim heads left nothing behind on the connection


@pytest.mark.asyncio
async def test_switching_protocols_is_an_unreadable_answer(serve) -> None:
    server = await serve(keep_answering(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n" + OK_EMPTY))
    with pytest.raises(AnswerLost, match="101"):
        await Origin(server.url).request("POST", "/payments", b"{}", timeout=2)


@pytest.mark.asyncio
async def test_an_interim_answer_does_not_extend_the_deadline(serve) -> None:
    async def continue_then_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.sleep(5)

    server = await serve(continue_then_nothing)
    started = time.monotonic()
    with pytest.raises(AnswerLost):
        await Origin(server.url).request("POST", "/payments", b"{}", timeout=0.3)
    assert time.monotonic() - started < 2.5  # the server holds the final answer back for 5 s


# -- a processor that trickles its answer ----------------------------------------------------------

@pytest.mark.asyncio
async def test_a_head_trickled_byte_by_byte_ends_at_the_deadline_not_later(serve) -> None:
    """Every byte is a sign of life, yet the request's deadline bounds the whole answer."""
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in OK_EMPTY:
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0.1)  # the whole head would take about 4 s

    server = await serve(trickle)
    origin = Origin(server.url)
    started = time.monotonic()
    with pytest.raises(AnswerLost):
        await origin.request("POST", "/payments", b"{}", timeout=0.4)
    elapsed = time.monotonic() - started
    # uvloop's clock counts whole milliseconds, hence 0.39; the slack above is for a loaded
    # machine, and still well short of the 4 s the whole head takes.
    assert 0.39 <= elapsed < 2.0, elapsed
    assert (origin.open_connections, origin.idle_connections) == (0, 0)  # closed, slot freed


# -- the bound on all connections ------------------------------------------------------------------

class Gate:
    """Holds every answer until opened, counting connections open at once on the server side."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.live = 0
        self.most_live = 0
        self.requests = 0

    def script(self) -> Script:
        async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.live += 1
            self.most_live = max(self.most_live, self.live)
            try:
                while True:
                    await read_request(reader)
                    self.requests += 1
                    await self.opened.wait()
                    writer.write(OK_EMPTY)
                    await writer.drain()
            finally:
                self.live -= 1
        return held


@pytest.mark.asyncio
async def test_the_pool_bounds_connections_in_use_not_only_idle_ones(serve) -> None:
    gate = Gate()
    server = await serve(gate.script())
    origin = Origin(server.url, ConnectionLimits(max_connections=3))
    tasks = [asyncio.create_task(origin.request("POST", "/payments", b"{}", timeout=3)) for _ in range(10)]
    await until(lambda: gate.requests >= 3, "three requests sent")
    await asyncio.sleep(0.05)  # room for a fourth to get through, were the bound broken
    assert (gate.requests, origin.open_connections) == (3, 3)  # seven wait for a connection
    gate.opened.set()
    assert [r.status for r in await asyncio.gather(*tasks)] == [200] * 10
    assert gate.most_live == 3 and server.connections == 3  # the waiters were handed the same three
    assert (origin.open_connections, origin.idle_connections) == (3, 3)


@pytest.mark.asyncio
async def test_a_request_that_waits_past_its_deadline_for_a_connection_was_not_sent(serve) -> None:
    gate = Gate()
    server = await serve(gate.script())
    origin = Origin(server.url, ConnectionLimits(max_connections=1))
    holder = asyncio.create_task(origin.request("POST", "/payments", b"{}", timeout=10))
    await until(lambda: gate.requests == 1, "the holder's request sent")
    started = time.monotonic()
    with pytest.raises(PoolExhausted) as caught:
        await origin.request("POST", "/payments", b"{}", timeout=0.2)
    assert isinstance(caught.value, ConnectFailed)  # what callers take as "certainly not sent"
    # uvloop's clock counts whole milliseconds; the slack above is for a loaded machine
    # (the holder keeps its connection for up to 10 s).
    assert 0.19 <= time.monotonic() - started < 2.0
    assert gate.requests == 1
    gate.opened.set()
    assert (await holder).status == 200
    assert (await origin.request("POST", "/payments", b"{}", timeout=1)).status == 200
    assert server.connections == 1


@pytest.mark.asyncio
async def test_a_freed_slot_goes_to_a_waiter_which_opens_its_own_connection(serve) -> None:
    """A connection that cannot be kept (here the server closes after each answer) frees its
    slot for the first waiter, instead of being handed over."""
    async def one_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    server = await serve(one_per_connection)
    origin = Origin(server.url, ConnectionLimits(max_connections=2))
    answers = await asyncio.gather(*(origin.request("GET", "/", timeout=3) for _ in range(6)))
    assert [r.status for r in answers] == [200] * 6
    assert server.connections == 6 and origin.open_connections == 0


@pytest.mark.asyncio
async def test_idle_connections_never_exceed_the_total_bound(serve) -> None:
    server = await serve(keep_answering(OK_EMPTY))
    origin = Origin(server.url, ConnectionLimits(max_connections=2, max_idle=50))
    await asyncio.gather(*(origin.request("GET", "/", timeout=2) for _ in range(8)))
    assert origin.idle_connections == origin.open_connections <= 2
    with pytest.raises(ValueError, match="max_connections"):
        Origin(server.url, ConnectionLimits(max_connections=0))


@pytest.mark.asyncio
async def test_no_slot_leaks_through_failures_cancellations_and_stale_connections(serve) -> None:
    """Hundreds of requests meet every way a connection ends; afterwards the pool still
    has all its slots, which it proves by serving max_connections requests at once."""
    rng = random.Random(17)
    release = asyncio.Event()
    behaviours = ["ok", "ok", "ok", "close", "drop", "hang", "garbage", "slow", "hold"]

    held = 0

    async def chaos(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal held
        while True:
            head, _ = await read_request(reader)
            kind = head.split(b" ")[1].decode().strip("/")
            if kind == "ok":
                writer.write(OK_EMPTY)
            elif kind == "close":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            elif kind == "drop":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{")
                await writer.drain()
                return
            elif kind == "hang":
                await asyncio.sleep(10)
            elif kind == "garbage":
                writer.write(b"NOT HTTP\r\n\r\n")
            elif kind == "slow":
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                writer.write(OK_EMPTY)
            elif kind == "hold":
                held += 1
                await release.wait()
                writer.write(OK_EMPTY)

    server = await serve(chaos)
    limit = 8
    origin = Origin(server.url, ConnectionLimits(max_connections=limit, max_idle=4, idle_seconds=0.05))
    most_open = 0

    async def one(kind: str) -> None:
        nonlocal most_open
        try:
            await origin.request("GET", f"/{kind}", timeout=rng.choice((0.05, 0.1, 0.3)))
        except (AnswerLost, ConnectFailed):
            pass
        most_open = max(most_open, origin.open_connections)

    tasks = []
    for i in range(400):
        tasks.append(asyncio.create_task(one(rng.choice(behaviours))))
        if i % 7 == 0:
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.03), rng.choice(tasks).cancel)
        if i % 50 == 0:
            await asyncio.sleep(0.06)  # idle connections go stale in the meantime
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most_open <= limit
    assert origin.open_connections == origin.idle_connections <= 4  # nothing in use, nothing leaked

    # Every slot is still there: `limit` requests held by the server all get sent at once.
    release.clear()
    arrived = held
    finals = [asyncio.create_task(origin.request("GET", "/hold", timeout=20)) for _ in range(limit)]
    await until(lambda: held - arrived == limit, f"{limit} held requests sent at once (slots left)")
    release.set()
    assert [r.status for r in await asyncio.gather(*finals)] == [200] * limit
    assert origin.open_connections == origin.idle_connections


@pytest.mark.asyncio
async def test_a_stale_idle_connection_discarded_frees_its_slot(serve) -> None:
    server = await serve(keep_answering(OK_EMPTY))
    origin = Origin(server.url, ConnectionLimits(max_connections=1, idle_seconds=0.05))
    assert (await origin.request("GET", "/", timeout=1)).status == 200
    await asyncio.sleep(0.1)  # too old to reuse: closed, and its slot must come back
    assert (await origin.request("GET", "/", timeout=2)).status == 200  # else: PoolExhausted
    assert server.connections == 2 and origin.open_connections == 1
