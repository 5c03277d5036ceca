import asyncio
import random
import time
from pathlib import Path

from services.cache.memory.journal import Journal
from services.cache.memory.state import MemoryState as Store
from services.cache.store import Completed, State


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
    assert store.lookup("a").state is State.DONE


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
