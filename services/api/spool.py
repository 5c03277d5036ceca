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
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple


class Spooled(NamedTuple):
    """A tuple, not a frozen dataclass: built once per request, where a frozen
    dataclass's ``__init__`` costs three ``object.__setattr__`` calls."""

    seq: int
    correlation_id: str
    amount_cents: int


class SpoolFull(Exception):
    """Accepting one more would put more than ``max_pending`` payments in waiting."""


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
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, initial_bytes)  # sparse: disk and memory only for the pages used
        self._map = mmap.mmap(self._fd, initial_bytes)
        self._end = 0  # where the content ends; the byte there is always NUL
        self.ready = asyncio.Event()
        if self._unsent:
            self.ready.set()

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
        if end >= len(self._map):
            self._map.resize(2 * end)  # also extends the file
        page = self._map
        page[end] = 0
        page[start + 1:end] = line[1:]
        page[start] = line[0]
        self._end = end

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
        if not sent and not self._unsent and self._end:
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

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
