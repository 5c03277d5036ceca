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
(written to a temporary file, fsynced, renamed over the old one). A rewrite that
fails (disk full) removes the temporary file and leaves the old journal in use.

Disk full, I/O errors: a write that fails, or is cut short, keeps the bytes not
written, in order, ahead of everything recorded after them; the waiting calls
fail with ``StoreUnavailable`` (the server answers UNAVAILABLE, the callers
retry), and so does every ``committed`` until the journal has caught up, since
an answer then would acknowledge a change that is not on disk. The write is
tried again at the next flush and every ``RETRY_SECONDS``, so the cache resumes
by itself when space returns. Writing exactly the bytes left over completes a
line cut short instead of gluing the next record to it; a line cut short that
a crash left behind is cut off when the journal is opened.

Lines (space-separated; correlationIds are UUIDs, check lists comma-joined):
    S <id> <cents> [<at>]                submitted (at: accepted, epoch ms; without it:
                                         unknown, never judged an expired duplicate)
    L <id> [<id> ...]                    leased, holder unknown (older journals)
    H <holder> <id> [<id> ...]           leased to the consumer <holder>
    C <id> <processor> <cents> <ms> [<at>]
                                         processed and added to the ledger (ms: requestedAt,
                                         at: processed, both epoch ms; older journals lack
                                         at: the replay's now)
    D <id> <processor> <cents> <ms> <at> processed, NOT added to the ledger: an expired
                                         duplicate (store.py), or a snapshot's processed
                                         payment (its ledger is in the T records; no S
                                         before it: a D of an unknown id creates it)
    T <processor> <ms> <count> <cents> [<+ms> <count> <cents> ...]
                                         ledger buckets (snapshots only): count payments
                                         worth cents in all at requestedAt ms; after the
                                         first, ms are deltas from the previous bucket's
    Y <id> [<id> ...]                    processed more than the retention ago: forgotten
                                         by the index (never by the ledger). Recorded
                                         rather than judged again on replay: expiry lags
                                         (bounded work per second), and an id accepted
                                         again after it must replay as new, one still
                                         held as a duplicate
    R <id> <due epoch ms> [<checks>]     handed back, not before <due>
    E <id>                               lease expired: check everywhere first
    J <id> <processor> <reason ...>      rejected by <processor> (the reason: the rest of the line)
    V <id>                               revived: a rejected payment queued again
    A <id> <n>                           returns to the queue so far, hence its lease's
                                         number (snapshots only: replaying the lines
                                         above counts them otherwise)
    X                                    purge

No record holds a lease number: a payment's lease is numbered by its count of
returns to the queue (``services/cache/store.py``), which the R, E and V
records (in a snapshot, an A record) rebuild, so a lease replayed from H or L
keeps the number its consumer holds, and a hand-back naming an earlier one is
still stale. Giving the lease a wire field of its own (``Payment.lease``;
before it, the same count travelled as ``Payment.attempts``) left this format
as it was: journals written before it replay to the same leases.

A snapshot holds the ledger as T records and the processed payments still in
the index as D alone, in completion order (expiry pops them in that order), so
its size and its replay grow with one retention's payments plus the ledger's
distinct milliseconds, not with every payment ever accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from services.cache.memory.state import QueueCounters
from services.cache.store import Completed, State, StoreUnavailable, one_line
from services.common import logs
from services.common.metrics import Durations
from services.common.payment import PROCESSORS
from services.common.timefmt import now_ms

if TYPE_CHECKING:
    from services.cache.memory.state import MemoryState

log = logging.getLogger("cache.journal")
FSYNC_POLICIES = ("never", "interval", "always")
RETRY_SECONDS = 0.5  # how soon a failed write is tried again when nothing else flushes
TAIL_CHUNK = 4096  # read backwards in steps of this to find the last whole line
LEDGER_LINE = 500  # ledger buckets per T record of a snapshot


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
        self._unwritten = b""  # encoded records a failed or short write left over, oldest first
        self._unsynced = False  # "always": written, but the fsync failed
        self._failure: OSError | None = None  # why the journal is behind; None: caught up
        self._retry: asyncio.TimerHandle | None = None
        self._snapshot_size = 0  # the file's size right after the last rewrite
        self.fsync_seconds = Durations()  # every fsync of the journal (/metrics)

    @property
    def size_bytes(self) -> int:
        return self._size

    def _fsync(self, fd: int) -> None:
        """fsync, timed (it may run in a worker thread: a plain observe is enough,
        the event loop only reads the counts)."""
        started = time.perf_counter()
        os.fsync(fd)
        self.fsync_seconds.observe(time.perf_counter() - started)

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
                state.submit([(args[0], int(args[1]))], int(args[2]) if len(args) > 2 else 0)
            elif kind == "L":
                state.restore_lease("", args)
            elif kind == "H":
                state.restore_lease(args[0], args[1:])
            elif kind == "C" or kind == "D":
                completed_at_ms = int(args[4]) if len(args) > 4 else now_ms()
                state.restore_completion(Completed(args[0], args[1], int(args[2]), int(args[3])),
                                         completed_at_ms, counted=kind == "C", create=kind == "D")
            elif kind == "T":
                state.restore_ledger(args[0], self._buckets(args[1:]))
            elif kind == "Y":
                state.restore_forgotten(args)
            elif kind == "R":
                check = tuple(args[2].split(",")) if len(args) > 2 and args[2] else ()
                state.requeue(args[0], check, max(0, int(args[1]) - now_ms()) / 1000)
            elif kind == "E":
                state.expire(args[0])
            elif kind == "J":
                state.restore_rejection(args[0], args[1], " ".join(args[2:]))
            elif kind == "V":
                state.revive(args[0])
            elif kind == "A":
                state.restore_attempts(args[0], int(args[1]))
            elif kind == "X":
                state.purge()
        state.counters = QueueCounters()
        return count

    # -- the records --------------------------------------------------------
    def submitted(self, correlation_id: str, amount_cents: int, accepted_at_ms: int = 0) -> None:
        """``accepted_at_ms`` 0: unknown (written as an S record without it)."""
        at = f" {accepted_at_ms}" if accepted_at_ms else ""
        self._record(f"S {correlation_id} {amount_cents}{at}")

    def leased(self, holder: str, correlation_ids: list[str]) -> None:
        ids = " ".join(correlation_ids)
        self._record(f"H {holder} {ids}" if holder else f"L {ids}")

    def completed(self, result: Completed, completed_at_ms: int, counted: bool) -> None:
        """``counted``: added to the ledger (C); else an expired duplicate (D)."""
        self._record(f"{'C' if counted else 'D'} {result.correlation_id} {result.processor} "
                     f"{result.amount_cents} {result.requested_at_ms} {completed_at_ms}")

    def forgotten(self, correlation_ids: list[str]) -> None:
        self._record(f"Y {' '.join(correlation_ids)}")

    def handed_back(self, correlation_id: str, delay_seconds: float, check: tuple[str, ...]) -> None:
        self._record(f"R {correlation_id} {now_ms() + int(delay_seconds * 1000)} {','.join(check)}")

    def expired(self, correlation_id: str) -> None:
        self._record(f"E {correlation_id}")

    def rejected(self, correlation_id: str, processor: str, reason: str) -> None:
        self._record(f"J {correlation_id} {processor} {one_line(reason)}")

    def revived(self, correlation_id: str) -> None:
        self._record(f"V {correlation_id}")

    def purged(self) -> None:
        self._record("X")

    @staticmethod
    def snapshot(state: MemoryState) -> Iterator[str]:
        """``state`` as journal lines (for compaction): the ledger (T), the
        processed payments in the index in completion order (D: done without
        touching the ledger, which the T records hold, forgotten ones included;
        no S, which would only cost a line each), then every other payment."""
        wall_now, mono_now = now_ms(), time.monotonic()
        due = {id(e): wall_now + int(max(0.0, t - mono_now) * 1000) for t, _, e in state.delayed}
        for processor in PROCESSORS:
            yield from Journal._ledger_lines(processor, state.ledger.rows(processor))
        entries = state.entries
        for entry in state.done:
            cid = entry.correlation_id
            if entries.get(cid) is not entry:  # forgotten, its reference not popped yet
                continue
            yield f"D {cid} {entry.processor} {entry.amount_cents} {entry.requested_at_ms} {entry.since_ms}"
            if entry.attempts:
                yield f"A {cid} {entry.attempts}"
        for entry in entries.values():
            cid = entry.correlation_id
            lease = f"H {entry.holder} {cid}" if entry.holder else f"L {cid}"
            if entry.state is State.DONE:
                continue
            yield f"S {cid} {entry.amount_cents} {entry.since_ms}"
            if entry.state is State.REJECTED:
                yield f"J {cid} {entry.processor} {one_line(entry.reason)}"
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

    @staticmethod
    def _ledger_lines(processor: str, rows: Iterable[tuple[int, int, int]]) -> Iterator[str]:
        """T records of ``LEDGER_LINE`` buckets each, ms after a line's first as deltas."""
        line: list[str] = []
        previous = 0
        for ms, count, cents in rows:
            line += (str(ms - previous), str(count), str(cents))
            previous = ms
            if len(line) == 3 * LEDGER_LINE:
                yield f"T {processor} {' '.join(line)}"
                line, previous = [], 0
        if line:
            yield f"T {processor} {' '.join(line)}"

    @staticmethod
    def _buckets(fields: list[str]) -> list[tuple[int, int, int]]:
        """A T record's ``ms count cents`` triples, its ms deltas summed back."""
        values = list(map(int, fields))
        rows, ms = [], 0
        for i in range(0, len(values) - 2, 3):
            ms += values[i]
            rows.append((ms, values[i + 1], values[i + 2]))
        return rows

    # -- writing ------------------------------------------------------------
    def open(self) -> None:
        """Open for appending, first cutting off a line cut short by an earlier
        process (disk full, then a crash): it was never acknowledged, and the
        next record appended would be glued to it."""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self._fd).st_size
        whole = _whole_lines_size(self.path, size)
        if whole < size:
            log.warning("cutting off a torn journal line", extra=logs.fields(bytes=size - whole))
            os.ftruncate(self._fd, whole)
        self._size = whole

    def _record(self, line: str) -> None:
        self._buffer.append(line)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def committed(self) -> None:
        """Wait until every record made so far is written.

        ``StoreUnavailable`` at once while earlier records are not written,
        even for a call that recorded nothing (a duplicate submit): its answer
        would vouch for records that are not on disk."""
        if self._failure is not None:
            raise self._unavailable()
        if not self._buffer:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            self._write_out()
        except OSError as exc:
            self._fell_behind(exc)
            for future in waiters:
                if not future.done():
                    future.set_exception(self._unavailable())
            return
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def _write_out(self) -> None:
        """Write every pending record, the bytes a failed write left over first.

        ``os.write`` may write fewer bytes than asked (a disk filling up): the
        loop writes the rest, and on an error what is left stays at the front,
        so the file only ever grows by the next bytes of the same lines."""
        if self._buffer:
            self._unwritten += ("\n".join(self._buffer) + "\n").encode()
            self._buffer.clear()
        if self._unwritten:
            if self._fd < 0:  # opening failed earlier (start-up on a full disk)
                self.open()
            while self._unwritten:
                written = os.write(self._fd, self._unwritten)
                if not written:
                    raise OSError(errno.ENOSPC, "the journal write made no progress")
                self._unwritten = self._unwritten[written:]
                self._size += written
                self._dirty = self._unsynced = True
        if self._unsynced and self.fsync == "always":
            self._fsync(self._fd)
        self._unsynced = False
        if self._failure is not None:
            log.warning("journal written again: the cache answers again",
                        extra=logs.fields(after=repr(self._failure)))
            self._failure = None

    def _fell_behind(self, exc: OSError) -> None:
        if self._failure is None:
            log.error("journal write failed: the cache answers UNAVAILABLE until it succeeds",
                      extra=logs.fields(error=repr(exc), unwritten_bytes=len(self._unwritten)))
        self._failure = exc
        self._retry_later()

    def _retry_later(self) -> None:
        """Try the write again soon even if no call makes a record: an idle
        cache must catch up by itself once space returns."""
        if self._retry is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous close or rewrite: the next flush tries again
            return
        self._retry = loop.call_later(RETRY_SECONDS, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if self._failure is not None:
            self._flush()

    def _unavailable(self) -> StoreUnavailable:
        failure = self._failure
        reason = (failure.strerror or repr(failure)) if failure is not None else "write failed"
        return StoreUnavailable(f"journal not writable: {reason}")

    def flush_now(self) -> None:
        if self._buffer or self._waiters or self._unwritten or self._failure is not None:
            self._flush()

    @property
    def behind(self) -> bool:
        """Records are waiting for a write that failed (a full disk): any new
        change would be answered UNAVAILABLE anyway."""
        return self._failure is not None

    @property
    def needs_compaction(self) -> bool:
        """Past ``compact_bytes`` *and* twice the last snapshot. A snapshot of
        one retention's payments (and of the ledger) may itself be larger than
        ``compact_bytes``; compacting whenever the journal is past it would then
        rewrite the whole state every second. Twice the snapshot keeps the
        journal, and a restart's replay, within a constant factor of the state."""
        return self._size > max(self.compact_bytes, 2 * self._snapshot_size)

    def rewrite(self, snapshot: Iterable[str]) -> None:
        """Replace the journal by ``snapshot`` (lines), atomically.

        On failure (disk full) the temporary file is removed and the old
        journal, whole, stays the one appended to (opened if it was not yet);
        the error is raised for the caller to log."""
        self.flush_now()
        temporary = self.path.with_suffix(".tmp")
        try:
            with temporary.open("w") as target:
                for line in snapshot:
                    target.write(line + "\n")
                target.flush()
                self._fsync(target.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            if self._fd < 0:
                with contextlib.suppress(OSError):  # else the next write opens it
                    self.open()
            raise
        # The snapshot holds every change made so far, written or not: nothing is behind.
        self._unwritten = b""
        self._unsynced = False
        self._failure = None
        if self._fd >= 0:
            os.close(self._fd)
        self.open()
        self._snapshot_size = self._size

    async def fsync_forever(self, every_seconds: float = 1.0) -> None:
        if self.fsync != "interval":
            return
        while True:
            await asyncio.sleep(every_seconds)
            if self._dirty and self._fd >= 0:
                self._dirty = False
                try:
                    await asyncio.to_thread(self._fsync, self._fd)
                except OSError as exc:  # try again next time; the page cache still holds it
                    self._dirty = True
                    log.warning("journal fsync failed", extra=logs.fields(error=repr(exc)))

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._fd >= 0:
            self.flush_now()
            if self._failure is not None:  # never acknowledged: the callers were told UNAVAILABLE
                log.error("journal closed with records not written",
                          extra=logs.fields(error=repr(self._failure),
                                            unwritten_bytes=len(self._unwritten)))
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("journal fsync at close failed", extra=logs.fields(error=repr(exc)))
            os.close(self._fd)
            self._fd = -1


def _whole_lines_size(path: Path, size: int) -> int:
    """The length of ``path``'s first ``size`` bytes up to its last newline."""
    if size == 0:
        return 0
    with path.open("rb") as source:
        end = size
        while end > 0:
            start = max(0, end - TAIL_CHUNK)
            source.seek(start)
            newline = source.read(end - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            end = start
    return 0
