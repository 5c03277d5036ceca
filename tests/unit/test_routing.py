import time

import pytest

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


def test_all_permits_while_up_one_probe_while_down() -> None:
    r = router("patient", probe_interval=0.05)
    assert r.permits(30) == 30
    r.release(30)
    r.outcome("default", ok=False)
    assert r.permits(30) == 0  # just failed: wait the probe interval
    time.sleep(0.06)
    assert r.permits(30) == 1
    assert r.permits(30) == 0  # the probe is still out
    r.release()
    r.outcome("default", ok=True)
    assert r.permits(30) == 30


def test_health_report_overrides_observed_state() -> None:
    r = router("patient")
    r.outcome("default", ok=False)
    assert not r.usable()
    r.health("default", failing=False, min_response_time_ms=20, checked_at_ms=5)
    assert r.usable()
    assert r.states["default"].min_response_time_ms == 20
    r.health("default", failing=True, min_response_time_ms=20, checked_at_ms=6)
    assert not r.usable()
