"""The ledger of processed payments, indexed by ``requestedAt``.

Per processor, two parallel arrays sorted by timestamp and a prefix sum of
amounts. A window summary is two bisections and a subtraction: O(log n).
Completions arrive almost in time order (requestedAt is stamped just before the
call), so inserts are nearly always appends; an out-of-order insert marks the
prefix sums dirty from its position, and the next summary rebuilds only that
tail.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate

from services.cache.store import Totals


class ProcessorLedger:
    __slots__ = ("_times", "_amounts", "_prefix", "_clean_upto")

    def __init__(self) -> None:
        self._times: list[int] = []
        self._amounts: list[int] = []
        self._prefix: list[int] = [0]
        self._clean_upto = 0

    def __len__(self) -> int:
        return len(self._times)

    def add(self, requested_at_ms: int, amount_cents: int) -> None:
        times = self._times
        if not times or requested_at_ms >= times[-1]:
            times.append(requested_at_ms)
            self._amounts.append(amount_cents)
            return
        at = bisect_right(times, requested_at_ms)
        times.insert(at, requested_at_ms)
        self._amounts.insert(at, amount_cents)
        self._clean_upto = min(self._clean_upto, at)

    def totals(self, from_us: int | None = None, to_us: int | None = None) -> Totals:
        """Payments with ``from_us <= requestedAt <= to_us`` (µs, both inclusive)."""
        times = self._times
        lo = 0 if from_us is None else bisect_left(times, -(-from_us // 1000))
        hi = len(times) if to_us is None else bisect_right(times, to_us // 1000)
        if hi <= lo:
            return Totals(0, 0)
        prefix = self._refresh_prefix()
        return Totals(hi - lo, prefix[hi] - prefix[lo])

    def _refresh_prefix(self) -> list[int]:
        start = self._clean_upto
        if start < len(self._amounts) or len(self._prefix) != len(self._amounts) + 1:
            del self._prefix[start + 1:]
            tail = accumulate(self._amounts[start:], initial=self._prefix[start])
            next(tail)  # the initial value is already in place
            self._prefix.extend(tail)
            self._clean_upto = len(self._amounts)
        return self._prefix

    def clear(self) -> None:
        self._times.clear()
        self._amounts.clear()
        self._prefix[:] = [0]
        self._clean_upto = 0


class Ledger:
    """One ``ProcessorLedger`` per processor name."""

    def __init__(self, processors: tuple[str, ...]) -> None:
        self._by_processor = {name: ProcessorLedger() for name in processors}

    def add(self, processor: str, requested_at_ms: int, amount_cents: int) -> None:
        self._by_processor[processor].add(requested_at_ms, amount_cents)

    def totals(self, processor: str, from_us: int | None = None,
               to_us: int | None = None) -> Totals:
        return self._by_processor[processor].totals(from_us, to_us)

    def count(self) -> int:
        return sum(len(ledger) for ledger in self._by_processor.values())

    def clear(self) -> None:
        for ledger in self._by_processor.values():
            ledger.clear()
