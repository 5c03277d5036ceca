"""What the cache service needs of its state, whichever engine holds it.

``services/cache/server.py`` speaks gRPC on one side and this interface on the
other; it never sees a journal, a Redis connection or a clock. Two
implementations keep the same rules:

- ``memory`` (``services/cache/memory``): everything in this process, made
  durable by an append-only journal. The single-box default.
- ``redis`` (``services/cache/redis_store``): everything in one Redis, each RPC
  batch one atomic script, so any number of cache fronts, apis and consumers
  on any number of machines share one queue and one ledger.

The rules (``tests/integration/test_store_contract.py`` runs them against both):

- A correlationId is queued once, however often it is submitted, until a
  purge or until the retention has passed since it was processed.
- A long life: a processed payment leaves the per-id index ``retention`` after
  it was *processed* (``expire``, bounded work per call), so memory and
  start-up replay hold one retention's payments, not every payment ever
  accepted. Only processed ones: queued, delayed and leased payments are owed
  to a client, rejected ones await an operator. The ledger is not the index:
  it keeps exact sums for every window forever (per-millisecond buckets;
  ``requestedAt`` has millisecond precision, so they lose nothing). ``lookup``
  of an expired id answers None, as for an id never seen: telling them apart
  would mean keeping the ids, which is what expiry removes; ``stats`` carries
  the retention so the api can say which.
- A repeated id within the retention is never charged twice (the index
  deduplicates). After it, the id is accepted as new and sent again; the
  processor, which keeps its records forever, answers 422 and the consumer
  reports its old charge, with the old ``requestedAt``, which the ledger
  counted long ago. So each entry carries its acceptance time (store clock)
  and a completion whose ``requestedAt`` is older than the acceptance by more
  than half the retention is recorded as processed *without* adding to the
  ledger (counted in ``expired_duplicates``): a charge of this life is stamped
  after the acceptance, less clock skew, the old one at least a retention
  before it, and half the retention is the widest margin between the two. The
  client is not charged twice; the processor's record and ours still agree.
  What is lost is only the answer "already processed" to a client repeating an
  id after the retention (it gets a new 202 and, in the end, the same charge).
- A payment taken is *leased* to a holder (the consumer's id) until it is
  completed or handed back. A lease runs out after the lease time; a holder
  whose heartbeat lapses loses every lease once the attempts it made can no
  longer land (its settle time). Either way the payment goes back to the head
  of the queue, marked to be checked at every processor before it is sent
  again.
- Every lending carries a *lease* number (``Lent.lease``, ``Payment.lease`` on
  the wire) that no earlier lending of that payment carried. A hand-back or a
  rejection names the lease it ends; one naming an earlier lease is *stale*
  and ignored (counted in ``stale_requeues``): it comes from a job that
  outlived its lease, or is a report sent again after its reply was lost, and
  were it honoured it would end the *current* lease and overwrite what the
  current job knows must be checked. A completion names no lease: whichever
  lease charged it, the processor holds it, so it is recorded (once).
- ``attempts`` is a count, for the operator: how many times the payment went
  back to the queue (a hand-back, a lease that ran out, a revival). Both
  stores keep one counter for the two: between two lendings of a payment it
  goes back to the queue exactly once (a rejected payment: by its revival),
  so the count of returns so far numbers the lease, 0, 1, 2, ... (a journal's
  replay restores a lease under its number: a consumer that outlived the
  cache still names the current one). Only that counter is stored, as
  before, so journals and Redis records written by earlier versions (whose
  lease travelled as ``Payment.attempts``) read as they are.
- A completion is recorded once, whatever the payment's state (a late report
  after the lease ran out still counts: the processor holds the payment).
- A payment a processor refuses (a 4XX that is about *that* payment) is
  *rejected*: parked with the reason, out of the queue and the backlog, never
  in the ledger, until an operator revives it (back to the queue's tail). A
  rejection names the lease it ends; one naming an earlier lease is stale.
- Window sums over ``requestedAt`` never scan the whole ledger.
- One consumer at a time polls each processor's health (an election with a
  fencing token), at most once per poll interval for the whole system.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.common.metrics import Durations


class State(enum.IntEnum):
    QUEUED = 1
    DELAYED = 2
    LEASED = 3
    DONE = 4
    REJECTED = 5  # a processor refused it: parked until an operator revives it


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
    lease: int  # the lease this lending is under: a hand-back or rejection must name it
    attempts: int  # times it went back to the queue so far (a count, Payment.attempts)


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
    lease: int | None  # the lease returned (Lent.lease); None: whichever is current (tools)


def one_line(text: str) -> str:
    """A rejection's reason as the stores keep it: one line, single spaces
    (the journal is line- and space-separated)."""
    return " ".join(text.split())


@dataclass(frozen=True, slots=True)
class Rejection:
    """A processor refused this payment (a dead letter, not a failure of the processor)."""

    correlation_id: str
    processor: str
    reason: str  # what the processor answered, for the operator
    lease: int  # the lease this ends (Lent.lease); an earlier one is stale


@dataclass(frozen=True, slots=True)
class Record:
    """What ``lookup`` knows of one payment."""

    correlation_id: str
    state: State
    amount_cents: int
    attempts: int  # times it went back to the queue (a count: Lent.attempts)
    processor: str = ""  # who charged it, or who refused it
    requested_at_ms: int = 0
    reason: str = ""  # why it was rejected


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
    rejected: int  # parked now (a revived payment leaves the count)
    consumers: tuple[bytes, ...]  # the last Beat.stats of each consumer whose heartbeat is current
    health: tuple[Health, ...]  # what the pollers last reported, one per processor
    # How long a processed payment stays in the index (0: until a purge): a
    # lookup that finds nothing may be an id processed longer ago than this.
    retention_ms: int = 0
    expired_duplicates: int = 0  # completions of ids charged in an earlier life, not counted again
    apis: tuple[bytes, ...] = ()  # the last ``report_api`` of each api instance, if current
    # The memory store's journal (None with another engine): its size, and
    # how long its fsyncs took.
    journal_bytes: int | None = None
    journal_fsync: Durations | None = None


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
        """Hand leased payments back; stale ones (naming an earlier lease than
        the current one) or unknown ones are ignored. Returns how many went back."""

    async def reject(self, rejections: Sequence[Rejection]) -> int:
        """Park leased payments as rejected; stale ones (naming an earlier
        lease than the current one) or unknown ones are ignored. Returns how
        many were parked."""

    async def revive(self, correlation_id: str) -> State | None:
        """An operator's re-queue of a rejected payment: back to the queue's
        tail, nothing to check (a refusal stored nothing). Returns the state
        the payment is in afterwards (QUEUED if revived), None if unknown."""

    async def expire(self) -> int:
        """Bring back run-out leases and those of lapsed consumers, and forget a
        bounded number of payments processed more than the retention ago
        (housekeeping, about once a second from every cache front). Returns how
        many leases came back."""

    async def heartbeat(self, beat: Beat) -> Pulse: ...

    async def report_api(self, instance: str, stats: bytes, ttl_ms: int) -> None:
        """Keep an api instance's figures (opaque) for ``stats`` for ``ttl_ms``."""

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

    async def lookup(self, correlation_id: str) -> Record | None:
        """None: never accepted, or processed more than the retention ago."""

    async def purge(self) -> int:
        """Forget every payment (queue, leases, ledger); returns how many."""

    async def stats(self) -> StoreStats: ...
