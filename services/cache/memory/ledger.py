"""The ledger of processed payments, indexed by ``requestedAt``.

Per processor, one *bucket* per distinct ``requestedAt`` millisecond: its
payment count and amount. ``requestedAt`` has millisecond precision, so
per-millisecond totals answer every window exactly, and the ledger no longer
needs one row per payment: it is independent of the per-id index, which
forgets payments after the retention (``state.py``) while every window sum
stays exact forever (until a purge).

Storage: three parallel ``array``s (times ``q``, counts ``I``, amounts ``q``),
20 bytes per bucket instead of a Python list's 8-byte pointer plus a 32-byte
int object per value. Prefix sums are kept per *block* of ``BLOCK`` buckets,
not per bucket: a window sum is two bisections, two block prefixes and two
sums over at most ``BLOCK - 1`` buckets each (C-level ``sum`` over an array
slice), so O(log n + BLOCK) with a small constant, for a fraction of the
memory a per-bucket prefix (another 16 bytes per bucket) would take.

Completions arrive almost in time order (requestedAt is stamped just before the
call), so an add nearly always lands in the last bucket or appends one; an
out-of-order add inserts (a memmove of the tail) and marks the block prefixes
dirty from its block on, and the next summary rebuilds only that tail, as the
per-payment ledger did.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from services.cache.store import Totals

BLOCK = 64  # buckets per prefix-sum block: the most a window sum adds up by hand at each end
_EMPTY = -(2**63)  # _last of an empty ledger: before any millisecond


class ProcessorLedger:
    __slots__ = ("_times", "_counts", "_amounts", "_block_counts", "_block_amounts",
                 "_clean_blocks", "_open_times", "_open_counts", "_open_amounts", "_last")

    def __init__(self) -> None:
        self._times = array("q")  # sorted, distinct: the bucket's requestedAt (epoch ms)
        self._counts = array("I")  # payments in the bucket (4 bytes: 4 billion in one ms is plenty)
        self._amounts = array("q")  # their cents
        # Sums of the buckets before each block: _block_counts[b] covers blocks 0..b-1.
        self._block_counts: list[int] = [0]
        self._block_amounts: list[int] = [0]
        self._clean_blocks = 0  # blocks before this one have an up-to-date prefix
        # The newest buckets, in plain lists until there is a block of them:
        # appending to a list is cheaper than appending to an array, and this
        # is the completion path. Every read moves them into the arrays first.
        self._open_times: list[int] = []
        self._open_counts: list[int] = []
        self._open_amounts: list[int] = []
        self._last = _EMPTY  # the newest bucket's millisecond, open or not

    def __len__(self) -> int:
        """Payments counted (not buckets: see ``buckets``)."""
        return self.totals().count

    @property
    def buckets(self) -> int:
        self._seal()
        return len(self._times)

    def add(self, requested_at_ms: int, amount_cents: int, count: int = 1) -> None:
        """Count ``count`` payments of ``amount_cents`` in all at ``requested_at_ms``.

        The common cases first and cheapest: a later millisecond than any (an
        append to the open lists), or the newest bucket's while it is open."""
        if requested_at_ms > self._last:
            self._last = requested_at_ms
            open_times = self._open_times
            open_times.append(requested_at_ms)
            self._open_counts.append(count)
            self._open_amounts.append(amount_cents)
            if len(open_times) == BLOCK:
                self._seal()
            return
        if requested_at_ms == self._last and self._open_times:
            self._open_counts[-1] += count
            self._open_amounts[-1] += amount_cents
            return
        self._seal()
        self._into_existing(requested_at_ms, amount_cents, count)

    def _seal(self) -> None:
        """Move the open buckets into the arrays (appends: the block prefixes
        before them stay valid)."""
        if self._open_times:
            self._times.extend(self._open_times)
            self._counts.extend(self._open_counts)
            self._amounts.extend(self._open_amounts)
            self._open_times.clear()
            self._open_counts.clear()
            self._open_amounts.clear()

    def _into_existing(self, requested_at_ms: int, amount_cents: int, count: int) -> None:
        """An add at or before the newest bucket's millisecond (all sealed):
        into its bucket if there is one, else a new bucket inserted in place."""
        times = self._times
        at = len(times) - 1
        if requested_at_ms != times[at]:
            self._insert(requested_at_ms, amount_cents, count)
            return
        self._counts[at] += count
        self._amounts[at] += amount_cents
        if at // BLOCK < self._clean_blocks:  # a full block's last bucket: its successors' prefixes
            self._clean_blocks = at // BLOCK

    def _insert(self, requested_at_ms: int, amount_cents: int, count: int) -> None:
        times = self._times
        at = bisect_left(times, requested_at_ms)
        if times[at] == requested_at_ms:  # at < len: requested_at_ms < times[-1]
            self._counts[at] += count
            self._amounts[at] += amount_cents
        else:
            times.insert(at, requested_at_ms)
            self._counts.insert(at, count)
            self._amounts.insert(at, amount_cents)
        self._clean_blocks = min(self._clean_blocks, at // BLOCK)

    def extend(self, rows: Iterable[tuple[int, int, int]]) -> None:
        """Add ``(ms, count, amount)`` buckets. A snapshot's come in time order
        after everything already here: three C-level array extends, which is
        what makes replaying a long ledger cheap; any others, one ``add`` each."""
        rows = list(rows)
        if not rows:
            return
        self._seal()
        times, counts, amounts = zip(*rows, strict=False)
        if times[0] > self._last and all(a < b for a, b in zip(times, times[1:], strict=False)):
            self._times.extend(times)
            self._counts.extend(counts)
            self._amounts.extend(amounts)
            self._last = times[-1]
            return
        for ms, count, amount in rows:
            self.add(ms, amount, count)

    def rows(self) -> Iterator[tuple[int, int, int]]:
        """Every bucket as ``(ms, count, amount)``, in time order."""
        self._seal()
        return zip(self._times, self._counts, self._amounts, strict=False)

    def totals(self, from_us: int | None = None, to_us: int | None = None) -> Totals:
        """Payments with ``from_us <= requestedAt <= to_us`` (µs, both inclusive)."""
        self._seal()
        times = self._times
        lo = 0 if from_us is None else bisect_left(times, -(-from_us // 1000))
        hi = len(times) if to_us is None else bisect_right(times, to_us // 1000)
        if hi <= lo:
            return Totals(0, 0)
        self._refresh_blocks()
        count_hi, amount_hi = self._before(hi)
        count_lo, amount_lo = self._before(lo)
        return Totals(count_hi - count_lo, amount_hi - amount_lo)

    def _before(self, at: int) -> tuple[int, int]:
        """Count and amount of the buckets before index ``at``."""
        block, start = at // BLOCK, at - at % BLOCK
        return (self._block_counts[block] + sum(self._counts[start:at]),
                self._block_amounts[block] + sum(self._amounts[start:at]))

    def _refresh_blocks(self) -> None:
        """Bring the block prefixes up to date from the first dirty block on.
        A block's prefix covers the blocks before it, so the prefix of block b
        is stale when an earlier block changed; the last, partial block has a
        prefix too (``_before`` needs ``len // BLOCK``)."""
        wanted = len(self._times) // BLOCK + 1
        start = self._clean_blocks
        if start == wanted - 1 and len(self._block_counts) == wanted:
            return
        counts, amounts = self._block_counts, self._block_amounts
        del counts[start + 1:], amounts[start + 1:]
        c, a = counts[start], amounts[start]
        for block in range(start, wanted - 1):
            lo, hi = block * BLOCK, (block + 1) * BLOCK
            c += sum(self._counts[lo:hi])
            a += sum(self._amounts[lo:hi])
            counts.append(c)
            amounts.append(a)
        # Full blocks only are clean: the last, partial one still grows by appends.
        self._clean_blocks = wanted - 1

    def clear(self) -> None:
        self._times = array("q")
        self._counts = array("I")
        self._amounts = array("q")
        self._block_counts[:] = [0]
        self._block_amounts[:] = [0]
        self._clean_blocks = 0
        self._open_times.clear()
        self._open_counts.clear()
        self._open_amounts.clear()
        self._last = _EMPTY


class Ledger:
    """One ``ProcessorLedger`` per processor name."""

    def __init__(self, processors: tuple[str, ...]) -> None:
        self._by_processor = {name: ProcessorLedger() for name in processors}

    def add(self, processor: str, requested_at_ms: int, amount_cents: int) -> None:
        self._by_processor[processor].add(requested_at_ms, amount_cents)

    def extend(self, processor: str, rows: Iterable[tuple[int, int, int]]) -> None:
        self._by_processor[processor].extend(rows)

    def rows(self, processor: str) -> Iterator[tuple[int, int, int]]:
        return self._by_processor[processor].rows()

    def totals(self, processor: str, from_us: int | None = None,
               to_us: int | None = None) -> Totals:
        return self._by_processor[processor].totals(from_us, to_us)

    def count(self) -> int:
        """Payments counted, every processor."""
        return sum(len(ledger) for ledger in self._by_processor.values())

    def buckets(self) -> int:
        """Distinct (processor, millisecond) buckets: what the ledger's memory grows with."""
        return sum(ledger.buckets for ledger in self._by_processor.values())

    def clear(self) -> None:
        for ledger in self._by_processor.values():
            ledger.clear()
