"""The api's spool: what this instance answered 202 for and the cache has not
acknowledged yet.

Each accepted payment is one line stored in a shared memory map of a file before
the 202 goes out: a store into the page cache, so it survives a crash of this
process (not of the machine: no fsync, by design, for latency), without the
system call and the filesystem's bookkeeping an ``os.write`` costs on every
request. A line is published in an order that a crash at any instant cannot
tear: the NUL that ends the file's content moves past the new line first, the
line's bytes follow, and its first byte, overwriting the old NUL, goes last.
At start-up every complete line still on disk is replayed; the cache ignores
ids it already holds, so replaying an acknowledged line is harmless unless the
cache was purged in between, so the content is emptied (one NUL at the start)
as soon as everything in it has been acknowledged: after a crash only the lines
since the spool was last idle come back.

Disk full: a store into a page of a file that the filesystem cannot back
raises SIGBUS, which kills the process. So the file's blocks are reserved
(``posix_fallocate``) before the map covers them, at start and before each
growth; a store only ever lands in reserved blocks. A reservation that fails
raises ``SpoolUnavailable`` from ``append`` with nothing published, and the next
append tries again, so intake resumes by itself once there is room. Growth is
rare (the content restarts at zero whenever the spool is idle), so the request
path keeps its single bounds check.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import os
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

from services.common import logs

log = logging.getLogger("api.spool")
# The smallest growth tried when doubling finds no room, so a nearly full disk
# still takes payments for as long as it can (a multiple of any page size).
MIN_GROWTH_BYTES = 1 << 16
# Failures that space or the device returning can cure: the spool waits them out.
# Anything else at start-up (a missing permission, say) is a misconfiguration: raised.
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM})


class Spooled(NamedTuple):
    """A tuple, not a frozen dataclass: built once per request, where a frozen
    dataclass's ``__init__`` costs three ``object.__setattr__`` calls."""

    seq: int
    correlation_id: str
    amount_cents: int


class SpoolFull(Exception):
    """Accepting one more would put more than ``max_pending`` payments in waiting."""


class SpoolUnavailable(Exception):
    """The spool's file could not get the room for one more line (disk full, I/O
    error): the payment was not stored, and the next append tries again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Spool:
    def __init__(self, directory: Path, *, max_pending: int, initial_bytes: int = 1 << 20) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending
        self._seq = 0
        self._unsent: deque[Spooled] = deque()
        self._sent: deque[Spooled] = deque()
        self._by_id: dict[str, Spooled] = {}
        self._old_segments: list[tuple[Path, int]] = []
        self.replayed = self._recover(directory)
        self._path = directory / f"spool-{time.time_ns()}.log"
        self._initial_bytes = initial_bytes
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._capacity = 0  # bytes of the file reserved and mapped: stores land below this
        self.unstorable = 0  # payments refused for want of room (SpoolUnavailable)
        self._refusing = False  # the last reservation failed: logged once per outage
        self._closed = False
        self._end = 0  # where the content ends; the byte there is always NUL
        self.ready = asyncio.Event()
        if self._unsent:
            self.ready.set()
        self._start_reserved()

    def _start_reserved(self) -> None:
        """Reserve the initial room, or start without it on a full disk.

        Starting anyway, rather than failing, keeps the api up: it answers 503
        instead of crash-looping, and shipping the replayed lines lets their old
        segments be deleted, which is often what gives the room back. Each
        append tries the reservation again."""
        try:
            self._reserve(self._initial_bytes)
        except OSError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                raise
            self._refusing = True
            log.error("spool started without room: payments are refused (503) until there is some",
                      extra=logs.fields(path=str(self._path), error=repr(exc)))

    def _recover(self, directory: Path) -> int:
        for path in sorted(directory.glob("spool-*.log")):
            for line in path.read_bytes().partition(b"\0")[0].splitlines():
                parts = line.split(b" ")
                if len(parts) != 2 or not parts[1].isdigit():
                    continue  # a torn last line from a machine crash
                self._push(parts[0].decode(), int(parts[1]))
            self._old_segments.append((path, self._seq))
        return self._seq

    def _push(self, correlation_id: str, amount_cents: int) -> Spooled:
        self._seq += 1
        item = Spooled(self._seq, correlation_id, amount_cents)
        self._unsent.append(item)
        self._by_id[correlation_id] = item
        return item

    def append(self, correlation_id: str, amount_cents: int, waiting_elsewhere: int = 0) -> int:
        """Make the payment durable against a crash of this process; returns its seq.

        ``waiting_elsewhere`` (the cache's backlog) counts toward the bound, so
        one limit covers both a slow cache and stopped processors."""
        if len(self._unsent) + len(self._sent) + waiting_elsewhere >= self.max_pending:
            raise SpoolFull
        self._store(f"{correlation_id} {amount_cents}\n".encode())
        item = self._push(correlation_id, amount_cents)
        self.ready.set()
        return item.seq

    def _store(self, line: bytes) -> None:
        """Publish one line; a crash before the last store leaves it unwritten, never torn."""
        start, end = self._end, self._end + len(line)
        if end >= self._capacity:
            self._grow(end + 1)
        page = self._map
        assert page is not None  # _grow succeeded: mapped
        page[end] = 0
        page[start + 1:end] = line[1:]
        page[start] = line[0]
        self._end = end

    def _grow(self, needed: int) -> None:
        """Make at least ``needed`` bytes reserved and mapped; ``SpoolUnavailable``
        if the filesystem has no room (nothing published, nothing changed)."""
        if self._closed:  # shutting down, a request still in: refused, and the file left as it is
            raise SpoolUnavailable("shutting down")
        attempts = (max(2 * needed, self._initial_bytes), _round_up(needed))
        error: OSError | None = None
        for size in attempts:
            try:
                self._reserve(size)
            except OSError as exc:  # ENOSPC, EDQUOT, EIO...: whatever it is, refuse this one
                error = exc
                continue
            if self._refusing:
                self._refusing = False
                log.warning("spool has room again: payments are accepted",
                            extra=logs.fields(path=str(self._path), refused=self.unstorable))
            return
        self.unstorable += 1
        if not self._refusing:  # once per outage, not once per request
            self._refusing = True
            log.error("spool cannot grow: payments are refused (503) until there is room",
                      extra=logs.fields(path=str(self._path), error=repr(error)))
        raise SpoolUnavailable(_reason(error))

    def _reserve(self, size: int) -> None:
        """Reserve the file's blocks up to ``size``, then map them.

        The order matters: blocks first, map second, so the map never covers a
        byte the filesystem could fail to back (a store there would be SIGBUS).
        A reservation cut short leaves the map as it was."""
        if self._fd < 0:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.posix_fallocate(self._fd, self._capacity, size - self._capacity)
        if self._map is None:
            self._map = mmap.mmap(self._fd, size)
        else:
            self._map.resize(size)  # the file is already this long: only the map grows
        self._capacity = size

    def take_unsent(self, limit: int) -> list[Spooled]:
        batch: list[Spooled] = []
        unsent, sent = self._unsent, self._sent
        while unsent and len(batch) < limit:
            item = unsent.popleft()
            sent.append(item)
            batch.append(item)
        if not unsent:
            self.ready.clear()
        return batch

    def acknowledge(self, seq: int) -> None:
        """The cache holds everything up to ``seq``."""
        sent = self._sent
        while sent and sent[0].seq <= seq:
            item = sent.popleft()
            if self._by_id.get(item.correlation_id) is item:
                del self._by_id[item.correlation_id]
        while self._old_segments and self._old_segments[0][1] <= seq:
            path, _ = self._old_segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not sent and not self._unsent and self._end and self._map is not None:
            self._map[0] = 0
            self._end = 0

    def rewind(self) -> None:
        """The stream broke: whatever was sent but not acknowledged goes again."""
        if self._sent:
            self._sent.extend(self._unsent)
            self._unsent, self._sent = self._sent, deque()
            self.ready.set()

    def holds(self, correlation_id: str) -> bool:
        return correlation_id in self._by_id

    @property
    def pending(self) -> int:
        return len(self._unsent) + len(self._sent)

    @property
    def size_bytes(self) -> int:
        """The file's reserved size: what the spool takes on disk."""
        return self._capacity

    @property
    def is_open(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Release the map; an append after this is refused (``SpoolUnavailable``)."""
        self._closed = True
        self._capacity = 0
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _round_up(size: int) -> int:
    return -(-size // MIN_GROWTH_BYTES) * MIN_GROWTH_BYTES


def _reason(error: OSError | None) -> str:
    """A short reason for the answer: "No space left on device", not a repr."""
    if error is None:
        return "no room"
    return error.strerror or repr(error)
