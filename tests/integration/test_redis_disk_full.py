"""Redis on a full disk: its AOF cannot be written, it refuses writes
(MISCONF), and the store answers UNAVAILABLE instead of an error of unknown
meaning; when space returns, Redis writes its AOF again and so does the store.
Nothing it acknowledged is lost."""

from __future__ import annotations

import itertools

import pytest

from services.cache.redis_store import RedisStore
from services.cache.store import StoreUnavailable
from tools.redis_server import RedisServer
from tools.waiting import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


async def test_a_full_disk_under_redis_is_unavailable_then_recovers(small_disk) -> None:
    disk = small_disk("16m")
    with RedisServer(disk.path / "redis") as server:  # appendfsync everysec, as deployed
        store = RedisStore(server.url, lease_ms=60_000, prefix="{disk}:")
        await store.start()
        try:
            acknowledged = ["before"]
            await store.submit([("before", 1)])
            disk.fill()
            sent = itertools.count()

            async def a_refusal() -> StoreUnavailable | None:
                i = next(sent)
                try:
                    await store.submit([(f"p{i}", 1)])
                except StoreUnavailable as exc:
                    return exc
                acknowledged.append(f"p{i}")
                return None

            # Redis notices at its next AOF write.
            refused = await wait_until_async(a_refusal, timeout=10, what="Redis to refuse writes", interval=0.01)
            assert refused is not None and "MISCONF" in str(refused), refused
            disk.free()

            async def taken() -> bool:
                await store.submit([("after", 1)])
                return True

            # Redis retries its AOF write about once a second.
            await wait_until_async(taken, timeout=15, what="Redis to take writes again", interval=0.2,
                                   ignoring=StoreUnavailable)
            acknowledged.append("after")
            for correlation_id in acknowledged:
                assert await store.lookup(correlation_id) is not None, correlation_id
        finally:
            await store.close()
