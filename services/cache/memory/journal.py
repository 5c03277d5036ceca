"""The memory store's append-only journal: its record format and its
durability, in one place. Every state change is a line, replayed at start-up,
so a killed cache comes back with its queue, leases and ledger.

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
    L <id> [<id> ...]                    leased, holder unknown (older journals)
    H <holder> <id> [<id> ...]           leased to the consumer <holder>
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
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from services.cache.memory.state import Counters
from services.cache.store import Completed, State
from services.common.timefmt import now_ms

if TYPE_CHECKING:
    from services.cache.memory.state import MemoryState

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

    def replay_into(self, state: MemoryState) -> int:
        """Rebuild ``state`` from the records on disk (before it is given this
        journal, so replaying writes nothing). Returns the records read."""
        assert state.journal is None, "replay before attaching the journal"
        count = 0
        for fields in self.replay():
            count += 1
            kind, args = fields[0], fields[1:]
            if kind == "S":
                state.submit([(args[0], int(args[1]))])
            elif kind == "L":
                state.restore_lease("", args)
            elif kind == "H":
                state.restore_lease(args[0], args[1:])
            elif kind == "C":
                state.complete([Completed(args[0], args[1], int(args[2]), int(args[3]))])
            elif kind == "R":
                check = tuple(args[2].split(",")) if len(args) > 2 and args[2] else ()
                state.requeue(args[0], check, max(0, int(args[1]) - now_ms()) / 1000)
            elif kind == "E":
                state.expire(args[0])
            elif kind == "A":
                state.restore_attempts(args[0], int(args[1]))
            elif kind == "X":
                state.purge()
        state.counters = Counters()
        return count

    # -- the records --------------------------------------------------------
    def submitted(self, correlation_id: str, amount_cents: int) -> None:
        self._record(f"S {correlation_id} {amount_cents}")

    def leased(self, holder: str, correlation_ids: list[str]) -> None:
        ids = " ".join(correlation_ids)
        self._record(f"H {holder} {ids}" if holder else f"L {ids}")

    def completed(self, result: Completed) -> None:
        self._record(f"C {result.correlation_id} {result.processor} {result.amount_cents} "
                     f"{result.requested_at_ms}")

    def handed_back(self, correlation_id: str, delay_seconds: float, check: tuple[str, ...]) -> None:
        self._record(f"R {correlation_id} {now_ms() + int(delay_seconds * 1000)} {','.join(check)}")

    def expired(self, correlation_id: str) -> None:
        self._record(f"E {correlation_id}")

    def purged(self) -> None:
        self._record("X")

    @staticmethod
    def snapshot(state: MemoryState) -> Iterator[str]:
        """``state`` as journal lines (for compaction)."""
        wall_now, mono_now = now_ms(), time.monotonic()
        due = {id(e): wall_now + int(max(0.0, t - mono_now) * 1000) for t, _, e in state.delayed}
        for entry in state.entries.values():
            cid = entry.correlation_id
            lease = f"H {entry.holder} {cid}" if entry.holder else f"L {cid}"
            yield f"S {cid} {entry.amount_cents}"
            if entry.state is State.DONE:
                yield f"C {cid} {entry.processor} {entry.amount_cents} {entry.requested_at_ms}"
            elif entry.state is State.LEASED:
                yield lease
                if entry.check:  # lent out again after a hand-back: keep what to check
                    yield f"R {cid} {wall_now} {','.join(entry.check)}"
                    yield lease
            elif entry.check or entry.state is State.DELAYED:
                yield f"L {cid}"
                yield f"R {cid} {due.get(id(entry), wall_now)} {','.join(entry.check)}"
            if entry.attempts:  # last: the lines above count hand-backs of their own
                yield f"A {cid} {entry.attempts}"

    # -- writing ------------------------------------------------------------
    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _record(self, line: str) -> None:
        self._buffer.append(line)
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
