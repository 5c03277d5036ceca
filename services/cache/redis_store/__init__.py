"""``RedisStore``: the ``CacheStore`` shared by any number of cache fronts.

Every call is one ``FCALL`` of a function in ``store.lua`` (loaded at start-up
with ``FUNCTION LOAD REPLACE``): one round trip per RPC batch, atomic, on
Redis' clock. Long polls wait on a pub/sub channel the functions publish to
when work appears, with a bounded sleep as a backstop.

Client: redis-py's asyncio client with the hiredis parser (why, and the
alternatives measured, in the README's "Scaling out").

A call that cannot reach Redis, or gets no answer within the timeout, raises
``StoreUnavailable``: the server answers UNAVAILABLE and the caller retries.
Every function is safe to repeat: submissions deduplicate, completions are
recorded once, a repeated hand-back or rejection names a lease that is no
longer current (``Lent.lease``, checked by the functions: store.py has the
rule), and leases taken by a call whose answer was lost run out after the
lease time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as rexc

from services.cache.store import (
    Beat,
    Completed,
    HandBack,
    Health,
    Lent,
    Pulse,
    Record,
    Rejection,
    State,
    StoreStats,
    StoreUnavailable,
    Submitted,
    Totals,
    one_line,
)
from services.common import logs
from services.common.payment import PROCESSORS
from services.common.timefmt import now_ms

log = logging.getLogger("cache.redis")

PREFIX = "{rinha}:"  # one hash tag: every key in one slot
LIBRARY = resources.files(__package__).joinpath("store.lua").read_text()
# An open bound: store.lua clamps a window to the milliseconds its buckets cover.
_UNBOUNDED_MS = 2**53
# A long poll re-asks at least this often, in case a wake-up was missed
# (the pub/sub connection dropping and coming back).
_BACKSTOP_SECONDS = 0.5
_LISTEN_SECONDS = 0.2  # how soon the listener sees close()
_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError)
# Error replies that mean "Redis cannot take writes now", not "this call is
# wrong": its disk is full or failing (MISCONF: the AOF or an RDB save failed),
# it is out of memory, a read-only replica, or busy in a long script. The call
# did not run; the caller retries. (redis-py turns some codes into classes and
# strips the code from the message; the others keep it.)
_REFUSED_FOR_NOW = (rexc.OutOfMemoryError, rexc.ReadOnlyError)
_REFUSED_FOR_NOW_CODES = ("MISCONF", "NOREPLICAS", "BUSY ")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check(field: bytes | str) -> tuple[str, ...]:
    text = _text(field)
    return () if text == "-" else tuple(text.split(","))


def _health(row: list[Any]) -> Health:
    name, failing, mrt, checked_at = row
    return Health(_text(name), bool(failing), int(mrt), int(checked_at))


class RedisStore:
    def __init__(self, url: str, *, lease_ms: int, timeout_seconds: float = 2.0,
                 prefix: str = PREFIX, retention_ms: int | None = None) -> None:
        """``retention_ms``: how long a processed payment stays in the index
        (None: until a purge; the service passes CACHE_RETENTION_S). Every
        front of one Redis should be given the same: it is an argument of the
        functions that expire ids and judge expired duplicates, not Redis state."""
        self.url = url
        self.lease_ms = lease_ms
        self.retention_ms = retention_ms
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(url, socket_timeout=timeout_seconds,
                                              socket_connect_timeout=timeout_seconds,
                                              health_check_interval=30)
        self._work = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        await self._load_functions()
        self._listener = asyncio.create_task(self._listen_for_work())

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            await asyncio.wait([self._listener], timeout=2 * _LISTEN_SECONDS + 1)
        await self._redis.aclose()

    async def _load_functions(self) -> None:
        try:
            await self._redis.function_load(LIBRARY, replace=True)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(repr(exc)) from exc

    async def _call(self, function: str, *args: object) -> Any:
        try:
            try:
                return await self._redis.fcall(function, 1, self.prefix, *args)
            except rexc.ResponseError as exc:
                if isinstance(exc, _REFUSED_FOR_NOW) or str(exc).startswith(_REFUSED_FOR_NOW_CODES):
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
                if "Function not found" not in str(exc):
                    raise
                # A Redis that lost its functions (FUNCTION FLUSH, a new empty
                # server): load them again; the call has not run.
                await self._load_functions()
                return await self._redis.fcall(function, 1, self.prefix, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(repr(exc)) from exc

    async def _listen_for_work(self) -> None:
        """Wake long polls when a function publishes "there is work".

        It reads with a short timeout and checks ``_closing`` instead of being
        cancelled: a cancel that lands inside redis-py's pub/sub read can leave
        the connection, and ``close()``, hanging."""
        while not self._closing:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.prefix + "work")
                while not self._closing:
                    if await pubsub.get_message(timeout=_LISTEN_SECONDS) is not None:
                        self._work.set()
            except Exception as exc:  # the connection dropped: resubscribe
                if self._closing:
                    return
                log.warning("work channel lost", extra=logs.fields(error=repr(exc)))
                self._work.set()  # whatever was published meanwhile: look again
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- the queue -------------------------------------------------------------
    async def submit(self, payments: Sequence[tuple[str, int]]) -> Submitted:
        args: list[object] = []
        for correlation_id, amount_cents in payments:
            args += (correlation_id, amount_cents)
        new, duplicates, backlog = await self._call("rinha_submit", *args)
        return Submitted(new, duplicates, backlog)

    async def take(self, limit: int, holder: str, wait_seconds: float) -> list[Lent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            self._work.clear()  # before asking: a publish after this wakes the wait below
            reply = await self._call("rinha_take", holder, limit, self.lease_ms)
            remaining = deadline - loop.time()
            if len(reply) > 1 or remaining <= 0:
                break
            next_due = reply[0] / 1000 if reply[0] >= 0 else math.inf
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), min(remaining, next_due, _BACKSTOP_SECONDS))
        # The fourth of each: the lease it is lent under, which is also the
        # payment's count of returns to the queue (store.lua, lease_of).
        return [Lent(_text(reply[i]), int(reply[i + 1]), _check(reply[i + 2]),
                     lease=int(reply[i + 3]), attempts=int(reply[i + 3]))
                for i in range(1, len(reply), 4)]

    async def complete(self, results: Sequence[Completed]) -> tuple[int, int]:
        args: list[object] = [self.retention_ms or 0]
        for r in results:
            args += (r.correlation_id, r.processor, r.amount_cents, r.requested_at_ms)
        recorded, ignored = await self._call("rinha_complete", *args)
        return recorded, ignored

    async def requeue(self, handbacks: Sequence[HandBack]) -> int:
        args: list[object] = []
        for h in handbacks:
            check = ",".join(name for name in h.check if name in PROCESSORS) or "-"
            args += (h.correlation_id, check, max(0, h.delay_ms), -1 if h.lease is None else h.lease)
        return int(await self._call("rinha_requeue", *args)) if args else 0

    async def reject(self, rejections: Sequence[Rejection]) -> int:
        args: list[object] = []
        for r in rejections:
            args += (r.correlation_id, r.processor, one_line(r.reason), r.lease)
        return int(await self._call("rinha_reject", *args)) if args else 0

    async def revive(self, correlation_id: str) -> State | None:
        state = int(await self._call("rinha_revive", correlation_id))
        return State(state) if state else None

    async def expire(self) -> int:
        return int(await self._call("rinha_expire", self.retention_ms or 0))

    # -- consumers -------------------------------------------------------------
    async def heartbeat(self, beat: Beat) -> Pulse:
        leads, health = await self._call("rinha_heartbeat", beat.consumer, beat.ttl_ms, beat.settle_ms,
                                         int(beat.leaving), beat.stats)
        return Pulse({_text(name): int(token) for name, token in leads},
                     tuple(_health(row) for row in health))

    async def report_api(self, instance: str, stats: bytes, ttl_ms: int) -> None:
        # A plain hash, no function: each field is when it lapses (epoch ms,
        # 8 bytes) and then the report. Fronts' clocks differ by far less than
        # the ten seconds a report lives.
        lapses = (now_ms() + ttl_ms).to_bytes(8, "big")
        try:
            await self._redis.hset(self.prefix + "apistats", instance, lapses + stats)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(repr(exc)) from exc

    async def _current_api_reports(self) -> tuple[bytes, ...]:
        key = self.prefix + "apistats"
        try:
            # Bytes in, bytes out: the client does not decode responses.
            reports = cast(dict[bytes, bytes], await self._redis.hgetall(key))
            now = now_ms()
            lapsed = [name for name, value in reports.items() if int.from_bytes(value[:8], "big") <= now]
            if lapsed:
                await self._redis.hdel(key, *lapsed)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(repr(exc)) from exc
        return tuple(value[8:] for name, value in reports.items() if name not in lapsed)

    async def claim_poll(self, processor: str, token: int, interval_ms: int) -> int:
        return int(await self._call("rinha_claim_poll", processor, token, interval_ms))

    async def report_health(self, processor: str, token: int, failing: bool | None,
                            min_response_time_ms: int = 0, retry_after_ms: int = 0) -> bool:
        answered = failing is not None
        return bool(await self._call("rinha_report_health", processor, token, int(answered),
                                     int(bool(failing)), min_response_time_ms, retry_after_ms))

    # -- reads -----------------------------------------------------------------
    async def totals(self, from_us: int | None, to_us: int | None) -> dict[str, Totals]:
        lo = 0 if from_us is None else -(-from_us // 1000)
        hi = _UNBOUNDED_MS if to_us is None else to_us // 1000
        flat = await self._call("rinha_totals", lo, hi)
        return {name: Totals(int(flat[2 * i]), int(flat[2 * i + 1])) for i, name in enumerate(PROCESSORS)}

    async def lookup(self, correlation_id: str) -> Record | None:
        found = await self._call("rinha_lookup", correlation_id)
        if found is None:
            return None
        raw, reason = found
        # Six fields in records written before the acceptance time was added.
        state, amount, attempts, _check_list, processor, requested_at, *_accepted = _text(raw).split(" ")
        return Record(correlation_id, State(int(state)), int(amount), int(attempts),
                      "" if processor == "-" else processor, int(requested_at), _text(reason))

    async def purge(self) -> int:
        return int(await self._call("rinha_purge"))

    async def stats(self) -> StoreStats:
        (queued, delayed, leased, backlog, requeued, duplicates, stale, late, rejected, health,
         consumers, expired_duplicates) = await self._call("rinha_stats")
        return StoreStats(queued=queued, delayed=delayed, leased=leased, backlog=backlog,
                          requeued=requeued, duplicates=duplicates, stale_requeues=stale,
                          late_completions=late, rejected=rejected, consumers=tuple(consumers),
                          health=tuple(_health(row) for row in health),
                          retention_ms=self.retention_ms or 0, expired_duplicates=expired_duplicates,
                          apis=await self._current_api_reports())
