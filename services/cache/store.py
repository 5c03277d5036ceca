"""What the cache service needs of its state, whichever engine holds it.

``services/cache/server.py`` speaks gRPC on one side and this interface on the
other; it never sees a journal, a Redis connection or a clock. Two
implementations keep the same rules:

- ``memory`` (``services/cache/memory``): everything in this process, made
  durable by an append-only journal. The single-box default.
- ``redis`` (``services/cache/redis_store``): everything in one Redis, each RPC
  batch one atomic script, so any number of cache fronts, apis and consumers
  on any number of machines share one queue and one ledger.

The rules (``tests/unit/test_store_contract.py`` runs them against both):

- A correlationId is queued once until a purge, however often it is submitted.
- A payment taken is *leased* to a holder (the consumer's id) until it is
  completed or handed back. A lease runs out after the lease time; a holder
  whose heartbeat lapses loses every lease once the attempts it made can no
  longer land (its settle time). Either way the payment goes back to the head
  of the queue, marked to be checked at every processor before it is sent
  again, and its lease number grows, so the old holder's hand-backs are ignored.
- A hand-back names the lease it returns; one naming an earlier lease is stale.
- A completion is recorded once, whatever the payment's state (a late report
  after the lease ran out still counts: the processor holds the payment).
- Window sums over ``requestedAt`` never scan the whole ledger.
- One consumer at a time polls each processor's health (an election with a
  fencing token), at most once per poll interval for the whole system.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class State(enum.IntEnum):
    QUEUED = 1
    DELAYED = 2
    LEASED = 3
    DONE = 4


@dataclass(frozen=True, slots=True)
class Totals:
    count: int
    amount_cents: int


@dataclass(frozen=True, slots=True)
class Submitted:
    new: int
    duplicates: int
    backlog: int  # accepted and not yet processed, across the whole system


@dataclass(frozen=True, slots=True)
class Lent:
    """A payment leased to a consumer."""

    correlation_id: str
    amount_cents: int
    check: tuple[str, ...]  # processors that may already hold it
    lease: int  # which lease this is (grows with every hand-back and expiry)


@dataclass(frozen=True, slots=True)
class Completed:
    correlation_id: str
    processor: str
    amount_cents: int
    requested_at_ms: int  # exactly what the processor stored


@dataclass(frozen=True, slots=True)
class HandBack:
    correlation_id: str
    check: tuple[str, ...]
    delay_ms: int  # not handed out again before this long from now
    lease: int | None  # the lease returned; None: whichever is current (tools)


@dataclass(frozen=True, slots=True)
class Record:
    """What ``lookup`` knows of one payment."""

    correlation_id: str
    state: State
    amount_cents: int
    attempts: int
    processor: str = ""
    requested_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Beat:
    """A consumer's heartbeat."""

    consumer: str
    ttl_ms: int  # believed alive until this long from now
    settle_ms: int  # how long an attempt it made may still take to land
    stats: bytes = b""  # its ConsumerStats, opaque to the store
    leaving: bool = False  # a graceful stop: lapse now, give up any poller lease


@dataclass(frozen=True, slots=True)
class Health:
    processor: str
    failing: bool
    min_response_time_ms: int
    checked_at_ms: int  # epoch ms on the store's clock; 0: never checked


@dataclass(frozen=True, slots=True)
class Pulse:
    """The answer to a heartbeat: which processors this consumer polls (with
    the fencing token to poll under) and what the whole system knows of them."""

    leads: dict[str, int]
    health: tuple[Health, ...]


@dataclass(frozen=True, slots=True)
class StoreStats:
    queued: int
    delayed: int
    leased: int
    backlog: int
    requeued: int
    duplicates: int
    stale_requeues: int
    late_completions: int
    consumers: tuple[bytes, ...]  # the last Beat.stats of each consumer whose heartbeat is current
    health: tuple[Health, ...]  # what the pollers last reported, one per processor


class StoreUnavailable(Exception):
    """The store cannot be reached or did not answer in time; nothing is known
    to have changed. The server answers UNAVAILABLE and the caller retries."""


class CacheStore(Protocol):
    async def start(self) -> None:
        """Open what the store needs (journal replay, connections)."""

    async def close(self) -> None: ...

    async def submit(self, payments: Sequence[tuple[str, int]]) -> Submitted:
        """Queue new ``(correlationId, cents)``; known ids are counted, not queued."""

    async def take(self, limit: int, holder: str, wait_seconds: float) -> list[Lent]:
        """Lease up to ``limit`` payments, waiting up to ``wait_seconds`` for one."""

    async def complete(self, results: Sequence[Completed]) -> tuple[int, int]:
        """Record processed payments once. Returns (recorded, ignored)."""

    async def requeue(self, handbacks: Sequence[HandBack]) -> int:
        """Hand leased payments back; stale or unknown ones are ignored. Returns
        how many went back."""

    async def expire(self) -> int:
        """Bring back run-out leases and those of lapsed consumers (housekeeping,
        about once a second from every cache front). Returns how many."""

    async def heartbeat(self, beat: Beat) -> Pulse: ...

    async def claim_poll(self, processor: str, token: int, interval_ms: int) -> int:
        """The poller of ``processor`` (``token`` from a ``Pulse``) asks to call
        its health endpoint now. 0: go, and no one may for ``interval_ms``;
        otherwise the milliseconds to wait. -1: not the poller any more."""

    async def report_health(self, processor: str, token: int, failing: bool | None,
                            min_response_time_ms: int = 0, retry_after_ms: int = 0) -> bool:
        """Share a health answer (``failing`` None: no answer, as with a 429,
        whose ``retry_after_ms`` pushes the next slot). False if ``token`` is no
        longer the poller's: the report is dropped."""

    async def totals(self, from_us: int | None, to_us: int | None) -> dict[str, Totals]:
        """Per processor, payments with ``from_us <= requestedAt <= to_us``."""

    async def lookup(self, correlation_id: str) -> Record | None: ...

    async def purge(self) -> int:
        """Forget every payment (queue, leases, ledger); returns how many."""

    async def stats(self) -> StoreStats: ...
