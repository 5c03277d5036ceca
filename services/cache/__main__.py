"""``python -m services.cache``: the gRPC cache/queue server."""

from __future__ import annotations

from services.common.config import env_str
from services.common.notls import keep_tls_out

if __name__ == "__main__":  # run as the service, not imported (tests)
    # Before anything imports asyncio; a cache on Redis also needs redis-py
    # imported while ``ssl`` is inert (CACHE_STORE is validated later).
    # prometheus_client (/metrics) imports ssl for push and TLS helpers it never uses here.
    inert = ("uvloop", "prometheus_client.exposition")
    keep_tls_out((*inert, "redis.asyncio") if env_str("CACHE_STORE", "memory") == "redis" else inert)

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from services.cache.health import add_health, watch_readiness
from services.cache.memory import MemoryStore
from services.cache.memory.journal import FSYNC_POLICIES
from services.cache.server import CacheService, housekeeping_forever
from services.cache.store import CacheStore
from services.common import logs, runtime, supervision
from services.common.config import ConfigError, check_port, env_choice, env_int, load_or_exit
from services.common.listen import replace_stale
from services.common.rpc import pipeline_pb2_grpc
from services.common.rpc_client import MESSAGE_OPTIONS

STORES = ("memory", "redis")


def redis_url(name: str, default: str) -> str:
    """``unix:///path/redis.sock[?db=N]`` or ``redis://host:port[/db]``."""
    value = env_str(name, default)
    if value.startswith("unix://"):
        if not value.removeprefix("unix://").startswith("/"):
            raise ConfigError(f"{name}={value!r}: a unix socket URL needs an absolute path (unix:///...)")
        return value
    if value.startswith("redis://"):
        check_port(name, value)
        parts = urlsplit(value)
        db = parts.path.strip("/")
        if not parts.hostname or (db and not db.isdigit()):
            raise ConfigError(f"{name}={value!r} must be redis://host[:port][/db]")
        return value
    raise ConfigError(f"{name}={value!r} must be unix:///path/redis.sock or redis://host:port/db")


@dataclass(frozen=True, slots=True)
class CacheSettings:
    address: str
    store: str
    lease_ms: int
    # How long a processed payment stays in the per-id index (deduplication,
    # lookups); the ledger keeps every window sum regardless. 24 h by default,
    # as the big payment APIs keep idempotency keys; at least a minute, so
    # that half of it (the expired-duplicate margin, store.py) dwarfs any
    # clock skew between the cache and the consumers.
    retention_ms: int
    journal_path: Path | None
    journal_fsync: str
    journal_compact_mb: int
    redis_url: str
    redis_timeout_ms: int

    @classmethod
    def from_env(cls) -> CacheSettings:
        journal = env_str("CACHE_JOURNAL", "/var/lib/rinha/cache/journal.log")
        store = env_choice("CACHE_STORE", "memory", STORES)
        return cls(
            address=env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock"),
            store=store,
            lease_ms=env_int("CACHE_LEASE_MS", 60_000, minimum=1_000, maximum=3_600_000),
            retention_ms=env_int("CACHE_RETENTION_S", 86_400, minimum=60) * 1000,
            journal_path=None if journal == "off" else Path(journal),
            journal_fsync=env_choice("CACHE_JOURNAL_FSYNC", "interval", FSYNC_POLICIES),
            journal_compact_mb=env_int("CACHE_JOURNAL_COMPACT_MB", 64, minimum=1),
            # Read (and so validated) only when it is used.
            redis_url=redis_url("REDIS_URL", "redis://redis:6379/0") if store == "redis" else "",
            redis_timeout_ms=env_int("REDIS_TIMEOUT_MS", 2_000, minimum=50, maximum=60_000),
        )


def make_store(settings: CacheSettings) -> CacheStore:
    if settings.store == "redis":
        from services.cache.redis_store import RedisStore  # only this mode needs redis-py
        return RedisStore(settings.redis_url, lease_ms=settings.lease_ms,
                          timeout_seconds=settings.redis_timeout_ms / 1000,
                          retention_ms=settings.retention_ms)
    return MemoryStore(lease_ms=settings.lease_ms, journal_path=settings.journal_path,
                       fsync=settings.journal_fsync, compact_bytes=settings.journal_compact_mb << 20,
                       retention_ms=settings.retention_ms)


async def serve(settings: CacheSettings) -> None:
    log = logs.setup("cache")
    store = make_store(settings)
    await store.start()
    server = grpc.aio.server(options=MESSAGE_OPTIONS)
    service = CacheService(store, retention_ms=settings.retention_ms,
                           supervisor_status=env_str(supervision.ENV, ""))
    pipeline_pb2_grpc.add_CacheServicer_to_server(service, server)
    health = await add_health(server)
    if settings.address.startswith("unix:"):  # gRPC also takes unix:///path
        replace_stale(settings.address.removeprefix("unix:").removeprefix("//"))
    server.add_insecure_port(settings.address)
    await server.start()
    housekeeping = asyncio.create_task(housekeeping_forever(store))
    readiness = asyncio.create_task(watch_readiness(store, health))
    runtime.settle_after_startup()
    log.info("listening", extra=logs.fields(address=settings.address, store=settings.store))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    readiness.cancel()
    await health.enter_graceful_shutdown()  # NOT_SERVING to every probe from now on
    await server.stop(grace=2)
    housekeeping.cancel()
    await store.close()


def main() -> None:
    settings = load_or_exit(CacheSettings.from_env, "cache")
    runtime.run(lambda: serve(settings), "cache", default_loop="uvloop", default_policy="batch")


if __name__ == "__main__":
    main()
