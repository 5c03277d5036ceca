"""``python -m services.cache``: the gRPC cache/queue server."""

from __future__ import annotations

from services.common.notls import keep_tls_out

if __name__ == "__main__":  # run as the service, not imported (tests)
    keep_tls_out()  # before anything imports asyncio

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc

from services.cache.journal import FSYNC_POLICIES, Journal
from services.cache.server import CacheService, housekeeping_forever
from services.cache.store import Store
from services.common import logs, runtime
from services.common.config import env_choice, env_int, env_str, load_or_exit
from services.common.rpc import pipeline_pb2_grpc


@dataclass(frozen=True, slots=True)
class CacheSettings:
    address: str
    lease_ms: int
    journal_path: Path | None
    journal_fsync: str
    journal_compact_mb: int

    @classmethod
    def from_env(cls) -> CacheSettings:
        journal = env_str("CACHE_JOURNAL", "/var/lib/rinha/cache/journal.log")
        return cls(
            address=env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock"),
            lease_ms=env_int("CACHE_LEASE_MS", 60_000, minimum=1_000, maximum=3_600_000),
            journal_path=None if journal == "off" else Path(journal),
            journal_fsync=env_choice("CACHE_JOURNAL_FSYNC", "interval", FSYNC_POLICIES),
            journal_compact_mb=env_int("CACHE_JOURNAL_COMPACT_MB", 64, minimum=1),
        )


def _remove_stale_socket(address: str) -> None:
    if address.startswith("unix:"):
        path = address.removeprefix("unix:").removeprefix("//")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def serve(settings: CacheSettings) -> None:
    log = logs.setup("cache")
    store = Store(lease_seconds=settings.lease_ms / 1000)
    journal = None
    if settings.journal_path is not None:
        journal = Journal(settings.journal_path, fsync=settings.journal_fsync,
                          compact_bytes=settings.journal_compact_mb << 20)
        replayed = store.restore(journal.replay())
        journal.rewrite(store.snapshot())
        store.journal = journal
        log.info("journal replayed", extra=logs.fields(records=replayed, queued=store.queued,
                                                       leased=len(store.leased)))
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    pipeline_pb2_grpc.add_CacheServicer_to_server(CacheService(store), server)
    _remove_stale_socket(settings.address)
    server.add_insecure_port(settings.address)
    await server.start()
    background = [asyncio.create_task(housekeeping_forever(store))]
    if journal is not None:
        background.append(asyncio.create_task(journal.fsync_forever()))
    runtime.settle_after_startup()
    log.info("listening", extra=logs.fields(address=settings.address))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping", extra=logs.fields(queued=store.queued, in_flight=len(store.leased)))
    await server.stop(grace=2)
    for task in background:
        task.cancel()
    if journal is not None:
        journal.close()


def main() -> None:
    settings = load_or_exit(CacheSettings.from_env, "cache")
    runtime.run(lambda: serve(settings), "cache", default_loop="uvloop", default_policy="batch")


if __name__ == "__main__":
    main()
