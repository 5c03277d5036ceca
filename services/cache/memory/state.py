"""The in-memory state: pending queue, leases, ledger, and the set of known ids.

Every payment the cache has accepted (since the last purge, and not processed
more than the retention ago) has one ``Entry``; its ``state`` says where it is.
The queue and the delay heap hold references that may go stale (a queued entry
completed by a late report); they are skipped when popped, which keeps every
operation O(1) or O(log n).

A long life: a processed payment leaves the index (``entries``) ``retention_ms``
after it was processed (``expire_done``, from the store's housekeeping, a
bounded number per call), so memory and the journal's snapshot hold the
payments of one retention, not of every day the cache has run. The ledger is
separate (per-millisecond buckets, ``ledger.py``) and keeps every window sum
exact forever. Only DONE payments expire: queued, delayed and leased ones are
still owed to the client, and rejected ones wait for an operator. Processed
entries are kept in completion order (``done``), which is time order on one
clock, so expiry pops from the left and stops at the first one not due.

Synchronous and clock-injected so that the rules are testable without an event
loop: ``now`` is monotonic seconds (leases, delays), ``clock`` wall-clock epoch
ms (acceptance and completion times, which the journal keeps across restarts,
hence not monotonic). ``MemoryStore`` wraps it for the server and gives it its
journal, which sees every change through the typed calls below.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.cache.memory.ledger import Ledger
from services.cache.store import Completed, Rejection, State, Totals, one_line
from services.common.payment import PROCESSORS
from services.common.timefmt import now_ms

if TYPE_CHECKING:
    from services.cache.memory.journal import Journal


@dataclass(slots=True)
class Entry:
    correlation_id: str
    amount_cents: int
    state: State = State.QUEUED
    check: tuple[str, ...] = ()
    # Returns to the queue so far (hand-backs, expiries, revivals): a count,
    # and the number of the current lease (``lease``).
    attempts: int = 0
    lease_until: float = 0.0
    holder: str = ""  # the consumer the lease was lent to ("": unknown)
    processor: str = ""  # who charged it, or who refused it
    requested_at_ms: int = 0
    reason: str = ""  # why it was rejected
    # Epoch ms on the store's clock: when it was accepted while it is not
    # processed (the expired-duplicate rule compares requestedAt with it), when
    # it was processed once it is DONE (expiry counts the retention from it).
    # One field for both: an entry needs only one of them at a time, and the
    # index is what a long life keeps the most of.
    since_ms: int = 0

    @property
    def lease(self) -> int:
        """The number of the lease it is (or will next be) lent under.

        Derived, not stored: between two lendings an entry goes back to the
        queue exactly once (``requeue``, ``expire``, or ``revive`` after a
        rejection), and each of those counts an attempt, so the count of
        returns numbers the lendings 0, 1, 2, ... A hand-back or rejection
        naming an earlier number is stale (``requeue``, ``reject``). Not a
        second counter, for the index's size and so that a journal of an
        earlier version replays to the same lease numbers."""
        return self.attempts


@dataclass(slots=True)
class QueueCounters:
    """Events the queue has counted, for /stats' "queue" and /metrics (the
    consumer's are ``JobCounters``)."""

    duplicates: int = 0
    requeued: int = 0
    late_completions: int = 0
    stale_requeues: int = 0
    # Completions of an id accepted again after its first life expired, that
    # the processor had charged in that first life (recorded, not counted again).
    expired_duplicates: int = 0
    forgotten: int = 0  # processed payments that left the index after the retention


EXPIRE_BATCH = 5_000  # most ids one expire_done call forgets: housekeeping never stalls the loop


@dataclass(slots=True)
class MemoryState:
    lease_seconds: float = 60.0
    # How long a processed payment stays in the index; None: until a purge
    # (tools and tests that use made-up requestedAt values; the service always
    # sets it, CACHE_RETENTION_S).
    retention_ms: int | None = None
    clock: Callable[[], int] = now_ms  # wall clock, epoch ms
    entries: dict[str, Entry] = field(default_factory=dict)
    queue: deque[Entry] = field(default_factory=deque)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    leased: dict[str, Entry] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=lambda: Ledger(PROCESSORS))
    # DONE entries in completion order; may hold entries forgotten meanwhile
    # (a journal's Y record), skipped when popped.
    done: deque[Entry] = field(default_factory=deque)
    counters: QueueCounters = field(default_factory=QueueCounters)
    _queued: int = 0
    _delayed: int = 0
    _rejected: int = 0
    _done: int = 0  # DONE entries in the index (the ledger's count includes forgotten ones)
    _tiebreak: int = 0
    work: asyncio.Event = field(default_factory=asyncio.Event)
    # Set after replay; every state change is then journaled.
    journal: Journal | None = None

    # -- intake -----------------------------------------------------------
    def submit(self, payments: Iterable[tuple[str, int]],
               accepted_at_ms: int | None = None) -> tuple[int, int]:
        """Queue new payments; ids already known are ignored. Returns (new, dup).

        ``accepted_at_ms``: now on ``clock`` unless given (a journal's replay)."""
        accepted_at_ms = self.clock() if accepted_at_ms is None else accepted_at_ms
        new = dup = 0
        for correlation_id, amount_cents in payments:
            if correlation_id in self.entries:
                dup += 1
                continue
            entry = Entry(correlation_id, amount_cents, since_ms=accepted_at_ms)
            self.entries[correlation_id] = entry
            self._enqueue(entry)
            new += 1
            if self.journal:
                self.journal.submitted(correlation_id, amount_cents, accepted_at_ms)
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

        A report for an id the cache does not know (purged or expired
        meanwhile) or has already recorded is ignored: the ledger never counts
        a payment twice. One whose requestedAt is older than the entry's
        acceptance by more than half the retention was charged in an earlier
        life of its id (``_is_expired_duplicate``): recorded as DONE, not added
        to the ledger again.
        """
        recorded = ignored = 0
        completed_at_ms = self.clock()
        for result in results:
            entry = self.entries.get(result.correlation_id)
            if entry is None or entry.state is State.DONE or result.processor not in PROCESSORS:
                ignored += 1
                continue
            counted = not self._is_expired_duplicate(entry, result.requested_at_ms)
            self._finish(entry, result, completed_at_ms, counted)
            recorded += 1
            if self.journal:
                self.journal.completed(result, completed_at_ms, counted)
        return recorded, ignored

    def _is_expired_duplicate(self, entry: Entry, requested_at_ms: int) -> bool:
        """Did the processor charge this id before this entry was accepted?

        An id accepted again after its first life expired is sent again; the
        processor, which keeps its records forever, answers 422 and the
        consumer reports the first charge, with its old requestedAt, which the
        ledger counted then. A charge made in this life is stamped after the
        acceptance (less the clocks' skew); the first life's was made at least
        a retention before it (processed, then kept a retention, then accepted
        again). Half the retention separates the two with the widest margin
        either way."""
        if self.retention_ms is None:
            return False
        return requested_at_ms < entry.since_ms - self.retention_ms // 2

    def _finish(self, entry: Entry, result: Completed, completed_at_ms: int, counted: bool) -> None:
        """Mark ``entry`` DONE (from whatever state it is in), in the ledger if ``counted``."""
        if entry.state is not State.LEASED:  # rejected too: an earlier attempt landed after all
            self.counters.late_completions += 1
        self._leave(entry)
        entry.state = State.DONE
        entry.reason = ""
        entry.processor = result.processor
        entry.amount_cents = result.amount_cents
        entry.requested_at_ms = result.requested_at_ms
        entry.check = ()
        entry.holder = ""
        entry.since_ms = completed_at_ms
        self.done.append(entry)
        self._done += 1
        if counted:
            self.ledger.add(result.processor, result.requested_at_ms, result.amount_cents)
        else:
            self.counters.expired_duplicates += 1

    def requeue(self, correlation_id: str, check: tuple[str, ...], delay_seconds: float,
                now: float | None = None, lease: int | None = None) -> bool:
        """Hand a leased payment back for another attempt.

        ``lease`` is the lease the payment was lent out with (``Entry.lease``;
        None: whichever is current, for tools and the journal's replay). A
        hand-back from an earlier lease (re-sent after a lost reply, or from a
        job that outlived its lease) is ignored: it would cancel the current
        lease and overwrite what the current job knows must be checked."""
        entry = self.leased.get(correlation_id)
        if entry is None or entry.state is not State.LEASED:
            return False
        if lease is not None and lease != entry.lease:
            self.counters.stale_requeues += 1
            return False
        del self.leased[correlation_id]
        entry.check = tuple(name for name in check if name in PROCESSORS)
        entry.attempts += 1  # back to the queue: its next lending is under a new lease
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

    def reject(self, rejection: Rejection) -> bool:
        """Park a leased payment that a processor refused; False if it is not
        leased under ``rejection.lease`` (stale, like a hand-back)."""
        entry = self.leased.get(rejection.correlation_id)
        if entry is None:
            return False
        if rejection.lease != entry.lease:
            self.counters.stale_requeues += 1
            return False
        del self.leased[rejection.correlation_id]
        self._park(entry, rejection.processor, one_line(rejection.reason))
        if self.journal:
            self.journal.rejected(entry.correlation_id, entry.processor, entry.reason)
        return True

    def revive(self, correlation_id: str) -> State | None:
        """Put a rejected payment back at the queue's tail (an operator's
        call); any other state is left as it is. Returns the state after."""
        entry = self.entries.get(correlation_id)
        if entry is None or entry.state is not State.REJECTED:
            return None if entry is None else entry.state
        self._leave(entry)
        entry.processor = entry.reason = ""
        entry.check = ()
        entry.attempts += 1  # back to the queue: reports about the refused lease are stale
        self._enqueue(entry)
        if self.journal:
            self.journal.revived(correlation_id)
        return entry.state

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
        entry.attempts += 1  # back to the queue: the expired lease's reports are stale
        self._enqueue(entry, front=True)
        if self.journal:
            self.journal.expired(correlation_id)

    def expire_done(self, limit: int = EXPIRE_BATCH) -> int:
        """Forget up to ``limit`` payments processed more than the retention
        ago (the index only: the ledger keeps counting them). Returns how many.

        Bounded per call so housekeeping never stalls the event loop; it runs
        about once a second, so a backlog of due ids (after a restart, or a
        retention lowered) drains at ``limit`` a second."""
        if self.retention_ms is None:
            return 0
        cutoff = self.clock() - self.retention_ms
        done, entries = self.done, self.entries
        forgotten: list[str] = []
        while done and len(forgotten) < limit:
            entry = done[0]
            if entries.get(entry.correlation_id) is not entry:  # forgotten already (replay)
                done.popleft()
                continue
            if entry.since_ms >= cutoff:  # processed exactly a retention ago: not yet
                break
            done.popleft()
            del entries[entry.correlation_id]
            forgotten.append(entry.correlation_id)
        self._done -= len(forgotten)
        self.counters.forgotten += len(forgotten)
        if forgotten and self.journal:
            self.journal.forgotten(forgotten)
        return len(forgotten)

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
    def rejected_count(self) -> int:
        return self._rejected

    @property
    def done_count(self) -> int:
        """Processed payments still in the index."""
        return self._done

    @property
    def backlog(self) -> int:
        """Accepted and not processed yet: queued, delayed or leased. Counted
        apart from the ledger, which also counts payments the index forgot."""
        return len(self.entries) - self._done - self._rejected

    def purge(self) -> int:
        count = len(self.entries)
        self.entries.clear()
        self.queue.clear()
        self.delayed.clear()
        self.leased.clear()
        self.done.clear()
        self.ledger.clear()
        self._queued = self._delayed = self._rejected = self._done = 0
        self.work.clear()
        if self.journal:
            self.journal.purged()
        return count

    # -- restoring (the journal's replay) ------------------------------------
    def restore_lease(self, holder: str, correlation_ids: Iterable[str]) -> None:
        """A lease from the journal, with a fresh deadline: a consumer that
        outlived the cache still reports its results, and only unreported
        ones expire. Its number is the one it was lent under (``Entry.lease``:
        the records replayed before it counted the returns), so that
        consumer's reports name the current lease."""
        deadline = time.monotonic() + self.lease_seconds
        for correlation_id in correlation_ids:
            entry = self.entries.get(correlation_id)
            if entry is None or entry.state is State.DONE:
                continue
            self._leave(entry)
            entry.state = State.LEASED  # any stale queue reference is skipped when popped
            entry.lease_until = deadline
            entry.holder = holder
            self.leased[correlation_id] = entry

    def restore_rejection(self, correlation_id: str, processor: str, reason: str) -> None:
        """A rejection from the journal, whatever lease it ended."""
        entry = self.entries.get(correlation_id)
        if entry is None or entry.state in (State.DONE, State.REJECTED):
            return
        self._leave(entry)
        self._park(entry, processor, reason)

    def restore_completion(self, result: Completed, completed_at_ms: int, counted: bool,
                           create: bool = False) -> None:
        """A completion from the journal, counted in the ledger or not as it
        was then (the rule is not judged again: the retention may have
        changed since). ``create``: an unknown id is a snapshot's processed
        payment, written without its submission."""
        if result.processor not in PROCESSORS:
            return
        entry = self.entries.get(result.correlation_id)
        if entry is None and create:
            entry = Entry(result.correlation_id, result.amount_cents, state=State.LEASED)
            self.entries[result.correlation_id] = entry  # LEASED: _finish counts no late completion
        if entry is None or entry.state is State.DONE:
            return
        self._finish(entry, result, completed_at_ms, counted)

    def restore_ledger(self, processor: str, rows: Iterable[tuple[int, int, int]]) -> None:
        """Ledger buckets ``(ms, count, cents)`` from a snapshot's T record."""
        if processor in PROCESSORS:
            self.ledger.extend(processor, rows)

    def restore_forgotten(self, correlation_ids: Iterable[str]) -> None:
        """Ids that expired (a journal's Y record): forget exactly those, so a
        replay agrees with the live state even where expiry lagged behind the
        retention. Their references in ``done`` are skipped when popped."""
        for correlation_id in correlation_ids:
            entry = self.entries.get(correlation_id)
            if entry is not None and entry.state is State.DONE:
                del self.entries[correlation_id]
                self._done -= 1

    def restore_attempts(self, correlation_id: str, attempts: int) -> None:
        """A snapshot's count of returns to the queue (an A record), which is
        also the number of the lease a restored lease is under."""
        entry = self.entries.get(correlation_id)
        if entry is not None:
            entry.attempts = attempts

    # -- internals --------------------------------------------------------
    def _leave(self, entry: Entry) -> None:
        """Take ``entry`` out of where its current state counts it, before the
        state changes (a stale queue or heap reference is skipped when popped)."""
        state = entry.state
        if state is State.QUEUED:
            self._queued -= 1
        elif state is State.DELAYED:
            self._delayed -= 1
        elif state is State.REJECTED:
            self._rejected -= 1
        elif state is State.LEASED:
            self.leased.pop(entry.correlation_id, None)

    def _park(self, entry: Entry, processor: str, reason: str) -> None:
        entry.state = State.REJECTED  # any stale queue reference is skipped when popped
        entry.processor = processor
        entry.reason = reason
        entry.check = ()
        entry.holder = ""
        self._rejected += 1

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
