"""A long life, compressed: millions of payments through the cache's store at a
simulated clock, reporting memory and restart cost as it goes.

    python -m loadtest.soak [--millions 3] [--store memory|redis] [--json out.json]

What it shows: with a retention (``CACHE_RETENTION_S``), what the cache keeps
per payment stops growing once the retention has passed. Every
``--report-every`` payments it prints one row: RSS, ids in the index, ledger
buckets, journal size, and what a restart on a copy of the journal costs.

**memory** (default): a ``MemoryStore`` with its journal in a temporary
directory, driven through its own calls (submit, take, complete, and the
housekeeping ``expire``, which forgets due ids and compacts the journal), in
batches, with its wall clock replaced by a simulated one: ``--per-hour``
payments per simulated hour, so a 24 h retention is reached after
24 x ``--per-hour`` payments instead of a day. Each payment's requestedAt is
its own simulated millisecond (one ledger bucket each, the ledger's worst
case). RSS is this process's ``VmRSS`` after ``gc.collect()``; the restart is
a fresh ``MemoryStore.start()`` (replay, then the snapshot it writes) on a copy
of the journal, in a child process, so that its memory is not this one's.

**redis**: a ``RedisStore`` on a redis-server of its own (``tools/redis_server``,
AOF switched off: the soak measures memory, not the disk). Redis keeps time
itself (``TIME``), so there is no simulated clock: the retention is short
(``--redis-retention-s``) and the payments go through as fast as Redis takes
them, with requestedAt the wall clock. It reports Redis' ``used_memory`` and the
ids in its index; the index is flat once the retention has passed at a steady
rate, the ledger's level-0 buckets grow with the milliseconds elapsed.

The run takes a few minutes at the default size on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.cache.memory import MemoryStore
from services.cache.store import CacheStore, Completed
from services.common.timefmt import now_ms

HOUR_MS = 3_600_000
AMOUNT_CENTS = 1_990


@dataclass(slots=True)
class Row:
    """One report: the state after ``payments`` payments."""

    payments: int
    simulated_hours: float  # memory: on the simulated clock; redis: real hours
    rss_mb: float  # this process (memory) or Redis' used_memory (redis)
    index_ids: int  # payments the index still holds
    ledger_buckets: int  # memory: (processor, ms) buckets; redis: fields of lc:default (12 levels)
    journal_mb: float  # memory only: the journal on disk right now
    restart_s: float  # memory only: MemoryStore.start() on a copy of the journal (replay + snapshot)
    restart_rss_mb: float  # memory only: the RSS of the process that restarted
    snapshot_mb: float  # memory only: the snapshot that restart wrote
    snapshot_restart_s: float  # memory only: MemoryStore.start() again, on that snapshot alone
    elapsed_s: float  # wall time of the soak so far


class SimulatedClock:
    """Epoch ms that the soak moves forward; the store's ``clock``."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def correlation_id(n: int) -> str:
    """A UUID-shaped id, unique per ``n``, without uuid's cost."""
    return f"00000000-0000-4000-8000-{n:012x}"


def rss_mb() -> float:
    """This process's resident set, after a full collection."""
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _offset(base_ms: int, step_ms: float, k: int) -> int:
    """The simulated acceptance time of the k-th payment of a batch that starts at ``base_ms``."""
    return base_ms + int(k * step_ms)


async def push_batch(store: CacheStore, first: int, size: int,
                     requested_at: Callable[[int], int]) -> None:
    """Submit ``size`` new payments, lease them all, complete them all."""
    await store.submit([(correlation_id(n), AMOUNT_CENTS) for n in range(first, first + size)])
    lent = await store.take(size, "soak", 0)
    await store.complete([Completed(one.correlation_id, "default", one.amount_cents, requested_at(k))
                          for k, one in enumerate(lent)])
    await store.expire()


# -- memory ------------------------------------------------------------------
async def soak_memory(args: argparse.Namespace, directory: Path) -> list[Row]:
    clock = SimulatedClock(now_ms())
    retention_ms = int(args.retention_hours * HOUR_MS)
    step_ms = HOUR_MS / args.per_hour  # simulated ms between two payments
    path = directory / "journal.log"
    store = MemoryStore(lease_ms=60_000, journal_path=path, fsync="never",
                        compact_bytes=args.compact_mb << 20, retention_ms=retention_ms)
    store.state.clock = clock
    await store.start()
    started, origin, rows = time.monotonic(), clock.ms, []
    total = int(args.millions * 1_000_000)
    done = 0
    try:
        while done < total:
            size = min(args.batch, total - done)
            await push_batch(store, done, size, functools.partial(_offset, clock.ms, step_ms))
            done += size
            clock.ms = origin + int(done * step_ms)
            if done % args.report_every == 0 or done == total:
                assert store.journal is not None
                store.journal.flush_now()
                restarted = restart_on_a_copy(path, directory, retention_ms, clock.ms)
                state = store.state
                rows.append(Row(done, round((clock.ms - origin) / HOUR_MS, 1), round(rss_mb(), 1),
                                len(state.entries), state.ledger.buckets(),
                                round(path.stat().st_size / 2**20, 1), round(restarted["seconds"], 2),
                                round(restarted["rss_mb"], 1), round(restarted["snapshot_mb"], 1),
                                round(restarted["snapshot_seconds"], 2), round(time.monotonic() - started, 1)))
                print_row(rows[-1], first=len(rows) == 1)
    finally:
        await store.close()
    return rows


def restart_on_a_copy(path: Path, directory: Path, retention_ms: int, clock_ms: int) -> dict[str, float]:
    """``MemoryStore.start()`` on a copy of the journal, in a child process:
    its seconds and RSS, the size of the snapshot it wrote, and the seconds of
    a second start on that snapshot alone. The journal on disk is anywhere
    between one and two snapshots long (compaction waits until it is twice the
    last one), so the first restart's time swings with it; the second is the
    floor."""
    copy = directory / "restart.log"
    shutil.copyfile(path, copy)
    try:
        out = subprocess.run([sys.executable, "-m", "loadtest.soak", "--restart", str(copy),
                              "--restart-retention-ms", str(retention_ms), "--restart-clock-ms", str(clock_ms)],
                             capture_output=True, text=True, check=True, timeout=600,
                             cwd=Path(__file__).resolve().parents[1])
        return json.loads(out.stdout)
    finally:
        copy.unlink(missing_ok=True)
        copy.with_suffix(".tmp").unlink(missing_ok=True)


async def restart(path: Path, retention_ms: int, clock_ms: int) -> dict[str, float]:
    """The child's side of ``restart_on_a_copy``."""
    result: dict[str, float] = {}
    for attempt in ("", "snapshot_"):
        store = MemoryStore(lease_ms=60_000, journal_path=path, fsync="never", retention_ms=retention_ms)
        store.state.clock = lambda: clock_ms
        started = time.perf_counter()
        await store.start()
        result[attempt + "seconds"] = time.perf_counter() - started
        if not attempt:
            result["rss_mb"] = rss_mb()
        await store.close()
        del store
        result["snapshot_mb"] = path.stat().st_size / 2**20
    return result


# -- redis -------------------------------------------------------------------
async def soak_redis(args: argparse.Namespace, directory: Path) -> list[Row]:
    import redis.asyncio as aioredis

    from services.cache.redis_store import PREFIX, RedisStore
    from tools.redis_server import RedisServer

    rows: list[Row] = []
    with RedisServer(directory / "redis") as server:
        client = aioredis.Redis.from_url(server.url)
        await client.config_set("appendonly", "no")
        store = RedisStore(server.url, lease_ms=60_000, retention_ms=int(args.redis_retention_s * 1000))
        await store.start()
        started = time.monotonic()
        total, done = int(args.millions * 1_000_000), 0
        try:
            while done < total:
                size = min(args.batch, total - done)
                await push_batch(store, done, size, lambda k: now_ms())
                done += size
                if done % args.report_every == 0 or done == total:
                    memory = await client.info("memory")
                    ids = await client.hlen(PREFIX + "pay")
                    fields = await client.hlen(PREFIX + "lc:default")
                    elapsed = time.monotonic() - started
                    rows.append(Row(done, round(elapsed / 3600, 3), round(memory["used_memory"] / 2**20, 1),
                                    ids, fields, 0.0, 0.0, 0.0, 0.0, 0.0, round(elapsed, 1)))
                    print_row(rows[-1], first=len(rows) == 1)
        finally:
            await store.close()
            await client.aclose()
    return rows


# -- output ------------------------------------------------------------------
COLUMNS = ("payments", "simulated_hours", "rss_mb", "index_ids", "ledger_buckets", "journal_mb",
           "restart_s", "restart_rss_mb", "snapshot_mb", "snapshot_restart_s", "elapsed_s")


def print_row(row: Row, first: bool) -> None:
    if first:
        print(" ".join(f"{name:>15}" for name in COLUMNS), flush=True)
    values = asdict(row)
    print(" ".join(f"{values[name]:>15}" for name in COLUMNS), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--millions", type=float, default=3.0, help="payments to push, in millions")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--batch", type=int, default=1000, help="payments per submit/take/complete")
    parser.add_argument("--report-every", type=int, default=1_000_000, help="payments between two rows")
    parser.add_argument("--per-hour", type=int, default=40_000,
                        help="memory: payments per simulated hour (24 h retention: 960k in the index)")
    parser.add_argument("--retention-hours", type=float, default=24.0, help="memory: the retention")
    parser.add_argument("--compact-mb", type=int, default=64, help="memory: CACHE_JOURNAL_COMPACT_MB")
    parser.add_argument("--redis-retention-s", type=float, default=20.0,
                        help="redis: the retention (Redis' own clock, so a real one)")
    parser.add_argument("--json", type=Path, help="also write the rows here as JSON")
    parser.add_argument("--restart", type=Path, help=argparse.SUPPRESS)  # the child of restart_on_a_copy
    parser.add_argument("--restart-retention-ms", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--restart-clock-ms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.report_every % args.batch:
        parser.error("--report-every must be a multiple of --batch")
    return args


def run(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="rinha-soak-") as tmp:
        soak = soak_memory if args.store == "memory" else soak_redis
        rows = asyncio.run(soak(args, Path(tmp)))
    if args.json is not None:
        args.json.write_text(json.dumps({"store": args.store, "argv": sys.argv[1:],
                                         "rows": [asdict(row) for row in rows]}, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.restart is not None:
        print(json.dumps(asyncio.run(restart(args.restart, args.restart_retention_ms, args.restart_clock_ms))))
        return
    run(args)


if __name__ == "__main__":
    main()
