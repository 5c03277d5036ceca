"""The cache's state: pending queue, leases, ledger, and the set of known ids.

Every payment the cache has ever accepted (since the last purge) has one
``Entry``; its ``state`` says where it is. The queue and the delay heap hold
references that may go stale (a queued entry completed by a late report); they
are skipped when popped, which keeps every operation O(1) or O(log n).

Leases: a dequeued payment is lent to the consumer until completed or handed
back. A lease that expires (consumer died) puts the payment back at the head of
the queue, marked to be checked at every processor before being sent again,
because the dead consumer may have sent it. A consumer that starts shortens the
leases held by anyone else to the time a dead one's attempt may still take to
land (``reclaim``), so a restart does not leave them waiting out the full lease.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from services.cache.journal import Journal
from services.cache.ledger import Ledger, Totals
from services.common.payment import PROCESSORS
from services.common.timefmt import now_ms


class State(enum.IntEnum):
    QUEUED = 1
    DELAYED = 2
    LEASED = 3
    DONE = 4


@dataclass(slots=True)
class Entry:
    correlation_id: str
    amount_cents: int
    state: State = State.QUEUED
    check: tuple[str, ...] = ()
    attempts: int = 0
    lease_until: float = 0.0
    holder: str = ""  # the consumer the lease was lent to ("": unknown, e.g. restored)
    processor: str = ""
    requested_at_ms: int = 0


@dataclass(frozen=True, slots=True)
class Completed:
    correlation_id: str
    processor: str
    amount_cents: int
    requested_at_ms: int


@dataclass(slots=True)
class Counters:
    duplicates: int = 0
    requeued: int = 0
    late_completions: int = 0
    stale_requeues: int = 0


@dataclass(slots=True)
class Store:
    lease_seconds: float = 60.0
    entries: dict[str, Entry] = field(default_factory=dict)
    queue: deque[Entry] = field(default_factory=deque)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    leased: dict[str, Entry] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=lambda: Ledger(PROCESSORS))
    counters: Counters = field(default_factory=Counters)
    _queued: int = 0
    _tiebreak: int = 0
    _work: asyncio.Event = field(default_factory=asyncio.Event)
    # Set after replay; every state change is then journaled.
    journal: Journal | None = None

    # -- intake -----------------------------------------------------------
    def submit(self, payments: Iterable[tuple[str, int]]) -> tuple[int, int]:
        """Queue new payments; ids already known are ignored. Returns (new, dup)."""
        new = dup = 0
        for correlation_id, amount_cents in payments:
            if correlation_id in self.entries:
                dup += 1
                continue
            entry = Entry(correlation_id, amount_cents)
            self.entries[correlation_id] = entry
            self._enqueue(entry)
            new += 1
            if self.journal:
                self.journal.record("S", correlation_id, amount_cents)
        self.counters.duplicates += dup
        return new, dup

    # -- handing out work ---------------------------------------------------
    def take(self, limit: int, now: float | None = None, holder: str = "") -> list[Entry]:
        now = time.monotonic() if now is None else now
        self._promote_due(now)
        taken: list[Entry] = []
        while self.queue and len(taken) < limit:
            entry = self.queue.popleft()
            if entry.state is not State.QUEUED:
                continue
            self._queued -= 1
            entry.state = State.LEASED
            entry.lease_until = now + self.lease_seconds
            entry.holder = holder
            self.leased[entry.correlation_id] = entry
            taken.append(entry)
        if not self._queued:
            self._work.clear()
        if taken and self.journal:
            self.journal.record("L", *(e.correlation_id for e in taken))
        return taken

    async def take_waiting(self, limit: int, wait_seconds: float, holder: str = "") -> list[Entry]:
        """``take``, waiting up to ``wait_seconds`` for work to appear."""
        deadline = time.monotonic() + wait_seconds
        while True:
            taken = self.take(limit, holder=holder)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                return taken
            timeout = min(remaining, self._until_next_due())
            try:
                await asyncio.wait_for(self._work.wait(), timeout)
            except TimeoutError:
                pass

    # -- results --------------------------------------------------------------
    def complete(self, results: Iterable[Completed]) -> tuple[int, int]:
        """Record processed payments once. Returns (recorded, ignored).

        A report for an id the cache does not know (purged meanwhile) or has
        already recorded is ignored: the ledger never counts a payment twice.
        """
        recorded = ignored = 0
        for result in results:
            entry = self.entries.get(result.correlation_id)
            if entry is None or entry.state is State.DONE or result.processor not in PROCESSORS:
                ignored += 1
                continue
            if entry.state is not State.LEASED:
                self.counters.late_completions += 1
                if entry.state is State.QUEUED:
                    self._queued -= 1
            self.leased.pop(entry.correlation_id, None)
            entry.state = State.DONE
            entry.processor = result.processor
            entry.amount_cents = result.amount_cents
            entry.requested_at_ms = result.requested_at_ms
            entry.check = ()
            self.ledger.add(result.processor, result.requested_at_ms, result.amount_cents)
            recorded += 1
            if self.journal:
                self.journal.record("C", entry.correlation_id, result.processor,
                                    result.amount_cents, result.requested_at_ms)
        return recorded, ignored

    def requeue(self, correlation_id: str, check: tuple[str, ...], delay_seconds: float,
                now: float | None = None, lease: int | None = None) -> bool:
        """Hand a leased payment back for another attempt.

        ``lease`` is the ``attempts`` count the payment was lent out with. A
        hand-back from an earlier lease (re-sent after a lost reply, or from a
        job that outlived its lease) is ignored: it would cancel the current
        lease and overwrite what the current job knows must be checked."""
        entry = self.leased.get(correlation_id)
        if entry is None or entry.state is not State.LEASED:
            return False
        if lease is not None and lease != entry.attempts:
            self.counters.stale_requeues += 1
            return False
        del self.leased[correlation_id]
        entry.check = tuple(name for name in check if name in PROCESSORS)
        entry.attempts += 1
        self.counters.requeued += 1
        if self.journal:
            self.journal.record("R", correlation_id, now_ms() + int(delay_seconds * 1000),
                                ",".join(entry.check))
        if delay_seconds > 0:
            now = time.monotonic() if now is None else now
            entry.state = State.DELAYED
            self._tiebreak += 1
            heapq.heappush(self.delayed, (now + delay_seconds, self._tiebreak, entry))
        else:
            self._enqueue(entry)
        return True

    def expire_leases(self, now: float | None = None) -> int:
        """Put back payments whose lease ran out; their fate must be checked first."""
        now = time.monotonic() if now is None else now
        expired = [e for e in self.leased.values() if e.lease_until <= now]
        for entry in expired:
            self._expire(entry)
        return len(expired)

    def reclaim(self, keep: str, settle_seconds: float, now: float | None = None) -> int:
        """End every lease not held by ``keep`` ``settle_seconds`` from now.

        A consumer calls this as it starts: a lease held by anyone else was
        lent to a consumer that is gone, and its payment need not wait out the
        full lease, only until an attempt that consumer made can no longer
        land. It then expires as usual (checked everywhere first). A lease
        already due sooner keeps its deadline. Returns the leases shortened."""
        now = time.monotonic() if now is None else now
        deadline = now + settle_seconds
        reclaimed = 0
        for entry in self.leased.values():
            if entry.holder != keep and entry.lease_until > deadline:
                entry.lease_until = deadline
                reclaimed += 1
        return reclaimed

    def _expire(self, entry: Entry) -> None:
        del self.leased[entry.correlation_id]
        entry.check = PROCESSORS
        entry.attempts += 1  # a hand-back too: the expired lease's reports are stale
        self._enqueue(entry, front=True)
        if self.journal:
            self.journal.record("E", entry.correlation_id)

    # -- reads ------------------------------------------------------------
    def totals(self, processor: str, from_us: int | None, to_us: int | None) -> Totals:
        return self.ledger.totals(processor, from_us, to_us)

    def lookup(self, correlation_id: str) -> Entry | None:
        return self.entries.get(correlation_id)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def backlog(self) -> int:
        """Accepted and not processed yet: queued, delayed or leased."""
        return len(self.entries) - self.ledger.count()

    def purge(self) -> int:
        count = len(self.entries)
        self.entries.clear()
        self.queue.clear()
        self.delayed.clear()
        self.leased.clear()
        self.ledger.clear()
        self._queued = 0
        self._work.clear()
        if self.journal:
            self.journal.record("X")
        return count

    # -- durability -------------------------------------------------------
    def restore(self, records: Iterable[list[str]]) -> int:
        """Rebuild the state from journal records (before ``journal`` is set).

        Leases survive with a fresh deadline: a consumer that outlived the
        cache still reports its results, and only unreported ones expire.
        """
        assert self.journal is None, "restore before attaching the journal"
        count = 0
        for fields in records:
            count += 1
            kind, args = fields[0], fields[1:]
            if kind == "S":
                self.submit([(args[0], int(args[1]))])
            elif kind == "L":
                self._lease_restored(args)
            elif kind == "C":
                self.complete([Completed(args[0], args[1], int(args[2]), int(args[3]))])
            elif kind == "R":
                check = tuple(args[2].split(",")) if len(args) > 2 and args[2] else ()
                self.requeue(args[0], check, max(0, int(args[1]) - now_ms()) / 1000)
            elif kind == "E":
                entry = self.leased.get(args[0])
                if entry is not None:
                    self._expire(entry)
            elif kind == "A":
                entry = self.entries.get(args[0])
                if entry is not None:
                    entry.attempts = int(args[1])
            elif kind == "X":
                self.purge()
        self.counters = Counters()
        return count

    def _lease_restored(self, correlation_ids: list[str]) -> None:
        deadline = time.monotonic() + self.lease_seconds
        for correlation_id in correlation_ids:
            entry = self.entries.get(correlation_id)
            if entry is None or entry.state is State.DONE:
                continue
            if entry.state is State.QUEUED:
                self._queued -= 1
            entry.state = State.LEASED  # any stale queue reference is skipped when popped
            entry.lease_until = deadline
            self.leased[correlation_id] = entry

    def snapshot(self) -> Iterator[str]:
        """The current state as journal lines (for compaction)."""
        wall_now, mono_now = now_ms(), time.monotonic()
        due = {id(e): wall_now + int(max(0.0, t - mono_now) * 1000) for t, _, e in self.delayed}
        for entry in self.entries.values():
            yield f"S {entry.correlation_id} {entry.amount_cents}"
            if entry.state is State.DONE:
                yield (f"C {entry.correlation_id} {entry.processor} {entry.amount_cents} "
                       f"{entry.requested_at_ms}")
            elif entry.state is State.LEASED:
                yield f"L {entry.correlation_id}"
                if entry.check:  # lent out again after a hand-back: keep what to check
                    yield f"R {entry.correlation_id} {wall_now} {','.join(entry.check)}"
                    yield f"L {entry.correlation_id}"
            elif entry.check or entry.state is State.DELAYED:
                yield f"L {entry.correlation_id}"
                yield f"R {entry.correlation_id} {due.get(id(entry), wall_now)} {','.join(entry.check)}"
            if entry.attempts:  # last: the lines above count hand-backs of their own
                yield f"A {entry.correlation_id} {entry.attempts}"

    # -- internals --------------------------------------------------------
    def _enqueue(self, entry: Entry, front: bool = False) -> None:
        entry.state = State.QUEUED
        if front:
            self.queue.appendleft(entry)
        else:
            self.queue.append(entry)
        self._queued += 1
        self._work.set()

    def _promote_due(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            if entry.state is State.DELAYED:
                self._enqueue(entry)

    def _until_next_due(self) -> float:
        if not self.delayed:
            return 3600.0
        return max(0.0, self.delayed[0][0] - time.monotonic())
