from __future__ import annotations

import asyncio
import errno
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from services.cache.memory.journal import Journal
from services.cache.memory.state import MemoryState as Store
from services.cache.memory.store import MemoryStore
from services.cache.store import Completed, HandBack, Rejection, State, StoreUnavailable
from tools.waiting import wait_until_async

if TYPE_CHECKING:
    from conftest import SmallDisk  # tests/conftest.py


def state_of(store: Store) -> dict[str, tuple]:
    return {cid: (e.state if e.state is not State.DELAYED else State.QUEUED, e.check,
                  e.processor, e.requested_at_ms, e.amount_cents, e.attempts,
                  e.holder if e.state is State.LEASED else "")
            for cid, e in store.entries.items()}


async def random_history(store: Store, rng: random.Random) -> None:
    for step in range(400):
        action = rng.random()
        if action < 0.4:
            store.submit([(f"id-{rng.randint(0, 150)}", rng.randint(1, 9999))])
        elif action < 0.6:
            store.take(rng.randint(1, 5), holder=rng.choice(("", "c1", "c2")))
        elif action < 0.8 and store.leased:
            cid = rng.choice(list(store.leased))
            store.complete([Completed(cid, rng.choice(("default", "fallback")), 100, 1_000 + step)])
        elif action < 0.97 and store.leased:
            cid = rng.choice(list(store.leased))
            store.requeue(cid, rng.choice(((), ("default",), ("default", "fallback"))), rng.choice((0, 0, 30)))
        elif store.leased:
            store.expire_leases(now=time.monotonic() + store.lease_seconds)
        await asyncio.sleep(0)  # let group commits happen


def test_replay_rebuilds_the_same_state(tmp_path: Path) -> None:
    async def scenario() -> tuple[Store, Store, Store]:
        journal = Journal(tmp_path / "j.log", fsync="never")
        journal.open()
        store = Store()
        store.journal = journal
        await random_history(store, random.Random(3))
        await journal.committed()
        replayed = Store()
        Journal(tmp_path / "j.log").replay_into(replayed)
        compacted_journal = Journal(tmp_path / "c.log")
        compacted_journal.rewrite(Journal.snapshot(store))
        compacted = Store()
        compacted_journal.replay_into(compacted)
        return store, replayed, compacted

    original, replayed, compacted = asyncio.run(scenario())
    assert state_of(replayed) == state_of(original)
    assert state_of(compacted) == state_of(original)
    for restored in (replayed, compacted):
        assert restored.queued == original.queued
        assert set(restored.leased) == set(original.leased)
        for name in ("default", "fallback"):
            assert restored.totals(name, None, None) == original.totals(name, None, None)


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_text("S a 100\nS b 200\nC a default 100 5\nS c 3")
    store = Store()
    assert Journal(path).replay_into(store) == 3
    assert set(store.entries) == {"a", "b"}
    assert store.entries["a"].state is State.DONE


def test_purge_compacts_to_nothing(tmp_path: Path) -> None:
    async def scenario() -> int:
        journal = Journal(tmp_path / "j.log")
        journal.open()
        store = Store()
        store.journal = journal
        store.submit([("a", 1), ("b", 2)])
        store.purge()
        journal.rewrite(Journal.snapshot(store))
        return (tmp_path / "j.log").stat().st_size

    assert asyncio.run(scenario()) == 0


def test_answers_wait_for_the_group_commit(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int]:
        journal = Journal(tmp_path / "j.log", fsync="always")
        journal.open()
        journal.submitted("a", 1)
        journal.submitted("b", 2)
        before = (tmp_path / "j.log").stat().st_size
        await journal.committed()
        return before, (tmp_path / "j.log").stat().st_size

    before, after = asyncio.run(scenario())
    assert before == 0 and after == len("S a 1\nS b 2\n")


def test_a_lease_from_an_older_journal_has_no_holder(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_text("S a 100\nS b 200\nL a\nH c1 b\n")
    store = Store()
    Journal(path).replay_into(store)
    assert {cid: e.holder for cid, e in store.leased.items()} == {"a": "", "b": "c1"}


def test_a_journal_written_before_the_lease_had_its_field_replays_to_the_same_leases(tmp_path: Path) -> None:
    """The records as earlier versions wrote them (the lease then travelled as
    Payment.attempts): "a" as records (handed back once, lent again), "b" as a
    snapshot writes a payment lent after three returns (its A record). The
    consumer that outlived the cache names the lease it holds: honoured; an
    earlier one: stale. The same after the snapshot the start-up writes."""
    path = tmp_path / "j.log"
    path.write_text("S a 100 1760000000000\nH c1 a\nR a 1760000000000 default\nH c1 a\n"
                    "S b 200 1760000000000\nH c1 b\nA b 3\nS c 300 1760000000000\nH c1 c\n")

    async def scenario() -> None:
        for _ in range(2):  # from those records, then from the snapshot written at start
            store = MemoryStore(lease_ms=60_000, journal_path=path)
            await store.start()
            leases = {cid: entry.lease for cid, entry in store.state.leased.items()}
            assert leases == {"a": 1, "b": 3, "c": 0}
            a, b = await store.lookup("a"), await store.lookup("b")
            assert a is not None and b is not None and (a.attempts, b.attempts) == (1, 3)
            assert store.state.entries["a"].check == ("default",)
            await store.close()
        store = MemoryStore(lease_ms=60_000, journal_path=path)
        await store.start()
        assert await store.requeue([HandBack("a", (), 0, 0)]) == 0
        assert await store.reject([Rejection("b", "default", "no", 2)]) == 0
        assert await store.requeue([HandBack("a", (), 0, 1)]) == 1
        assert await store.reject([Rejection("b", "default", "no", 3)]) == 1
        assert (await store.stats()).stale_requeues == 2
        await store.close()

    asyncio.run(scenario())


# -- disk full, I/O errors ----------------------------------------------------

REAL_WRITE = os.write


class FlakyWrites:
    """``os.write`` that writes at most ``step`` bytes a call and fails with
    ENOSPC once ``room`` bytes are written (``room`` None: no limit)."""

    def __init__(self, step: int = 1 << 30, room: int | None = None) -> None:
        self.step, self.room = step, room

    def __call__(self, fd: int, data: bytes) -> int:
        if self.room is not None and self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = min(len(data), self.step, len(data) if self.room is None else self.room)
        written = REAL_WRITE(fd, data[:count])
        if self.room is not None:
            self.room -= written
        return written


def submits(first: int, count: int) -> list[str]:
    return [f"S id-{i:05d} {100 + i}" for i in range(first, first + count)]


def record(journal: Journal, lines: list[str]) -> None:
    for line in lines:
        _, cid, cents = line.split()
        journal.submitted(cid, int(cents))


async def until_caught_up(journal: Journal, timeout: float = 3.0) -> None:
    """Resumes by itself: no call here writes anything, the journal's retry does."""
    async def caught_up() -> bool:
        await journal.committed()
        return True

    await wait_until_async(caught_up, timeout=timeout, what="the journal to catch up by itself",
                           ignoring=StoreUnavailable)


def lines_on_disk(path: Path) -> list[str]:
    data = path.read_bytes()
    assert data.endswith(b"\n") or not data, f"a torn line at the end: {data[-40:]!r}"
    return data.decode().splitlines()


def test_short_writes_write_every_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path / "j.log", fsync="never")
        journal.open()
        monkeypatch.setattr(os, "write", FlakyWrites(step=7))
        record(journal, submits(0, 50))
        await asyncio.wait_for(journal.committed(), 1)

    asyncio.run(scenario())
    assert lines_on_disk(tmp_path / "j.log") == submits(0, 50)


def test_a_failed_write_fails_the_waiters_fast_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's case: a write cut short then failing used to drop the
    buffered records and leave every waiter hanging."""
    writes = FlakyWrites(room=25)  # the second line is cut in the middle

    async def scenario() -> None:
        journal = Journal(tmp_path / "j.log", fsync="never")
        journal.open()
        monkeypatch.setattr(os, "write", writes)
        record(journal, submits(0, 5))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 1)
        # Behind: every answer fails at once, even one that recorded nothing.
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 0.1)
        record(journal, submits(5, 3))  # recorded while the disk is full
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 0.1)
        writes.room = None  # space returns
        await until_caught_up(journal)
        journal.close()

    asyncio.run(scenario())
    assert lines_on_disk(tmp_path / "j.log") == submits(0, 8)


def test_an_fsync_that_fails_is_not_a_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    failing = [True]

    def fsync(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    async def scenario() -> None:
        journal = Journal(tmp_path / "j.log", fsync="always")
        journal.open()
        monkeypatch.setattr(os, "fsync", fsync)
        record(journal, submits(0, 2))
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 1)
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 0.1)
        failing[0] = False
        await until_caught_up(journal)

    asyncio.run(scenario())
    assert lines_on_disk(tmp_path / "j.log") == submits(0, 2)


def test_a_line_a_crash_cut_short_is_cut_off_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    path.write_text("S a 1\nS b 2\nS c 12")  # "S c 123\n" was being written

    async def scenario() -> None:
        journal = Journal(path, fsync="never")
        journal.open()
        journal.submitted("d", 4)
        await journal.committed()

    asyncio.run(scenario())
    assert lines_on_disk(path) == ["S a 1", "S b 2", "S d 4"]
    store = Store()
    Journal(path).replay_into(store)
    assert set(store.entries) == {"a", "b", "d"}


# A real small disk (tmpfs, root only): short writes and ENOSPC as the kernel makes them.

def test_a_full_disk_cuts_a_write_short_and_the_line_is_completed_later(
        small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("256k")
    path = disk.path / "j.log"

    async def scenario() -> bytes:
        journal = Journal(path, fsync="interval")
        journal.open()
        record(journal, submits(0, 1))
        await journal.committed()
        disk.fill()  # what is left: the rest of the journal's first page
        record(journal, submits(1, 400))  # more than that: the write is cut short, then ENOSPC
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 1)
        torn = path.read_bytes()
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(journal.committed(), 0.1)
        record(journal, submits(401, 10))
        disk.free()
        await until_caught_up(journal)
        journal.close()
        return torn

    torn = asyncio.run(scenario())
    assert len(torn) > len(submits(0, 1)[0]) and not torn.endswith(b"\n"), "no write was cut short"
    assert lines_on_disk(path) == submits(0, 411)  # completed, not glued to the next record
    store = Store()
    assert Journal(path).replay_into(store) == 411


def test_compaction_on_a_full_disk_keeps_the_old_journal(small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("256k")
    path = disk.path / "j.log"

    async def scenario() -> None:
        journal = Journal(path, fsync="never")
        journal.open()
        record(journal, submits(0, 3))
        await journal.committed()
        disk.fill()
        with pytest.raises(OSError):
            journal.rewrite(submits(0, 400))
        assert not path.with_suffix(".tmp").exists()
        assert lines_on_disk(path) == submits(0, 3)
        disk.free()
        record(journal, submits(3, 2))  # the old journal is still the one appended to
        await journal.committed()

    asyncio.run(scenario())
    assert lines_on_disk(path) == submits(0, 5)


def test_a_cache_starting_on_a_full_disk_starts_and_resumes(small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("256k")
    path = disk.path / "journal.log"
    path.write_text("\n".join(submits(0, 20)) + "\nS id-99999 12")  # and a torn last line
    disk.fill()

    async def scenario() -> None:
        store = MemoryStore(lease_ms=5000, journal_path=path)
        await store.start()  # the compaction fails: the old journal stays in use
        assert store.state.queued == 20
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(store.submit([(f"new-{i:05d}", 1) for i in range(400)]), 1)
        with pytest.raises(StoreUnavailable):  # a duplicate: nothing of its own to write
            await asyncio.wait_for(store.submit([("id-00000", 100)]), 0.1)
        disk.free()
        assert store.journal is not None
        await until_caught_up(store.journal)
        await store.submit([("id-00000", 100)])
        await store.close()

    asyncio.run(scenario())
    restored = Store()
    Journal(path).replay_into(restored)
    assert len(restored.entries) == 420 and "id-99999" not in restored.entries
