"""One contract, two stores: every rule of ``services/cache/store.py`` checked
against the memory store and against the Redis store on a real redis-server
(on a unix socket in a temporary directory, AOF on).

Clocks are real (Redis keeps its own), so waits are a few hundred ms with
margins of the same order, never tens of ms.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from services.cache.memory import MemoryStore
from services.cache.redis_store import RedisStore
from services.cache.server import CacheService
from services.cache.store import Beat, CacheStore, Completed, HandBack, Lent, Rejection, State, Totals
from services.common.payment import PROCESSORS
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.consumer.reporting import Reporter
from tools.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]
EVERYWHERE = ("default", "fallback")
_prefixes = itertools.count()
Opener = Callable[..., AbstractAsyncContextManager[list[CacheStore]]]


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="rinha-redis-") as directory:
        with RedisServer(Path(directory)) as server:
            yield server.url


@pytest.fixture(params=["memory", "redis"])
def open_store(request: pytest.FixtureRequest, redis_url: str) -> Opener:
    """``open_store(lease_ms, fronts)``: a fresh, empty store of each kind, seen
    through ``fronts`` cache fronts (Redis: that many clients of one state;
    memory has one front, shared)."""
    kind, prefix = request.param, f"{{t{next(_prefixes)}}}:"

    @asynccontextmanager
    async def opened(lease_ms: int = 60_000, fronts: int = 1) -> AsyncIterator[list[CacheStore]]:
        stores: list[CacheStore]
        if kind == "memory":
            stores = [MemoryStore(lease_ms=lease_ms)] * fronts
        else:
            stores = [RedisStore(redis_url, lease_ms=lease_ms, prefix=prefix) for _ in range(fronts)]
        unique = list({id(store): store for store in stores}.values())
        for store in unique:
            await store.start()
        try:
            yield stores
        finally:
            for store in unique:
                await store.close()

    return opened


def ids(lent: list[Lent]) -> list[str]:
    return [one.correlation_id for one in lent]


async def test_a_correlation_id_is_queued_once_until_purged(open_store: Opener) -> None:
    async with open_store() as (store,):
        first = await store.submit([("a", 1), ("b", 2), ("a", 1)])
        assert (first.new, first.duplicates, first.backlog) == (2, 1, 2)
        assert (await store.submit([("b", 2)])).duplicates == 1
        assert ids(await store.take(10, "c", 0)) == ["a", "b"]
        await store.complete([Completed("a", "default", 1, 1_000)])
        again = await store.submit([("a", 1)])  # processed ids stay known
        assert (again.new, again.duplicates, again.backlog) == (0, 1, 1)
        assert await store.take(10, "c", 0) == []
        assert (await store.stats()).duplicates == 3


async def test_take_is_fifo_and_bounded(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([(f"p{i}", i + 1) for i in range(5)])
        first = await store.take(2, "c", 0)
        assert first == [Lent("p0", 1, (), 0, 0), Lent("p1", 2, (), 0, 0)]
        assert ids(await store.take(10, "c", 0)) == ["p2", "p3", "p4"]
        stats = await store.stats()
        assert (stats.queued, stats.leased, stats.backlog) == (0, 5, 5)


async def test_a_completion_is_recorded_once(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 190)])
        await store.take(1, "c", 0)
        done = Completed("a", "default", 190, 1_000)
        assert await store.complete([done, done]) == (1, 1)
        assert await store.complete([Completed("zz", "default", 1, 1),
                                     Completed("a", "fallback", 190, 1_000)]) == (0, 2)
        assert (await store.totals(None, None))["default"] == Totals(1, 190)
        record = await store.lookup("a")
        assert record is not None and record.state is State.DONE
        assert (record.processor, record.requested_at_ms, record.amount_cents) == ("default", 1_000, 190)
        assert (await store.stats()).backlog == 0


async def test_a_completion_for_an_unknown_processor_is_ignored(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1)])
        await store.take(1, "c", 0)
        assert await store.complete([Completed("a", "other", 1, 1)]) == (0, 1)
        record = await store.lookup("a")
        assert record is not None and record.state is State.LEASED


async def test_a_delayed_hand_back_waits_and_keeps_what_to_check(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1)])
        (lent,) = await store.take(1, "c", 0)
        assert await store.requeue([HandBack("a", ("default", "nope"), 600, lent.lease)]) == 1
        record = await store.lookup("a")
        assert record is not None and record.state is State.DELAYED
        assert (await store.stats()).delayed == 1
        assert await store.take(1, "c", 0) == []
        started = time.monotonic()
        (again,) = await store.take(1, "c", 3.0)  # the long poll waits for it to be due
        assert 0.4 < time.monotonic() - started < 2.5
        assert again == Lent("a", 1, ("default",), lent.lease + 1, 1)
        assert (await store.stats()).requeued == 1


async def test_a_stale_hand_back_is_ignored(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1)])
        (first,) = await store.take(1, "c", 0)
        assert await store.requeue([HandBack("a", ("default",), 0, first.lease)]) == 1
        (second,) = await store.take(1, "c", 0)
        # The first hand-back sent again (its reply was lost): not the current lease.
        assert await store.requeue([HandBack("a", ("default",), 0, first.lease)]) == 0
        record = await store.lookup("a")
        assert record is not None and record.state is State.LEASED
        assert (await store.stats()).stale_requeues == 1
        assert await store.requeue([HandBack("a", (), 0, second.lease)]) == 1
        assert await store.requeue([HandBack("missing", (), 0, 0)]) == 0


@asynccontextmanager
async def served(store: CacheStore) -> AsyncIterator[pipeline_pb2_grpc.CacheAsyncStub]:
    """``store`` behind the real gRPC service, on a unix socket of its own."""
    with tempfile.TemporaryDirectory(prefix="rinha-grpc-") as directory:
        server = grpc.aio.server()
        pipeline_pb2_grpc.add_CacheServicer_to_server(CacheService(store), server)
        address = f"unix:{directory}/cache.sock"
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                yield pipeline_pb2_grpc.CacheStub(channel)
        finally:
            await server.stop(grace=None)


async def test_a_hand_back_on_the_wire_names_its_lease_and_an_old_one_is_ignored(open_store: Opener) -> None:
    """Payment.lease end to end: the cache lends under it, the consumer's
    reporter names it, and a Retry or Rejection naming an earlier lease changes
    nothing, whatever its attempts say."""
    async with open_store() as (store,), served(store) as stub:
        reporter = Reporter(stub, flush_seconds=0.01)
        await stub.Enqueue(pb.SubmitBatch(seq=1, payments=[pb.Payment(correlation_id="a", amount_cents=190)]))

        async def lend() -> pb.Payment:
            (payment,) = (await stub.DequeueBatch(pb.DequeueRequest(max=1, consumer="c"))).payments
            return payment

        first = await lend()
        assert (first.lease, first.attempts) == (0, 0)
        reporter.retry(first, ("default",), 0)
        assert await reporter.flush()
        second = await lend()
        assert (second.lease, second.attempts, list(second.check)) == (1, 1, ["default"])
        # The first job's hand-back again (its reply was lost), then one naming
        # the first lease whose attempts happen to equal the current lease:
        # both stale, the current lease and what it must check stay.
        reporter.retry(first, (), 0)
        assert await reporter.flush()
        stale = pb.Payment(correlation_id="a", amount_cents=190, lease=first.lease, attempts=second.lease)
        assert (await stub.Requeue(pb.RequeueRequest(retries=[pb.Retry(payment=stale)]))).requeued == 0
        reporter.rejected(first, "default", "default answered 400")
        assert await reporter.flush()
        found = await stub.Lookup(pb.LookupRequest(correlation_id="a"))
        assert (found.state, found.attempts) == ("processing", 1)
        stats = await stub.Stats(pb.StatsRequest())
        assert (stats.stale_requeues, stats.requeued, stats.rejected) == (3, 1, 0)
        record = await store.lookup("a")
        assert record is not None and record.state is State.LEASED
        # The current lease's rejection is honoured.
        reporter.rejected(second, "default", "default answered 400")
        assert await reporter.flush()
        found = await stub.Lookup(pb.LookupRequest(correlation_id="a"))
        assert (found.state, found.attempts, found.reason) == ("rejected", 1, "default answered 400")


async def test_a_run_out_lease_comes_back_first_to_be_checked_everywhere(open_store: Opener) -> None:
    async with open_store(lease_ms=500) as (store,):
        await store.submit([("a", 1)])
        (lent,) = await store.take(1, "c", 0)
        await store.submit([("b", 1)])
        assert await store.expire() == 0
        await asyncio.sleep(0.8)
        assert await store.expire() == 1
        first, second = await store.take(2, "c", 0)
        assert first == Lent("a", 1, EVERYWHERE, lent.lease + 1, 1) and second.correlation_id == "b"
        # The old lease's hand-back is stale; its completion still counts (the
        # processor holds the payment) and is recorded once.
        assert await store.requeue([HandBack("a", (), 0, lent.lease)]) == 0
        assert await store.complete([Completed("a", "default", 1, 5)]) == (1, 0)


async def test_a_late_completion_of_a_queued_payment_is_not_handed_out_again(open_store: Opener) -> None:
    async with open_store(lease_ms=500) as (store,):
        await store.submit([("a", 1)])
        await store.take(1, "c", 0)
        await asyncio.sleep(0.8)
        await store.expire()
        assert (await store.stats()).queued == 1
        assert await store.complete([Completed("a", "fallback", 1, 5)]) == (1, 0)
        stats = await store.stats()
        assert (stats.queued, stats.late_completions, stats.backlog) == (0, 1, 0)
        assert await store.take(5, "c", 0) == []


async def test_a_lapsed_consumers_leases_come_back_after_its_settle_time(open_store: Opener) -> None:
    async with open_store() as (store,):  # 60 s leases: only the heartbeat can end them early
        await store.submit([("dead's", 1), ("live's", 2)])
        await store.heartbeat(Beat("dead", ttl_ms=300, settle_ms=600))
        await store.heartbeat(Beat("live", ttl_ms=300, settle_ms=600))
        await store.take(1, "dead", 0)
        await store.take(1, "live", 0)
        started = time.monotonic()
        brought_back = 0
        while time.monotonic() - started < 1.8:  # "live" keeps beating, "dead" has stopped
            await store.heartbeat(Beat("live", ttl_ms=300, settle_ms=600))
            brought_back += await store.expire()
            if time.monotonic() - started < 0.6:  # well before ttl + settle (0.9 s)
                assert brought_back == 0
            await asyncio.sleep(0.1)
        assert brought_back == 1
        assert await store.take(5, "live", 0) == [Lent("dead's", 1, EVERYWHERE, 1, 1)]
        record = await store.lookup("live's")
        assert record is not None and record.state is State.LEASED
        assert len((await store.stats()).consumers) == 1


async def test_the_longest_settle_time_announced_is_kept(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1)])
        await store.heartbeat(Beat("c", ttl_ms=100, settle_ms=1_500))
        await store.take(1, "c", 0)
        await store.heartbeat(Beat("c", ttl_ms=100, settle_ms=100))  # its delay fell
        await asyncio.sleep(0.6)
        assert await store.expire() == 0  # an attempt under the old delay may still land
        await asyncio.sleep(1.4)
        assert await store.expire() == 1


async def test_a_consumer_leaving_gives_its_leases_back_after_its_settle_time(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1)])
        await store.heartbeat(Beat("c", ttl_ms=10_000, settle_ms=500))
        await store.take(1, "c", 0)
        await store.heartbeat(Beat("c", ttl_ms=10_000, settle_ms=500, leaving=True))
        assert await store.expire() == 0
        await asyncio.sleep(0.9)
        assert await store.expire() == 1
        assert len((await store.stats()).consumers) == 0


async def test_a_refused_payment_is_parked_with_its_reason_until_revived(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 190), ("b", 290)])
        (a, b) = await store.take(2, "c", 0)
        stale = Rejection("a", "default", "default answered 400", a.lease + 1)
        assert await store.reject([stale, Rejection("zz", "default", "x", 0)]) == 0
        assert await store.reject([Rejection("a", "default", "default answered 400:  bad\ncard", a.lease)]) == 1
        assert await store.reject([Rejection("a", "default", "again", a.lease)]) == 0  # not leased now
        record = await store.lookup("a")
        assert record is not None and record.state is State.REJECTED
        assert (record.processor, record.reason) == ("default", "default answered 400: bad card")
        stats = await store.stats()
        assert (stats.rejected, stats.backlog, stats.leased) == (1, 1, 1)
        assert (await store.submit([("a", 190)])).duplicates == 1  # still known: never queued twice
        assert await store.revive("b") is State.LEASED  # only a rejected payment is revived
        assert await store.revive("nope") is None
        assert await store.revive("a") is State.QUEUED
        again = await store.take(1, "c", 0)
        assert again == [Lent("a", 190, (), a.lease + 1, 1)]  # a new lease: reports about the old are stale
        record = await store.lookup("a")
        assert record is not None and (record.state, record.reason, record.processor) == (State.LEASED, "", "")
        assert (await store.stats()).rejected == 0
        assert (await store.totals(None, None))["default"] == Totals(0, 0)


async def test_a_late_completion_of_a_rejected_payment_is_recorded(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 190)])
        (a,) = await store.take(1, "c", 0)
        await store.reject([Rejection("a", "default", "refused", a.lease)])
        assert await store.complete([Completed("a", "fallback", 190, 5_000)]) == (1, 0)
        stats = await store.stats()
        assert (stats.rejected, stats.backlog, stats.late_completions) == (0, 0, 1)
        record = await store.lookup("a")
        assert record is not None and (record.state, record.processor, record.reason) == (State.DONE, "fallback", "")
        assert await store.purge() == 1


async def test_purge_forgets_rejected_payments(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 190)])
        (a,) = await store.take(1, "c", 0)
        await store.reject([Rejection("a", "default", "refused", a.lease)])
        await store.purge()
        assert await store.lookup("a") is None and (await store.stats()).rejected == 0
        assert (await store.submit([("a", 190)])).new == 1


async def test_window_sums_equal_a_scan(open_store: Opener) -> None:
    rng = random.Random(7)
    base = 1_764_000_000_000
    async with open_store() as (store,):
        payments = [(f"w{i}", rng.randint(1, 10**6), rng.choice(PROCESSORS),
                     base + rng.choice((rng.randint(0, 40), rng.randint(0, 10**7))))
                    for i in range(400)]
        await store.submit([(cid, cents) for cid, cents, _, _ in payments])
        await store.take(400, "c", 0)
        await store.complete([Completed(cid, p, cents, t) for cid, cents, p, t in payments])
        windows: list[tuple[int | None, int | None]] = [
            (None, None), (base * 1000, None), (None, (base + 20) * 1000),
            ((base + 3) * 1000 + 1, (base + 3) * 1000 + 1), ((base + 9) * 1000, (base + 2) * 1000)]
        for _ in range(60):
            lo = (base + rng.randint(-5, 10**7)) * 1000 + rng.choice((0, 1, 999))
            windows.append((lo, lo + rng.randint(0, 10**10)))
        for from_us, to_us in windows:
            got = await store.totals(from_us, to_us)
            for name in PROCESSORS:
                inside = [cents for _, cents, p, t in payments if p == name
                          and (from_us is None or t * 1000 >= from_us) and (to_us is None or t * 1000 <= to_us)]
                assert got[name] == Totals(len(inside), sum(inside)), (from_us, to_us, name)


async def test_purge_forgets_every_payment(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.submit([("a", 1), ("b", 1), ("c", 1)])
        await store.take(1, "c", 0)
        await store.complete([Completed("a", "default", 1, 1)])
        await store.heartbeat(Beat("c", ttl_ms=10_000, settle_ms=0))
        assert await store.purge() == 3
        assert await store.lookup("a") is None
        assert (await store.totals(None, None))["default"] == Totals(0, 0)
        stats = await store.stats()
        assert (stats.queued, stats.leased, stats.backlog, stats.duplicates) == (0, 0, 0, 0)
        assert len(stats.consumers) == 1  # consumers are not payments
        assert (await store.submit([("a", 1)])).new == 1


async def test_a_long_poll_wakes_when_another_front_submits(open_store: Opener) -> None:
    async with open_store(fronts=2) as (one, other):
        waiter = asyncio.create_task(one.take(5, "c", 4.0))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await other.submit([("a", 1)])
        assert ids(await asyncio.wait_for(waiter, 3.0)) == ["a"]
        assert time.monotonic() - started < 0.4  # woken, not the backstop or the timeout


async def test_one_health_poller_per_processor_fenced_by_its_token(open_store: Opener) -> None:
    async with open_store() as (store,):
        first = await store.heartbeat(Beat("one", ttl_ms=400, settle_ms=0))
        second = await store.heartbeat(Beat("two", ttl_ms=400, settle_ms=0))
        assert set(first.leads) == set(PROCESSORS) and second.leads == {}
        token = first.leads["default"]
        assert await store.claim_poll("default", token, 1_000) == 0
        assert 0 < await store.claim_poll("default", token, 1_000) <= 1_000  # one call per interval
        assert await store.report_health("default", token, True, 70)
        health = {h.processor: h for h in (await store.heartbeat(Beat("two", 400, 0))).health}
        assert {h.processor: h for h in (await store.stats()).health} == health
        assert health["default"].failing and health["default"].min_response_time_ms == 70
        assert health["default"].checked_at_ms > 0 and health["fallback"].checked_at_ms == 0
        # "one" stops beating: after its ttl, "two" polls, under a new token.
        await asyncio.sleep(0.5)
        taken_over = await store.heartbeat(Beat("two", ttl_ms=400, settle_ms=0))
        assert set(taken_over.leads) == set(PROCESSORS) and taken_over.leads["default"] != token
        assert await store.claim_poll("default", token, 1_000) == -1  # the old poller, thawed
        assert not await store.report_health("default", token, False, 0)
        # The new poller still waits out the interval the old one started.
        assert await store.claim_poll("default", taken_over.leads["default"], 1_000) > 0


async def test_a_429_pushes_the_next_poll(open_store: Opener) -> None:
    async with open_store() as (store,):
        token = (await store.heartbeat(Beat("one", ttl_ms=5_000, settle_ms=0))).leads["fallback"]
        assert await store.claim_poll("fallback", token, 100) == 0
        assert await store.report_health("fallback", token, None, retry_after_ms=3_000)
        await asyncio.sleep(0.2)
        assert 2_000 < await store.claim_poll("fallback", token, 100) <= 3_000


async def test_a_leaving_poller_hands_over_at_once(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.heartbeat(Beat("one", ttl_ms=60_000, settle_ms=0))
        await store.heartbeat(Beat("one", ttl_ms=60_000, settle_ms=0, leaving=True))
        assert set((await store.heartbeat(Beat("two", 60_000, 0))).leads) == set(PROCESSORS)


async def test_stats_of_live_consumers_only(open_store: Opener) -> None:
    async with open_store() as (store,):
        await store.heartbeat(Beat("one", ttl_ms=300, settle_ms=0, stats=b"one's"))
        await store.heartbeat(Beat("two", ttl_ms=60_000, settle_ms=0, stats=b"two's"))
        assert sorted((await store.stats()).consumers) == [b"one's", b"two's"]
        await asyncio.sleep(0.5)
        assert (await store.stats()).consumers == (b"two's",)


async def test_payments_stored_by_earlier_versions_keep_their_leases(redis_url: str) -> None:
    """Redis records as earlier versions wrote them (six fields before the
    acceptance time, seven since): their third field, the count of returns to
    the queue, is still the lease they are lent under."""
    prefix = f"{{t{next(_prefixes)}}}:"
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.hset(prefix + "pay", mapping={"six": "1 100 2 default - 0",
                                                "seven": "1 200 3 - - 0 1760000000000"})
        await raw.zadd(prefix + "queue", {"six": 1, "seven": 2})
    finally:
        await raw.aclose()
    store = RedisStore(redis_url, lease_ms=60_000, prefix=prefix)
    await store.start()
    try:
        six, seven = await store.take(2, "c", 0)
        assert six == Lent("six", 100, ("default",), 2, 2)
        assert seven == Lent("seven", 200, (), 3, 3)
        assert await store.requeue([HandBack("six", (), 0, 1)]) == 0  # an earlier lease
        assert await store.reject([Rejection("seven", "default", "no", 2)]) == 0
        assert await store.requeue([HandBack("six", (), 0, 2)]) == 1
        assert await store.reject([Rejection("seven", "default", "no", 3)]) == 1
        assert await store.take(1, "c", 0) == [Lent("six", 100, (), 3, 3)]
        record = await store.lookup("seven")
        assert record is not None and (record.state, record.attempts) == (State.REJECTED, 3)
        assert (await store.stats()).stale_requeues == 2
    finally:
        await store.close()


class Model:
    """The rules without time (no delays, no expiry): what a store must agree with.

    The lease and the attempts are kept apart here, as the rules state them
    (store.py): every lending is under the next lease number (0, 1, 2, ...),
    attempts count the returns to the queue; the stores derive both from one
    counter, and this checks that they agree."""

    def __init__(self) -> None:
        # id -> (state, cents, attempts, check)
        self.state: dict[str, tuple[State, int, int, tuple[str, ...]]] = {}
        self.lendings: dict[str, int] = {}  # id -> how many times it was lent
        self.queue: list[str] = []
        self.done: dict[str, tuple[str, int, int]] = {}

    def submit(self, cid: str, cents: int) -> None:
        if cid not in self.state:
            self.state[cid] = (State.QUEUED, cents, 0, ())
            self.lendings[cid] = 0
            self.queue.append(cid)

    def lease(self, cid: str) -> int:
        """The current (or last) lease of a payment lent at least once."""
        return self.lendings[cid] - 1

    def take(self, limit: int) -> list[Lent]:
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        lent = []
        for cid in taken:
            _, cents, attempts, check = self.state[cid]
            self.state[cid] = (State.LEASED, cents, attempts, check)
            self.lendings[cid] += 1
            lent.append(Lent(cid, cents, check, self.lease(cid), attempts))
        return lent

    def complete(self, cid: str, processor: str, cents: int, t: int) -> None:
        if cid not in self.state or self.state[cid][0] is State.DONE:
            return
        if self.state[cid][0] is State.QUEUED:
            self.queue.remove(cid)
        self.state[cid] = (State.DONE, cents, self.state[cid][2], ())
        self.done[cid] = (processor, cents, t)

    def requeue(self, cid: str, check: tuple[str, ...], lease: int) -> None:
        if cid in self.state and self.state[cid][0] is State.LEASED and self.lease(cid) == lease:
            _, cents, attempts, _ = self.state[cid]
            self.state[cid] = (State.QUEUED, cents, attempts + 1, check)
            self.queue.append(cid)


async def test_random_histories_agree_with_the_model(open_store: Opener) -> None:
    rng = random.Random(11)
    async with open_store() as (store,):
        model = Model()
        leased: dict[str, int] = {}
        for step in range(300):
            action = rng.random()
            if action < 0.35:
                batch = [(f"r{rng.randint(0, 80)}", rng.randint(1, 9_999)) for _ in range(rng.randint(1, 4))]
                await store.submit(batch)
                for cid, cents in batch:
                    model.submit(cid, cents)
            elif action < 0.55:
                limit = rng.randint(1, 6)
                got, want = await store.take(limit, "c", 0), model.take(limit)
                assert got == want
                leased.update({one.correlation_id: one.lease for one in got})
            elif action < 0.75 and leased:
                cid = rng.choice(sorted(leased))
                processor, t = rng.choice(PROCESSORS), 1_000 + step
                cents = model.state[cid][1]
                await store.complete([Completed(cid, processor, cents, t)])
                model.complete(cid, processor, cents, t)
                leased.pop(cid)
            elif leased:
                cid = rng.choice(sorted(leased))
                current = leased.pop(cid)
                lease = current - 1 if current and rng.random() < 0.25 else current  # now and then stale
                check = rng.choice(((), ("default",), EVERYWHERE))
                await store.requeue([HandBack(cid, check, 0, lease)])
                model.requeue(cid, check, lease)
                if model.state[cid][0] is State.LEASED:
                    leased[cid] = model.lease(cid)  # the stale hand-back left it leased
        for cid, (state, cents, attempts, _) in model.state.items():
            record = await store.lookup(cid)
            assert record is not None
            assert (record.state, record.amount_cents, record.attempts) == (state, cents, attempts)
        totals = await store.totals(None, None)
        for name in PROCESSORS:
            mine = [cents for processor, cents, _ in model.done.values() if processor == name]
            assert totals[name] == Totals(len(mine), sum(mine))
        stats = await store.stats()
        assert stats.queued == len(model.queue)
        assert stats.backlog == len(model.state) - len(model.done)


# -- a long life: processed ids leave the index after the retention ----------
# Both stores run on real clocks (Redis on its TIME), so the retention is short
# and the waits are just past it.
RETENTION_MS = 1_000
PAST_RETENTION_S = 1.3


@pytest.fixture(params=["memory", "redis"])
def open_retaining(request: pytest.FixtureRequest,
                   redis_url: str) -> Callable[[], AbstractAsyncContextManager[CacheStore]]:
    """A fresh, empty store of each kind with a retention of ``RETENTION_MS``."""
    kind, prefix = request.param, f"{{t{next(_prefixes)}}}:"

    @asynccontextmanager
    async def opened() -> AsyncIterator[CacheStore]:
        store: CacheStore
        if kind == "memory":
            store = MemoryStore(lease_ms=60_000, retention_ms=RETENTION_MS)
        else:
            store = RedisStore(redis_url, lease_ms=60_000, prefix=prefix, retention_ms=RETENTION_MS)
        await store.start()
        try:
            yield store
        finally:
            await store.close()

    return opened


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def test_only_processed_payments_expire_and_the_ledger_keeps_them(open_retaining) -> None:
    async with open_retaining() as store:
        await store.submit([("done", 190), ("rejected", 2), ("queued", 3), ("leased", 4)])
        lent = {one.correlation_id: one for one in await store.take(4, "c", 0)}
        charged_at = wall_ms()
        assert await store.complete([Completed("done", "default", 190, charged_at)]) == (1, 0)
        await store.reject([Rejection("rejected", "default", "no", lent["rejected"].lease)])
        await store.requeue([HandBack("queued", (), 0, lent["queued"].lease)])
        window = (charged_at * 1000, charged_at * 1000)
        before = (await store.totals(None, None), await store.totals(*window))
        await store.expire()
        assert await store.lookup("done") is not None  # not yet
        assert (await store.submit([("done", 190)])).duplicates == 1  # still deduplicated
        await asyncio.sleep(PAST_RETENTION_S)
        await store.expire()
        assert await store.lookup("done") is None
        for cid, state in (("rejected", State.REJECTED), ("queued", State.QUEUED), ("leased", State.LEASED)):
            record = await store.lookup(cid)
            assert record is not None and record.state is state
        assert (await store.totals(None, None), await store.totals(*window)) == before
        assert before[1]["default"] == Totals(1, 190)
        stats = await store.stats()
        assert (stats.backlog, stats.rejected, stats.retention_ms) == (2, 1, RETENTION_MS)
        again = await store.submit([("done", 190)])  # a new life
        assert (again.new, again.backlog) == (1, 3)


async def test_an_expired_id_charged_again_by_a_422_is_not_counted_twice(open_retaining) -> None:
    async with open_retaining() as store:
        await store.submit([("a", 190)])
        await store.take(1, "c", 0)
        first_charge = wall_ms()
        await store.complete([Completed("a", "default", 190, first_charge)])
        await asyncio.sleep(PAST_RETENTION_S)
        await store.expire()
        assert (await store.submit([("a", 190), ("b", 290)])).new == 2
        assert ids(await store.take(2, "c", 0)) == ["a", "b"]
        # a: the processor answers 422, its copy carries the first requestedAt;
        # b: charged now, by a consumer whose clock runs a little behind.
        assert await store.complete([Completed("a", "default", 190, first_charge),
                                     Completed("b", "default", 290, wall_ms() - 100)]) == (2, 0)
        record = await store.lookup("a")
        assert record is not None and record.state is State.DONE
        assert (await store.totals(None, None))["default"] == Totals(2, 480)
        stats = await store.stats()
        assert (stats.expired_duplicates, stats.backlog) == (1, 0)


async def test_the_backlog_stays_exact_across_expiry(open_retaining) -> None:
    async with open_retaining() as store:
        await store.submit([(f"p{i}", 1) for i in range(20)])
        lent = await store.take(12, "c", 0)
        await store.complete([Completed(one.correlation_id, "fallback", 1, wall_ms()) for one in lent[:8]])
        assert (await store.stats()).backlog == 12
        await asyncio.sleep(PAST_RETENTION_S)
        await store.submit([(f"q{i}", 1) for i in range(5)])
        await store.expire()
        assert (await store.stats()).backlog == 17
        await store.complete([Completed(one.correlation_id, "fallback", 1, wall_ms()) for one in lent[8:]])
        stats = await store.stats()
        assert (stats.backlog, stats.queued, stats.leased) == (13, 13, 0)
        assert (await store.totals(None, None))["fallback"] == Totals(12, 12)
        assert await store.purge() == 25 - 8  # the expired ones are no longer there to purge
