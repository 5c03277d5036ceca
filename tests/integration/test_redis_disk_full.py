"""Redis on a full disk: its AOF cannot be written, it refuses writes
(MISCONF), and the store answers UNAVAILABLE instead of an error of unknown
meaning; when space returns, Redis writes its AOF again and so does the store.
Nothing it acknowledged is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.cache.redis_store import RedisStore
from services.cache.store import StoreUnavailable
from tools.redis_server import RedisServer

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
            refused = None
            for i in range(500):  # Redis notices at its next AOF write
                try:
                    await store.submit([(f"p{i}", 1)])
                    acknowledged.append(f"p{i}")
                except StoreUnavailable as exc:
                    refused = exc
                    break
                await asyncio.sleep(0.01)
            assert refused is not None and "MISCONF" in str(refused), refused
            disk.free()
            deadline = time.monotonic() + 15
            while True:  # Redis retries its AOF write about once a second
                try:
                    await store.submit([("after", 1)])
                    acknowledged.append("after")
                    break
                except StoreUnavailable:
                    assert time.monotonic() < deadline, "Redis did not take writes again"
                    await asyncio.sleep(0.2)
            for correlation_id in acknowledged:
                assert await store.lookup(correlation_id) is not None, correlation_id
        finally:
            await store.close()
