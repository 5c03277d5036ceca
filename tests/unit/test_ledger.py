import random

from services.cache.memory.ledger import BLOCK, Ledger, ProcessorLedger
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


def test_per_millisecond_buckets_match_a_full_scan_under_random_inserts() -> None:
    """Many payments share a millisecond, some arrive late, some land in a
    bucket deep in the past: every window is still exact, and the ledger
    holds one bucket per distinct millisecond."""
    rng = random.Random(11)
    ledger = ProcessorLedger()
    rows: list[tuple[int, int]] = []
    t = 5_000
    for i in range(6000):
        t += rng.choice((0, 0, 0, 1, 2, 7))  # often the same millisecond
        when = t
        roll = rng.random()
        if roll < 0.05:
            when = t - rng.randint(1, 300)  # a little late
        elif roll < 0.06:
            when = rng.choice(rows)[0] if rows else t  # into an existing, older bucket
        elif roll < 0.065:
            when = rng.randint(0, 4_999)  # before everything
        amount = rng.randint(1, 100_000)
        ledger.add(when, amount)
        rows.append((when, amount))
        if i % 29 == 0:
            lo = rng.randint(0, t + 10) * 1000 + rng.choice((0, 1, 999))
            hi = lo + rng.randint(0, 3_000_000)
            assert ledger.totals(lo, hi) == brute(rows, lo, hi)
            assert ledger.totals(None, hi) == brute(rows, None, hi)
            assert ledger.totals(lo, None) == brute(rows, lo, None)
    assert ledger.totals() == brute(rows, None, None)
    assert len(ledger) == len(rows)
    assert ledger.buckets == len({when for when, _ in rows})
    for lo_ms in range(0, t, 97):  # every bucket boundary region, windows of a few ms
        assert ledger.totals(lo_ms * 1000, (lo_ms + 3) * 1000) == brute(rows, lo_ms * 1000, (lo_ms + 3) * 1000)


def test_block_boundaries_and_the_last_bucket_of_a_full_block() -> None:
    """Adds into the last bucket when it closes a full block of prefix sums
    must dirty the blocks after it (``BLOCK`` buckets per prefix)."""
    ledger = ProcessorLedger()
    rows: list[tuple[int, int]] = []
    for ms in range(BLOCK * 3):
        ledger.add(ms, 1)
        rows.append((ms, 1))
        assert ledger.totals() == brute(rows, None, None)  # sums, then adds to the same bucket
        ledger.add(ms, 2)
        rows.append((ms, 2))
        assert ledger.totals(None, ms * 1000) == brute(rows, None, ms * 1000)


def test_rows_and_extend_round_trip() -> None:
    rng = random.Random(5)
    ledger = ProcessorLedger()
    for _ in range(2000):
        ledger.add(rng.randint(0, 3000), rng.randint(1, 500))
    copy = ProcessorLedger()
    copy.extend(list(ledger.rows())[:700])
    copy.extend(list(ledger.rows())[700:])  # after what is there: the bulk path
    copy.extend([(10, 1, 5)])  # before: one add
    ledger.add(10, 5)
    assert list(copy.rows()) == list(ledger.rows())
    assert len(copy) == len(ledger)
    for lo in range(0, 3_000_000, 77_000):
        assert copy.totals(lo, lo + 500_000) == ledger.totals(lo, lo + 500_000)


def test_ledger_counts_payments_and_buckets() -> None:
    ledger = Ledger(("default", "fallback"))
    for ms in (1, 1, 2):
        ledger.add("default", ms, 10)
    ledger.add("fallback", 1, 10)
    assert (ledger.count(), ledger.buckets()) == (4, 3)
