"""What each kind of answer to a payment means (issue 17), through real sockets.

The classification decides whether a payment may be retried elsewhere (FAILED),
must be settled by a lookup first (UNKNOWN), or is parked (REFUSED); a wrong
FAILED charges twice, so every status family is driven through a local server
on an ephemeral port, and the stand-in's switches through the stand-in itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from rawhttp import Server, read_request

from services.consumer.processors import Answer, Found, LookupFailed, Outcome, ProcessorClient, Timeouts, classify
from standin.app import PROCESSOR, Processor, StandinSettings, build_app
from standin.faults import is_poison

pytestmark = [pytest.mark.asyncio, pytest.mark.both_loops]

T0 = "2025-07-10T12:00:00.000Z"
FAST = Timeouts(payment_seconds=0.4, lookup_seconds=0.4, health_seconds=0.4, connect_seconds=0.2)


def http_answer(status: int, body: bytes = b"", *, interim: bytes = b"", extra: bytes = b"") -> bytes:
    return (interim + b"HTTP/1.1 %d Whatever\r\nContent-Length: %d\r\n%s\r\n" % (status, len(body), extra)
            + body)


Reply = Callable[[asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection


def raw(data: bytes) -> Reply:
    async def reply(writer: asyncio.StreamWriter) -> bool:
        writer.write(data)
        await writer.drain()
        return True
    return reply


class Scripted(Server):
    """A processor answering by correlationId (POST) or path id (GET), as each test scripts."""

    def __init__(self) -> None:
        super().__init__(self.answer)
        self.replies: dict[str, Reply] = {}
        self.received: list[str] = []

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            target = head.split(b" ")[1].decode()
            key = orjson.loads(body)["correlationId"] if body else target
            self.received.append(key)
            if not await self.replies[key](writer):
                return


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[tuple[Scripted, ProcessorClient]]:
    processor = Scripted()
    await processor.start()
    client = ProcessorClient({"default": processor.url}, FAST, max_connections=4)
    yield processor, client
    await client.close()
    processor.close()


async def pay(client: ProcessorClient, correlation_id: str) -> Answer:
    return await client.pay("default", correlation_id, 1990, T0)


# -- statuses ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "outcome"), [
    (200, Outcome.OK), (201, Outcome.OK), (204, Outcome.OK),
    (422, Outcome.DUPLICATE),
    (400, Outcome.REFUSED), (401, Outcome.REFUSED), (403, Outcome.REFUSED), (404, Outcome.REFUSED),
    (409, Outcome.REFUSED), (413, Outcome.REFUSED), (451, Outcome.REFUSED),
    (408, Outcome.FAILED), (429, Outcome.FAILED),
    (500, Outcome.FAILED), (501, Outcome.FAILED), (505, Outcome.FAILED), (599, Outcome.FAILED),
    (502, Outcome.UNKNOWN), (503, Outcome.UNKNOWN), (504, Outcome.UNKNOWN),
    (301, Outcome.UNKNOWN), (307, Outcome.UNKNOWN), (600, Outcome.UNKNOWN),
])
async def test_each_status_means_what_the_table_says(scripted, status: int, outcome: Outcome) -> None:
    processor, client = scripted
    body = b"" if status == 204 else b'{"error": "because"}'
    processor.replies["c1"] = raw(http_answer(status, body))
    answer = await pay(client, "c1")
    assert (answer.outcome, answer.status) == (outcome, status)
    assert classify(status) is outcome
    if outcome in (Outcome.OK, Outcome.DUPLICATE):
        assert answer.reason == ""
    else:
        assert answer.reason == f'default answered {status}: {{"error": "because"}}'


async def test_interim_answers_are_skipped(scripted) -> None:
    processor, client = scripted
    processor.replies["c1"] = raw(http_answer(200, b"{}", interim=b"HTTP/1.1 100 Continue\r\n\r\n"))
    processor.replies["c2"] = raw(http_answer(
        502, b"Bad Gateway", interim=b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"))
    processor.replies["c3"] = raw(http_answer(400, b"no", interim=b"HTTP/1.1 100 Continue\r\n\r\n"))
    assert await pay(client, "c1") == Answer(Outcome.OK, 200)
    assert (await pay(client, "c2")).outcome is Outcome.UNKNOWN
    assert (await pay(client, "c3")).outcome is Outcome.REFUSED


async def test_switching_protocols_is_an_unknown_outcome(scripted) -> None:
    processor, client = scripted
    processor.replies["c1"] = raw(b"HTTP/1.1 101 Switching Protocols\r\n\r\n" + http_answer(200))
    answer = await pay(client, "c1")
    assert (answer.outcome, answer.status) == (Outcome.UNKNOWN, 0) and "101" in answer.reason


async def test_the_reason_keeps_the_start_of_the_body_decoded_leniently(scripted) -> None:
    processor, client = scripted
    processor.replies["c1"] = raw(http_answer(400, b"\xff" + b"x" * 1000))
    answer = await pay(client, "c1")
    assert answer.reason == "default answered 400: \ufffd" + "x" * 199


# -- no answer, or no request --------------------------------------------------------------------

async def test_nothing_listening_is_failed() -> None:
    client = ProcessorClient({"default": "http://127.0.0.1:1"}, FAST, max_connections=2)
    answer = await pay(client, "c1")
    assert (answer.outcome, answer.status) == (Outcome.FAILED, 0) and "not sent" in answer.reason


async def test_a_pool_that_stays_busy_past_the_payment_timeout_is_failed_not_unknown(scripted) -> None:
    processor, _ = scripted
    release = asyncio.Event()

    async def held(writer: asyncio.StreamWriter) -> bool:
        await release.wait()
        writer.write(http_answer(200))
        return True

    processor.replies["c1"] = held
    client = ProcessorClient({"default": processor.url}, Timeouts(payment_seconds=2.0), max_connections=1)
    try:
        first = asyncio.create_task(pay(client, "c1"))
        await asyncio.sleep(0.05)
        client.timeouts = FAST  # the second attempt gives up well before the first is answered
        answer = await pay(client, "c2")
        assert (answer.outcome, answer.status) == (Outcome.FAILED, 0) and "busy" in answer.reason
        assert processor.received == ["c1"]  # c2 was never sent
        release.set()
        assert (await first).outcome is Outcome.OK
    finally:
        await client.close()


@pytest.mark.parametrize("how", ["silent", "dropped", "trickled", "garbage"])
async def test_no_complete_answer_is_unknown_by_the_payment_timeout(scripted, how: str) -> None:
    processor, client = scripted

    async def reply(writer: asyncio.StreamWriter) -> bool:
        if how == "silent":
            await asyncio.sleep(5)
        elif how == "dropped":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n{")
            await writer.drain()
            return False
        elif how == "trickled":
            for byte in http_answer(200, b"{}"):
                writer.write(bytes((byte,)))
                await writer.drain()
                await asyncio.sleep(0.05)
        else:
            writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        return True

    processor.replies["c1"] = reply
    started = time.monotonic()
    answer = await pay(client, "c1")
    assert (answer.outcome, answer.status) == (Outcome.UNKNOWN, 0) and answer.reason
    assert time.monotonic() - started < FAST.payment_seconds + 0.6  # slack for a loaded machine


# -- lookups -------------------------------------------------------------------------------------

async def test_lookups_skip_interim_answers_and_fail_on_a_proxy_answer(scripted) -> None:
    processor, client = scripted
    stored = orjson.dumps({"correlationId": "c1", "amount": 19.9, "requestedAt": T0})
    processor.replies["/payments/c1"] = raw(http_answer(200, stored, interim=b"HTTP/1.1 100 Continue\r\n\r\n"))
    processor.replies["/payments/c2"] = raw(http_answer(404, b"{}", interim=b"HTTP/1.1 103 Early Hints\r\n\r\n"))
    found = await client.find("default", "c1")
    assert found == Found(requested_at_ms=1752148800000, amount_cents=1990)
    assert await client.find("default", "c2") is None
    for status in (502, 503, 504, 500):
        processor.replies["/payments/c3"] = raw(http_answer(status, b"Bad Gateway"))
        with pytest.raises(LookupFailed):
            await client.find("default", "c3")


# -- against the stand-in's switches ---------------------------------------------------------------

@pytest_asyncio.fixture
async def standin() -> AsyncIterator[tuple[Processor, ProcessorClient]]:
    app = build_app(StandinSettings())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ProcessorClient({"default": f"http://127.0.0.1:{port}"}, FAST, max_connections=4)
    yield app[PROCESSOR], client
    await client.close()
    await runner.cleanup()


async def test_a_refused_payment_is_refused_every_time_and_the_others_pass(standin) -> None:
    proc, client = standin
    proc.refuse = proc.refuse.parse({"every": 3, "status": 403})
    ids = [f"c{i}" for i in range(12)]
    poison = [cid for cid in ids if is_poison(cid, 3)]
    assert poison and len(poison) < len(ids)
    for cid in ids:
        answer = await pay(client, cid)
        if cid in poison:
            assert (answer.outcome, answer.status) == (Outcome.REFUSED, 403), cid
            assert '"error"' in answer.reason
            assert (await pay(client, cid)).outcome is Outcome.REFUSED  # the retry too
        else:
            assert answer.outcome is Outcome.OK, cid
    assert sorted(proc.payments) == sorted(set(ids) - set(poison))


async def test_a_proxy_answer_after_storing_is_unknown_and_the_lookup_settles_it(standin) -> None:
    proc, client = standin
    proc.proxy = proc.proxy.parse({"every": 2, "status": 504})
    assert (await pay(client, "c1")).outcome is Outcome.OK
    answer = await pay(client, "c2")
    assert (answer.outcome, answer.status) == (Outcome.UNKNOWN, 504) and "Gateway" in answer.reason
    assert await client.find("default", "c2") == Found(requested_at_ms=1752148800000, amount_cents=1990)


async def test_a_trickled_answer_is_unknown_at_the_payment_timeout_and_was_stored(standin) -> None:
    proc, client = standin
    proc.trickle = proc.trickle.parse({"every": 1, "seconds": 3})
    started = time.monotonic()
    answer = await pay(client, "c1")
    assert (answer.outcome, answer.status) == (Outcome.UNKNOWN, 0)
    assert FAST.payment_seconds - 0.01 <= time.monotonic() - started < FAST.payment_seconds + 0.6
    assert "c1" in proc.payments
