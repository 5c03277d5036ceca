"""A rejected payment survives a restart of the memory store, through its
journal's records and through the snapshot that compaction writes."""

import asyncio
from pathlib import Path

from services.cache.memory import MemoryStore
from services.cache.store import Rejection, State


async def _reopened(path: Path) -> MemoryStore:
    store = MemoryStore(lease_ms=60_000, journal_path=path)
    await store.start()  # replays, then compacts into a snapshot
    return store


def test_rejected_and_revived_payments_come_back_as_they_were(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "journal.log"
        store = await _reopened(path)
        await store.submit([("a", 190), ("b", 290), ("c", 390)])
        taken = {lent.correlation_id: lent for lent in await store.take(3, "c1", 0)}
        assert await store.reject([Rejection(cid, "default", f"refused {cid}", taken[cid].lease)
                                   for cid in ("a", "b")]) == 2
        assert await store.revive("b") is State.QUEUED
        await store.close()
        for _ in range(2):  # once from the records, once from the snapshot written at start
            store = await _reopened(path)
            a, b = await store.lookup("a"), await store.lookup("b")
            assert a is not None and (a.state, a.processor, a.reason) == (State.REJECTED, "default", "refused a")
            assert b is not None and b.state is State.QUEUED and b.attempts == taken["b"].attempts + 1
            stats = await store.stats()
            assert (stats.rejected, stats.backlog) == (1, 2)
            await store.close()

    asyncio.run(scenario())
