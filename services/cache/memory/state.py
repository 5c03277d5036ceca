"""The in-memory state: pending queue, leases, ledger, and the set of known ids.

Every payment the cache has ever accepted (since the last purge) has one
``Entry``; its ``state`` says where it is. The queue and the delay heap hold
references that may go stale (a queued entry completed by a late report); they
are skipped when popped, which keeps every operation O(1) or O(log n).

Synchronous and clock-injected (``now``: monotonic seconds) so that the rules
are testable without an event loop; ``MemoryStore`` wraps it for the server and
gives it its journal, which sees every change through the typed calls below.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.cache.memory.ledger import Ledger
from services.cache.store import Completed, State, Totals
from services.common.payment import PROCESSORS

if TYPE_CHECKING:
    from services.cache.memory.journal import Journal


@dataclass(slots=True)
class Entry:
    correlation_id: str
    amount_cents: int
    state: State = State.QUEUED
    check: tuple[str, ...] = ()
    attempts: int = 0  # hand-backs and expiries so far: the current lease's number
    lease_until: float = 0.0
    holder: str = ""  # the consumer the lease was lent to ("": unknown)
    processor: str = ""
    requested_at_ms: int = 0


@dataclass(slots=True)
class Counters:
    duplicates: int = 0
    requeued: int = 0
    late_completions: int = 0
    stale_requeues: int = 0


@dataclass(slots=True)
class MemoryState:
    lease_seconds: float = 60.0
    entries: dict[str, Entry] = field(default_factory=dict)
    queue: deque[Entry] = field(default_factory=deque)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    leased: dict[str, Entry] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=lambda: Ledger(PROCESSORS))
    counters: Counters = field(default_factory=Counters)
    _queued: int = 0
    _delayed: int = 0
    _tiebreak: int = 0
    work: asyncio.Event = field(default_factory=asyncio.Event)
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
                self.journal.submitted(correlation_id, amount_cents)
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
            self.work.clear()
        if taken and self.journal:
            self.journal.leased(holder, [e.correlation_id for e in taken])
        return taken

    def until_next_due(self, now: float | None = None) -> float:
        """Seconds until the first delayed payment is due (an hour if none)."""
        if not self.delayed:
            return 3600.0
        now = time.monotonic() if now is None else now
        return max(0.0, self.delayed[0][0] - now)

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
                elif entry.state is State.DELAYED:
                    self._delayed -= 1
            self.leased.pop(entry.correlation_id, None)
            entry.state = State.DONE
            entry.processor = result.processor
            entry.amount_cents = result.amount_cents
            entry.requested_at_ms = result.requested_at_ms
            entry.check = ()
            self.ledger.add(result.processor, result.requested_at_ms, result.amount_cents)
            recorded += 1
            if self.journal:
                self.journal.completed(result)
        return recorded, ignored

    def requeue(self, correlation_id: str, check: tuple[str, ...], delay_seconds: float,
                now: float | None = None, lease: int | None = None) -> bool:
        """Hand a leased payment back for another attempt.

        ``lease`` is the lease number the payment was lent out with. A
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
            self.journal.handed_back(correlation_id, delay_seconds, entry.check)
        if delay_seconds > 0:
            now = time.monotonic() if now is None else now
            entry.state = State.DELAYED
            self._delayed += 1
            self._tiebreak += 1
            heapq.heappush(self.delayed, (now + delay_seconds, self._tiebreak, entry))
        else:
            self._enqueue(entry)
        return True

    def expire_leases(self, now: float | None = None, holders: frozenset[str] = frozenset()) -> int:
        """Put back payments whose lease ran out, or whose holder is among
        ``holders`` (consumers gone); their fate must be checked first."""
        now = time.monotonic() if now is None else now
        expired = [e for e in self.leased.values() if e.lease_until <= now or e.holder in holders]
        for entry in expired:
            self.expire(entry.correlation_id)
        return len(expired)

    def expire(self, correlation_id: str) -> None:
        entry = self.leased.pop(correlation_id, None)
        if entry is None:
            return
        entry.check = PROCESSORS
        entry.attempts += 1  # a hand-back too: the expired lease's reports are stale
        self._enqueue(entry, front=True)
        if self.journal:
            self.journal.expired(correlation_id)

    # -- reads ------------------------------------------------------------
    def totals(self, processor: str, from_us: int | None, to_us: int | None) -> Totals:
        return self.ledger.totals(processor, from_us, to_us)

    def lookup(self, correlation_id: str) -> Entry | None:
        return self.entries.get(correlation_id)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def delayed_count(self) -> int:
        return self._delayed

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
        self._queued = self._delayed = 0
        self.work.clear()
        if self.journal:
            self.journal.purged()
        return count

    # -- restoring (the journal's replay) ------------------------------------
    def restore_lease(self, holder: str, correlation_ids: Iterable[str]) -> None:
        """A lease from the journal, with a fresh deadline: a consumer that
        outlived the cache still reports its results, and only unreported
        ones expire."""
        deadline = time.monotonic() + self.lease_seconds
        for correlation_id in correlation_ids:
            entry = self.entries.get(correlation_id)
            if entry is None or entry.state is State.DONE:
                continue
            if entry.state is State.QUEUED:
                self._queued -= 1
            elif entry.state is State.DELAYED:
                self._delayed -= 1
            entry.state = State.LEASED  # any stale queue reference is skipped when popped
            entry.lease_until = deadline
            entry.holder = holder
            self.leased[correlation_id] = entry

    def restore_attempts(self, correlation_id: str, attempts: int) -> None:
        entry = self.entries.get(correlation_id)
        if entry is not None:
            entry.attempts = attempts

    # -- internals --------------------------------------------------------
    def _enqueue(self, entry: Entry, front: bool = False) -> None:
        entry.state = State.QUEUED
        if front:
            self.queue.appendleft(entry)
        else:
            self.queue.append(entry)
        self._queued += 1
        self.work.set()

    def _promote_due(self, now: float) -> None:
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            _, _, entry = heapq.heappop(delayed)
            if entry.state is State.DELAYED:
                self._delayed -= 1
                self._enqueue(entry)
