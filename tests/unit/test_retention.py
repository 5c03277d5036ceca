"""A long life in the memory store's journal: expired ids (Y records), the
ledger as per-millisecond T records in snapshots, processed payments as D
records, and replays of both that agree with the live state."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from services.cache.memory import MemoryStore
from services.cache.memory.journal import Journal
from services.cache.memory.state import MemoryState as Store
from services.cache.store import Completed, State, Totals

RETENTION = 60_000


class Clock:
    def __init__(self, ms: int = 1_760_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def state_of(store: Store) -> dict[str, tuple]:
    return {cid: (e.state if e.state is not State.DELAYED else State.QUEUED, e.check,
                  e.processor, e.requested_at_ms, e.amount_cents, e.attempts,
                  e.holder if e.state is State.LEASED else "",
                  e.since_ms if e.state is State.DONE else None)
            for cid, e in store.entries.items()}


def sums(store: Store) -> list[Totals]:
    return [store.totals(name, lo, hi) for name in ("default", "fallback")
            for lo, hi in ((None, None), (1_760_000_000_000_000, 1_760_000_100_000_000))]


def new_store(clock: Clock) -> Store:
    return Store(retention_ms=RETENTION, clock=clock)


async def long_history(store: Store, clock: Clock, rng: random.Random) -> set[str]:
    """Submits, takes, completes (many in one millisecond), expiries, and ids
    submitted again after they expired, some charged again by a 422 with the
    first requestedAt. Returns the ids that expired at least once."""
    first_charge: dict[str, int] = {}
    expired: set[str] = set()
    for _ in range(1500):
        clock.ms += rng.choice((0, 0, 1, 5, 300))
        action = rng.random()
        if action < 0.35:
            store.submit([(f"id-{rng.randint(0, 300)}", rng.randint(1, 9999))])
        elif action < 0.55:
            store.take(rng.randint(1, 5), holder=rng.choice(("", "c1")))
        elif action < 0.8 and store.leased:
            cid = rng.choice(list(store.leased))
            at = first_charge.get(cid, clock.ms) if cid in expired else clock.ms
            first_charge.setdefault(cid, at)
            store.complete([Completed(cid, rng.choice(("default", "fallback")), 100, at)])
        elif action < 0.9 and store.leased:
            store.requeue(rng.choice(list(store.leased)), ("default",), rng.choice((0, 30)))
        else:
            before = set(store.entries)
            store.expire_done(limit=rng.randint(1, 20))
            expired |= before - set(store.entries)
        await asyncio.sleep(0)  # let group commits happen
    return expired


def test_replay_and_snapshot_agree_with_a_long_life(tmp_path: Path) -> None:
    clock = Clock()

    async def scenario() -> tuple[Store, Store, Store, set[str]]:
        journal = Journal(tmp_path / "j.log", fsync="never")
        journal.open()
        store = new_store(clock)
        store.journal = journal
        expired = await long_history(store, clock, random.Random(17))
        await journal.committed()
        replayed = new_store(clock)
        Journal(tmp_path / "j.log").replay_into(replayed)
        snapshot = Journal(tmp_path / "s.log")
        snapshot.rewrite(Journal.snapshot(store))
        compacted = new_store(clock)
        snapshot.replay_into(compacted)
        return store, replayed, compacted, expired

    original, replayed, compacted, expired = asyncio.run(scenario())
    original.journal = None
    assert expired and original.counters.expired_duplicates > 0  # the history covers both
    lines = (tmp_path / "s.log").read_text().splitlines()
    assert any(line.startswith("T ") for line in lines)
    assert not any(line.startswith(("C ", "Y ")) for line in lines)
    assert "Y " in (tmp_path / "j.log").read_text()
    for restored in (replayed, compacted):
        assert state_of(restored) == state_of(original)
        assert sums(restored) == sums(original)
        assert (restored.backlog, restored.done_count) == (original.backlog, original.done_count)
    # The same ids come due afterwards, a few at a time, in completion order.
    clock.ms += RETENTION // 2
    due = 0
    while True:
        counts = [store.expire_done(limit=3) for store in (original, replayed, compacted)]
        assert counts[0] == counts[1] == counts[2]
        assert set(replayed.entries) == set(compacted.entries) == set(original.entries)
        if not counts[0]:
            break
        due += counts[0]
    assert due > 3


def test_an_id_accepted_again_after_it_expired_replays_as_new(tmp_path: Path) -> None:
    """Without its Y record the second S of an id would replay as a duplicate
    of its first life; and expiry lags, so the rule alone cannot tell."""
    clock = Clock()

    async def scenario() -> Store:
        journal = Journal(tmp_path / "j.log", fsync="never")
        journal.open()
        store = new_store(clock)
        store.journal = journal
        store.submit([("a", 100)])
        store.take(1)
        store.complete([Completed("a", "default", 100, clock.ms)])
        clock.ms += RETENTION + 1
        assert store.expire_done() == 1
        clock.ms += 1_000
        store.submit([("a", 100)])
        store.take(1)
        store.complete([Completed("a", "default", 100, clock.ms - RETENTION - 1_000)])  # the 422's copy
        await journal.committed()
        return store

    original = asyncio.run(scenario())
    assert original.counters.expired_duplicates == 1
    text = (tmp_path / "j.log").read_text()
    assert "\nY a\n" in text and "\nD a default 100 " in text
    replayed = new_store(clock)
    Journal(tmp_path / "j.log").replay_into(replayed)
    assert state_of(replayed) == state_of(original)
    assert replayed.totals("default", None, None) == Totals(1, 100)


def test_a_journal_from_before_the_retention_still_replays(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_text("S a 100\nS b 200\nH c1 a b\nC a default 100 5\n")
    clock = Clock()
    store = new_store(clock)
    Journal(path).replay_into(store)
    assert store.entries["a"].state is State.DONE
    assert store.totals("default", None, None) == Totals(1, 100)
    assert store.backlog == 1
    # A completion of b with any requestedAt counts: its acceptance is unknown.
    store.complete([Completed("b", "default", 200, 7)])
    assert store.totals("default", None, None) == Totals(2, 300)


def test_the_snapshot_grows_with_the_retention_not_with_every_payment(tmp_path: Path) -> None:
    """Ten retentions' worth of payments: the snapshot holds the ledger's
    buckets and one retention's processed ids."""
    clock = Clock()
    store = new_store(clock)
    for i in range(2000):
        store.submit([(f"p{i}", 100)])
        store.take(1)
        store.complete([Completed(f"p{i}", "default", 100, clock.ms)])
        clock.ms += RETENTION // 200  # 200 payments per retention
        store.expire_done()
    lines = list(Journal.snapshot(store))
    assert len(store.entries) <= 201
    assert sum(line.startswith("D ") for line in lines) == len(store.entries)
    restored = new_store(clock)
    journal = Journal(tmp_path / "s.log")
    journal.rewrite(lines)
    journal.replay_into(restored)
    assert restored.totals("default", None, None) == Totals(2000, 200_000)
    assert restored.ledger.buckets() == 2000


def test_the_memory_store_expires_in_its_housekeeping_and_says_its_retention(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = MemoryStore(lease_ms=60_000, journal_path=tmp_path / "j.log", retention_ms=RETENTION)
        clock = Clock()
        store.state.clock = clock
        await store.start()
        await store.submit([("a", 100)])
        await store.take(1, "c", 0)
        await store.complete([Completed("a", "default", 100, clock.ms)])
        clock.ms += RETENTION + 1
        await store.expire()
        assert await store.lookup("a") is None
        stats = await store.stats()
        assert (stats.retention_ms, stats.backlog) == (RETENTION, 0)
        await store.close()
        again = MemoryStore(lease_ms=60_000, journal_path=tmp_path / "j.log", retention_ms=RETENTION)
        again.state.clock = clock
        await again.start()
        assert await again.lookup("a") is None
        assert (await again.totals(None, None))["default"] == Totals(1, 100)
        await again.close()

    asyncio.run(scenario())


def test_a_snapshot_larger_than_the_threshold_is_not_rewritten_every_second(tmp_path: Path) -> None:
    """One retention's payments may make a snapshot bigger than
    CACHE_JOURNAL_COMPACT_MB: compaction then waits until the journal is
    twice the last snapshot, instead of rewriting it at every housekeeping."""
    async def scenario() -> list[int]:
        store = MemoryStore(lease_ms=60_000, journal_path=tmp_path / "j.log", compact_bytes=1024,
                            retention_ms=RETENTION)
        await store.start()
        assert store.journal is not None
        rewrites: list[int] = []
        rewrite = store.journal.rewrite

        def counting(lines):
            rewrite(lines)
            rewrites.append((tmp_path / "j.log").stat().st_size)

        store.journal.rewrite = counting  # type: ignore[method-assign]
        await store.submit([(f"p{i}", 100) for i in range(100)])  # ~2 KiB of records
        await store.expire()
        snapshot = rewrites[-1]
        for _ in range(3):
            await store.expire()  # nothing new: no rewrite
        await store.submit([(f"q{i}", 100) for i in range(200)])  # past twice the snapshot
        await store.expire()
        await store.close()
        assert snapshot > 1024
        return rewrites

    assert len(asyncio.run(scenario())) == 2
