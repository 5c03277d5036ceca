"""The cache's append-only journal: every state change is a line, replayed at
start-up, so a killed cache comes back with its queue, leases and ledger.

Group commit: records produced during one event-loop iteration are written
with a single ``os.write`` at the end of it, and an RPC that changed state
answers only after its records are written. Written means in the kernel's page
cache: it survives a crash of the cache process. Surviving a crash of the
machine depends on the fsync policy (``CACHE_JOURNAL_FSYNC``): ``interval``
(default) fsyncs once a second off the event loop, so at most about a second of
acknowledged changes can be lost with the machine; ``always`` fsyncs every
commit; ``never`` leaves it to the kernel.

Compaction: at start-up, after replay, and whenever the file outgrows
``compact_bytes``, the journal is rewritten as a snapshot of the current state
(written to a temporary file, fsynced, renamed over the old one).

Lines (space-separated; correlationIds are UUIDs, check lists comma-joined):
    S <id> <cents>                       submitted
    L <id> [<id> ...]                    leased to the consumer
    C <id> <processor> <cents> <ms>      processed (ms: requestedAt, epoch)
    R <id> <due epoch ms> [<checks>]     handed back, not before <due>
    E <id>                               lease expired: check everywhere first
    A <id> <n>                           hand-backs so far (snapshots only: replaying
                                         the lines above counts them otherwise)
    X                                    purge
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("cache.journal")
FSYNC_POLICIES = ("never", "interval", "always")


class Journal:
    def __init__(self, path: Path, *, fsync: str = "interval", compact_bytes: int = 64 << 20) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fsync = fsync
        self.compact_bytes = compact_bytes
        self._fd = -1
        self._size = 0
        self._buffer: list[str] = []
        self._flush_scheduled = False
        self._waiters: list[asyncio.Future[None]] = []
        self._dirty = False

    # -- reading ------------------------------------------------------------
    def replay(self) -> Iterator[list[str]]:
        """The records on disk, oldest first; a torn last line is skipped."""
        if not self.path.exists():
            return
        with self.path.open("rb") as source:
            for raw in source:
                if not raw.endswith(b"\n"):
                    log.warning("skipping a torn journal line")
                    break
                fields = raw.decode().split()
                if fields:
                    yield fields

    # -- writing ------------------------------------------------------------
    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def record(self, *fields: object) -> None:
        self._buffer.append(" ".join(map(str, fields)))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def committed(self) -> None:
        """Wait until every record made so far is written."""
        if not self._buffer:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        waiters, self._waiters = self._waiters, []
        if self._buffer:
            data = ("\n".join(self._buffer) + "\n").encode()
            self._buffer.clear()
            os.write(self._fd, data)
            self._size += len(data)
            self._dirty = True
            if self.fsync == "always":
                os.fsync(self._fd)
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def flush_now(self) -> None:
        if self._buffer or self._waiters:
            self._flush()

    @property
    def needs_compaction(self) -> bool:
        return self._size > self.compact_bytes

    def rewrite(self, snapshot: Iterable[str]) -> None:
        """Replace the journal by ``snapshot`` (lines), atomically."""
        self.flush_now()
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as target:
            for line in snapshot:
                target.write(line + "\n")
            target.flush()
            os.fsync(target.fileno())
        os.replace(temporary, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self.open()

    async def fsync_forever(self, every_seconds: float = 1.0) -> None:
        if self.fsync != "interval":
            return
        while True:
            await asyncio.sleep(every_seconds)
            if self._dirty and self._fd >= 0:
                self._dirty = False
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            self.flush_now()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
