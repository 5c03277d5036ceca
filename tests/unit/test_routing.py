import pytest

from services.consumer import routing
from services.consumer.routing import ProcessorState, Router


def router(strategy: str, probe_interval: float = 0.05) -> Router:
    return Router(strategy, {n: ProcessorState(n) for n in ("default", "fallback")},
                  probe_interval_seconds=probe_interval)


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(ValueError):
        router("random")


def test_patient_never_uses_fallback() -> None:
    r = router("patient")
    r.outcome("default", ok=False)
    r.health("fallback", failing=False, min_response_time_ms=0, checked_at_ms=1)
    assert r.target() == "default"


def test_failover_uses_fallback_only_while_default_is_down() -> None:
    r = router("failover")
    assert r.target() == "default"
    r.outcome("default", ok=False)
    assert r.target() == "fallback"
    r.outcome("fallback", ok=False)
    assert r.target() == "default"  # both down: probe the cheap one
    r.outcome("default", ok=True)
    assert r.target() == "default"


class Clock:
    """Stands in for the time module in routing.py: time moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_all_permits_while_up_one_probe_while_down(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(routing, "time", clock)
    r = router("patient", probe_interval=1.0)
    permits = r.grant(30)
    assert len(permits) == 30 and r.outstanding == 30
    for permit in permits:
        permit.release()
    r.outcome("default", ok=False)
    assert r.grant(30) == []  # just failed: wait the probe interval
    clock.now += 0.5
    assert r.grant(30) == []  # half of it
    clock.now += 0.5
    (probe,) = r.grant(30)
    assert r.grant(30) == []  # the probe is still out
    probe.release()
    r.outcome("default", ok=True)
    assert len(r.grant(30)) == 30


def test_a_permit_is_given_back_once() -> None:
    r = router("patient")
    first, second = r.grant(2)
    first.release()
    first.release()  # the job and the loop both giving it back counts once
    assert r.outstanding == 1
    second.release()
    assert r.outstanding == 0


def test_health_report_overrides_observed_state() -> None:
    r = router("patient")
    r.outcome("default", ok=False)
    assert not r.usable()
    r.health("default", failing=False, min_response_time_ms=20, checked_at_ms=5)
    assert r.usable()
    assert r.states["default"].min_response_time_ms == 20
    r.health("default", failing=True, min_response_time_ms=20, checked_at_ms=6)
    assert not r.usable()
