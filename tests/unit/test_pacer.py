"""The consumer's pacer: how long to wait after each batch so that, on average,
at most ``rate`` payments a second are taken."""

import pytest

from services.consumer.loop import Pacer


def test_no_rate_means_no_wait() -> None:
    pacer = Pacer(0)
    assert pacer.delay(30, now=0.0) == 0.0
    assert pacer.delay(1000, now=0.0) == 0.0


def test_back_to_back_batches_are_spaced_at_the_rate() -> None:
    pacer = Pacer(2000)
    now = 10.0
    taken = 0
    for _ in range(100):
        delay = pacer.delay(30, now)
        assert delay == pytest.approx(30 / 2000)
        now += delay  # the consumer sleeps, then takes the next batch at once
        taken += 30
    assert taken / (now - 10.0) == pytest.approx(2000)


def test_idle_time_builds_no_credit_for_a_burst() -> None:
    pacer = Pacer(1000)
    assert pacer.delay(10, now=0.0) == pytest.approx(0.010)
    # an hour idle, then a backlog: the first batch still waits its share
    assert pacer.delay(30, now=3600.0) == pytest.approx(0.030)


def test_an_empty_batch_owes_nothing() -> None:
    pacer = Pacer(1000)
    assert pacer.delay(0, now=5.0) == 0.0
    assert pacer.delay(5, now=5.0) == pytest.approx(0.005)
