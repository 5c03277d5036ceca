"""``MemoryStore``: the ``CacheStore`` of one cache process.

The state lives in this process (``MemoryState``, ``Liveness``); durability is
the journal's, which this store alone owns: every call that changed the state
returns only once its records are written (group commit, ``journal.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

from services.cache.memory.journal import Journal
from services.cache.memory.liveness import Liveness
from services.cache.memory.state import MemoryState
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
)
from services.common import logs
from services.common.payment import PROCESSORS
from services.common.timefmt import now_ms

log = logging.getLogger("cache.memory")


class MemoryStore:
    def __init__(self, *, lease_ms: int, journal_path: Path | None = None, fsync: str = "interval",
                 compact_bytes: int = 64 << 20, retention_ms: int | None = None) -> None:
        """``retention_ms``: how long a processed payment stays in the index
        (None: until a purge; the service passes CACHE_RETENTION_S)."""
        self.state = MemoryState(lease_seconds=lease_ms / 1000, retention_ms=retention_ms)
        self.liveness = Liveness(PROCESSORS)
        self.journal = (Journal(journal_path, fsync=fsync, compact_bytes=compact_bytes)
                        if journal_path is not None else None)
        self._fsync_task: asyncio.Task[None] | None = None
        self._compact_not_before = 0.0  # after a failed compaction: not every second
        # Each api instance's last report: (when it lapses, on the monotonic clock; the report).
        self._api_reports: dict[str, tuple[float, bytes]] = {}

    async def start(self) -> None:
        journal = self.journal
        if journal is None:
            return
        replayed = journal.replay_into(self.state)
        # On a full disk this fails and the old journal, whole, stays in use:
        # starting anyway beats crash-looping (reads answer; writes are
        # UNAVAILABLE until the journal can take them, then resume).
        self._compact()
        self.state.journal = journal
        self._fsync_task = asyncio.create_task(journal.fsync_forever())
        log.info("journal replayed", extra=logs.fields(records=replayed, queued=self.state.queued,
                                                       leased=len(self.state.leased)))

    async def close(self) -> None:
        if self._fsync_task is not None:
            self._fsync_task.cancel()
        if self.journal is not None:
            self.journal.close()

    async def _durable(self) -> None:
        """Return only once the changes just made are in the journal."""
        if self.journal is not None:
            await self.journal.committed()

    def _writable(self) -> None:
        """Refuse a change up front while the journal is behind, rather than
        make it in memory and then answer UNAVAILABLE for it: a refused
        ``take`` would otherwise leave leases no consumer knows of."""
        if self.journal is not None and self.journal.behind:
            raise StoreUnavailable("the journal cannot be written (disk full or failing)")

    async def submit(self, payments: Sequence[tuple[str, int]]) -> Submitted:
        self._writable()
        new, duplicates = self.state.submit(payments)
        await self._durable()
        return Submitted(new, duplicates, self.state.backlog)

    async def take(self, limit: int, holder: str, wait_seconds: float) -> list[Lent]:
        state = self.state
        deadline = time.monotonic() + wait_seconds
        while True:
            self._writable()
            taken = state.take(limit, holder=holder)
            remaining = deadline - time.monotonic()
            if taken or remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.work.wait(), min(remaining, state.until_next_due()))
        lent = [Lent(e.correlation_id, e.amount_cents, e.check, lease=e.lease, attempts=e.attempts)
                for e in taken]
        await self._durable()
        return lent

    async def complete(self, results: Sequence[Completed]) -> tuple[int, int]:
        self._writable()
        counts = self.state.complete(results)
        await self._durable()
        return counts

    async def requeue(self, handbacks: Sequence[HandBack]) -> int:
        self._writable()
        count = sum(self.state.requeue(h.correlation_id, h.check, h.delay_ms / 1000, lease=h.lease)
                    for h in handbacks)
        await self._durable()
        return count

    async def reject(self, rejections: Sequence[Rejection]) -> int:
        self._writable()
        count = sum(self.state.reject(r) for r in rejections)
        await self._durable()
        return count

    async def revive(self, correlation_id: str) -> State | None:
        self._writable()
        state = self.state.revive(correlation_id)
        await self._durable()
        return state

    async def expire(self) -> int:
        """Expire leases, forget up to ``EXPIRE_BATCH`` payments processed more
        than the retention ago; compact the journal when it has grown too big.
        A failed compaction (disk full) is logged and tried again next time."""
        now = time.monotonic()
        expired = self.state.expire_leases(now, self.liveness.lapsed(now))
        self.state.expire_done()
        journal = self.journal
        if journal is not None and journal.needs_compaction and now >= self._compact_not_before:
            if not self._compact():
                self._compact_not_before = now + 30  # a full disk: a temp file a second would not help
        return expired

    def _compact(self) -> bool:
        """Rewrite the journal as a snapshot; a failure (disk full) is logged,
        the old journal stays in use, and False says to try again later."""
        journal = self.journal
        assert journal is not None
        try:
            journal.rewrite(journal.snapshot(self.state))
        except OSError as exc:
            log.error("journal compaction failed", extra=logs.fields(error=repr(exc)))
            return False
        return True

    async def heartbeat(self, beat: Beat) -> Pulse:
        leads = self.liveness.beat(beat.consumer, beat.ttl_ms / 1000, beat.settle_ms / 1000,
                                   beat.stats, beat.leaving, time.monotonic())
        return Pulse(leads, self.liveness.known_health())

    async def report_api(self, instance: str, stats: bytes, ttl_ms: int) -> None:
        self._api_reports[instance] = (time.monotonic() + ttl_ms / 1000, stats)

    def _current_api_reports(self) -> tuple[bytes, ...]:
        now = time.monotonic()
        reports = self._api_reports
        for instance in [name for name, (lapses, _) in reports.items() if lapses <= now]:
            del reports[instance]
        return tuple(stats for _, stats in reports.values())

    async def claim_poll(self, processor: str, token: int, interval_ms: int) -> int:
        wait = self.liveness.claim_poll(processor, token, interval_ms / 1000, time.monotonic())
        return -1 if wait < 0 else math.ceil(wait * 1000)

    async def report_health(self, processor: str, token: int, failing: bool | None,
                            min_response_time_ms: int = 0, retry_after_ms: int = 0) -> bool:
        health = (None if failing is None
                  else Health(processor, failing, min_response_time_ms, now_ms()))
        return self.liveness.report(processor, token, health, retry_after_ms / 1000, time.monotonic())

    async def totals(self, from_us: int | None, to_us: int | None) -> dict[str, Totals]:
        return {name: self.state.totals(name, from_us, to_us) for name in PROCESSORS}

    async def lookup(self, correlation_id: str) -> Record | None:
        entry = self.state.lookup(correlation_id)
        if entry is None:
            return None
        return Record(entry.correlation_id, entry.state, entry.amount_cents, entry.attempts,
                      entry.processor, entry.requested_at_ms, entry.reason)

    async def purge(self) -> int:
        self._writable()
        purged = self.state.purge()
        await self._durable()  # the purge record first: a failed compaction below loses nothing
        if self.journal is not None:
            self._compact()
        return purged

    async def stats(self) -> StoreStats:
        state, counters = self.state, self.state.counters
        return StoreStats(queued=state.queued, delayed=state.delayed_count, leased=len(state.leased),
                          backlog=state.backlog, requeued=counters.requeued,
                          duplicates=counters.duplicates, stale_requeues=counters.stale_requeues,
                          late_completions=counters.late_completions, rejected=state.rejected_count,
                          consumers=tuple(h.stats for h in self.liveness.alive(time.monotonic())),
                          health=self.liveness.known_health(), retention_ms=state.retention_ms or 0,
                          expired_duplicates=counters.expired_duplicates,
                          apis=self._current_api_reports(),
                          journal_bytes=None if self.journal is None else self.journal.size_bytes,
                          journal_fsync=None if self.journal is None else self.journal.fsync_seconds)
