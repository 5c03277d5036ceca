import random

from services.cache.memory.ledger import Ledger, ProcessorLedger
from services.cache.store import Totals


def brute(rows: list[tuple[int, int]], from_us: int | None, to_us: int | None) -> Totals:
    hits = [a for t, a in rows if (from_us is None or t * 1000 >= from_us) and (to_us is None or t * 1000 <= to_us)]
    return Totals(len(hits), sum(hits))


def test_window_bounds_are_inclusive() -> None:
    ledger = ProcessorLedger()
    for t in (1000, 2000, 3000):
        ledger.add(t, 100)
    assert ledger.totals(2_000_000, 2_000_000) == Totals(1, 100)
    assert ledger.totals(1_000_001, 2_999_999) == Totals(1, 100)
    assert ledger.totals(None, 2_000_000) == Totals(2, 200)
    assert ledger.totals(2_000_000, None) == Totals(2, 200)
    assert ledger.totals(3_000_001, None) == Totals(0, 0)
    assert ledger.totals() == Totals(3, 300)


def test_out_of_order_inserts_match_a_full_scan() -> None:
    rng = random.Random(7)
    ledger = ProcessorLedger()
    rows: list[tuple[int, int]] = []
    for i in range(3000):
        t = 1_000_000 + i * 3 + rng.randint(-200, 50)  # mostly in order, some late
        a = rng.randint(1, 10_000)
        ledger.add(t, a)
        rows.append((t, a))
        if i % 37 == 0:
            lo = rng.randint(999_000, 1_010_000) * 1000 + rng.randint(0, 999)
            hi = lo + rng.randint(0, 5_000_000)
            assert ledger.totals(lo, hi) == brute(rows, lo, hi)
    assert ledger.totals() == brute(rows, None, None)


def test_ledger_keeps_processors_apart_and_clears() -> None:
    ledger = Ledger(("default", "fallback"))
    ledger.add("default", 10, 5)
    ledger.add("fallback", 10, 7)
    assert ledger.totals("default") == Totals(1, 5)
    assert ledger.totals("fallback") == Totals(1, 7)
    ledger.clear()
    assert ledger.totals("default") == Totals(0, 0)
