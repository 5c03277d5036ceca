"""The api's spool: what this instance answered 202 for and the cache has not
acknowledged yet.

Each accepted payment is one line appended to a file with ``os.write`` before the
202 goes out: once in the page cache it survives a crash of this process (not of
the machine: no fsync, by design, for latency). At start-up every line still on
disk is replayed; the cache ignores ids it already holds, so replaying an
acknowledged line is harmless unless the cache was purged in between, so the
file is emptied as soon as everything in it has been acknowledged: after a crash
only the lines since the spool was last idle come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Spooled:
    seq: int
    correlation_id: str
    amount_cents: int


class SpoolFull(Exception):
    """Accepting one more would put more than ``max_pending`` payments in waiting."""


class Spool:
    def __init__(self, directory: Path, *, max_pending: int, compact_bytes: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.max_pending = max_pending
        self._compact_bytes = compact_bytes
        self._seq = 0
        self._unsent: deque[Spooled] = deque()
        self._sent: deque[Spooled] = deque()
        self._by_id: dict[str, Spooled] = {}
        self._old_segments: list[tuple[Path, int]] = []
        self.replayed = self._recover(directory)
        self._path = directory / f"spool-{time.time_ns()}.log"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self.ready = asyncio.Event()
        if self._unsent:
            self.ready.set()

    def _recover(self, directory: Path) -> int:
        for path in sorted(directory.glob("spool-*.log")):
            for line in path.read_bytes().splitlines():
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
        if self.pending + waiting_elsewhere >= self.max_pending:
            raise SpoolFull
        line = f"{correlation_id} {amount_cents}\n".encode()
        os.write(self._fd, line)
        self._size += len(line)
        item = self._push(correlation_id, amount_cents)
        self.ready.set()
        return item.seq

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
        if not sent and not self._unsent and self._size > self._compact_bytes:
            os.ftruncate(self._fd, 0)
            self._size = 0

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
        os.close(self._fd)
