from services.cache.memory.state import MemoryState as Store
from services.cache.store import Completed, Rejection, State, Totals


def ids(entries) -> list[str]:
    return [e.correlation_id for e in entries]


def test_duplicates_are_never_queued_twice() -> None:
    store = Store()
    assert store.submit([("a", 1), ("b", 2), ("a", 1)]) == (2, 1)
    assert store.submit([("b", 2)]) == (0, 1)
    assert ids(store.take(10)) == ["a", "b"]
    assert store.take(10) == []


def test_completion_is_recorded_once() -> None:
    store = Store()
    store.submit([("a", 190)])
    store.take(1)
    done = Completed("a", "default", 190, 1_000)
    assert store.complete([done, done]) == (1, 1)
    assert store.totals("default", None, None) == Totals(1, 190)
    assert store.entries["a"].state is State.DONE
    assert store.submit([("a", 190)]) == (0, 1)  # processed ids stay known


def test_unknown_ids_and_processors_are_ignored() -> None:
    store = Store()
    store.submit([("a", 1)])
    assert store.complete([Completed("zz", "default", 1, 1), Completed("a", "other", 1, 1)]) == (0, 2)


def test_requeue_with_delay_and_check() -> None:
    store = Store()
    store.submit([("a", 1)])
    store.take(1, now=0.0)
    assert store.requeue("a", ("default",), 5.0, now=0.0)
    assert store.take(1, now=4.9) == []
    (entry,) = store.take(1, now=5.0)
    assert entry.check == ("default",) and entry.attempts == 1
    assert not store.requeue("missing", (), 0)


def test_expired_lease_comes_back_first_to_be_checked_everywhere() -> None:
    store = Store(lease_seconds=10)
    store.submit([("a", 1), ("b", 1)])
    store.take(1, now=0.0)
    assert store.expire_leases(now=9.0) == 0
    assert store.expire_leases(now=10.0) == 1
    first = store.take(1, now=10.0)[0]
    assert first.correlation_id == "a" and first.check == ("default", "fallback")


def test_late_completion_of_a_requeued_payment_is_not_handed_out_again() -> None:
    store = Store(lease_seconds=1)
    store.submit([("a", 1)])
    store.take(1, now=0.0)
    store.expire_leases(now=2.0)
    assert store.queued == 1
    assert store.complete([Completed("a", "fallback", 1, 5)]) == (1, 0)
    assert store.queued == 0
    assert store.take(5) == []
    assert store.counters.late_completions == 1


def test_purge_forgets_everything() -> None:
    store = Store()
    store.submit([("a", 1)])
    store.take(1)
    store.complete([Completed("a", "default", 1, 1)])
    assert store.purge() == 1
    assert store.totals("default", None, None) == Totals(0, 0)
    assert store.submit([("a", 1)]) == (1, 0)


def test_a_hand_back_from_an_expired_lease_does_not_cancel_the_current_one() -> None:
    store = Store(lease_seconds=10)
    store.submit([("a", 1)])
    first_lease = store.take(1, now=0.0)[0].lease  # what the consumer is sent
    assert store.expire_leases(now=10.0) == 1  # the first job outlived its lease
    second_lease = store.take(1, now=10.0)[0].lease
    assert (first_lease, second_lease) == (0, 1)
    assert not store.requeue("a", (), 0, now=11.0, lease=0)  # the first job's report
    assert store.entries["a"].state is State.LEASED and store.entries["a"].check == ("default", "fallback")
    assert store.counters.stale_requeues == 1
    assert store.requeue("a", ("fallback",), 0, now=11.0, lease=1)  # the current job's report
    assert store.entries["a"].check == ("fallback",)


def test_a_hand_back_re_sent_after_a_lost_reply_is_ignored_once_lent_again() -> None:
    store = Store()
    store.submit([("a", 1)])
    store.take(1, now=0.0)
    assert store.requeue("a", ("default",), 0, now=0.0, lease=0)
    (again,) = store.take(1, now=0.0)
    assert not store.requeue("a", ("default",), 0, now=0.0, lease=0)
    assert store.entries["a"].state is State.LEASED
    assert store.requeue("a", (), 0, now=0.0, lease=again.lease)


def test_every_lending_is_under_a_new_lease_and_attempts_count_the_returns() -> None:
    store = Store(lease_seconds=10)
    store.submit([("a", 1)])
    leases = []
    (lent,) = store.take(1, now=0.0)
    leases.append(lent.lease)
    assert store.requeue("a", (), 0, now=0.0, lease=lent.lease)  # a hand-back
    (lent,) = store.take(1, now=0.0)
    leases.append(lent.lease)
    assert store.expire_leases(now=10.0) == 1  # a lease that ran out
    (lent,) = store.take(1, now=10.0)
    leases.append(lent.lease)
    assert store.reject(Rejection("a", "default", "no", lent.lease))
    assert store.revive("a") is State.QUEUED  # a revival
    (lent,) = store.take(1, now=10.0)
    leases.append(lent.lease)
    assert leases == [0, 1, 2, 3] and lent.attempts == 3
    for old in leases[:-1]:  # every earlier lease is stale, hand-back or rejection
        assert not store.requeue("a", (), 0, now=10.0, lease=old)
        assert not store.reject(Rejection("a", "default", "no", old))
    assert store.counters.stale_requeues == 6 and store.entries["a"].state is State.LEASED


def test_the_leases_of_gone_holders_come_back_and_the_others_stay() -> None:
    store = Store(lease_seconds=60)
    store.submit([("gone", 1), ("mine", 1)])
    store.take(1, now=0.0, holder="dead")
    store.take(1, now=0.0, holder="me")
    assert store.expire_leases(now=1.0, holders=frozenset({"dead"})) == 1
    assert [e.correlation_id for e in store.take(5, now=1.0)] == ["gone"]
    assert store.entries["gone"].check == ("default", "fallback")  # the dead one may have sent it
    assert store.entries["mine"].state is State.LEASED and store.entries["mine"].lease_until == 60.0


class Clock:
    """A wall clock (epoch ms) the test moves by hand."""

    def __init__(self, ms: int = 1_760_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


DAY = 86_400_000


def test_only_processed_payments_leave_the_index_after_the_retention() -> None:
    clock = Clock()
    store = Store(retention_ms=DAY, clock=clock)
    store.submit([("done", 100), ("queued", 1), ("leased", 1), ("rejected", 1), ("delayed", 1)])
    store.take(1)  # done
    store.complete([Completed("done", "default", 100, clock.ms)])
    (leased, rejected, delayed) = store.take(3, holder="c")
    store.reject(Rejection("rejected", "default", "no", rejected.lease))
    store.requeue("delayed", (), 3600.0 * 48)
    clock.ms += DAY
    assert store.expire_done() == 0  # exactly the retention: not yet
    clock.ms += 1
    assert store.expire_done() == 1
    assert store.lookup("done") is None
    assert {cid for cid in store.entries} == {"queued", "leased", "rejected", "delayed"}
    assert store.totals("default", None, None) == Totals(1, 100)  # the ledger keeps it
    assert store.backlog == 3 and store.done_count == 0 and store.counters.forgotten == 1
    assert store.submit([("done", 100)]) == (1, 0)  # a new life
    assert store.backlog == 4


def test_expiry_is_bounded_per_call_and_in_completion_order() -> None:
    clock = Clock()
    store = Store(retention_ms=60_000, clock=clock)
    store.submit([(f"p{i}", 1) for i in range(30)])
    taken = store.take(30)
    for entry in reversed(taken):  # completed in the reverse of acceptance order
        store.complete([Completed(entry.correlation_id, "default", 1, clock.ms)])
        clock.ms += 1
    clock.ms += 60_000 - 15  # the first 15 completed are due
    assert store.expire_done(limit=10) == 10
    assert store.expire_done(limit=10) == 5
    assert store.expire_done(limit=10) == 0
    assert sorted(store.entries) == sorted(f"p{i}" for i in range(15))
    assert store.backlog == 0 and store.totals("default", None, None) == Totals(30, 30)


def test_a_charge_from_an_expired_life_is_recorded_but_not_counted_again() -> None:
    clock = Clock()
    store = Store(retention_ms=DAY, clock=clock)
    store.submit([("a", 190)])
    store.take(1)
    first_charge = clock.ms + 5
    store.complete([Completed("a", "default", 190, first_charge)])
    clock.ms += DAY + 1_000
    store.expire_done()
    assert store.submit([("a", 190)]) == (1, 0)  # accepted again as new
    store.take(1)
    clock.ms += 30_000
    # The processor answers 422 and its copy carries the first requestedAt.
    assert store.complete([Completed("a", "default", 190, first_charge)]) == (1, 0)
    assert store.entries["a"].state is State.DONE
    assert store.totals("default", None, None) == Totals(1, 190)
    assert store.counters.expired_duplicates == 1 and store.backlog == 0


def test_a_charge_of_this_life_counts_even_with_a_skewed_clock() -> None:
    clock = Clock()
    store = Store(retention_ms=DAY, clock=clock)
    store.submit([("a", 190)])
    store.take(1)
    # The consumer's clock runs a minute behind the cache's: still this life.
    store.complete([Completed("a", "default", 190, clock.ms - 60_000)])
    assert store.totals("default", None, None) == Totals(1, 190)
    assert store.counters.expired_duplicates == 0


def test_without_a_retention_nothing_expires() -> None:
    clock = Clock()
    store = Store(clock=clock)
    store.submit([("a", 1)])
    store.take(1)
    store.complete([Completed("a", "default", 1, 1_000)])  # a made-up requestedAt counts
    clock.ms += 1000 * DAY
    assert store.expire_done() == 0 and store.lookup("a") is not None
    assert store.totals("default", None, None) == Totals(1, 1)


def test_purge_forgets_the_completion_order_too() -> None:
    clock = Clock()
    store = Store(retention_ms=60_000, clock=clock)
    store.submit([("a", 1)])
    store.take(1)
    store.complete([Completed("a", "default", 1, clock.ms)])
    store.purge()
    assert not store.done and store.done_count == 0 and store.backlog == 0
