"""Break the running stack on purpose (SIGKILL mid-load) and check that nothing
accepted is lost or charged twice, and that the ledger equals the processors'."""

from __future__ import annotations

import time

import httpx
import pytest

from tools.clients import Backend, Load, Processors, Verdict, verify
from tools.stack import Stack
from tools.waiting import wait_until

pytestmark = pytest.mark.integration


def check_invariants(load: Load, backend: Backend, processors: Processors, *,
                     drain_timeout: float = 60) -> Verdict:
    verdict = verify(load, backend, processors, drain_timeout=drain_timeout)
    assert not verdict.problems(), verdict.problems()
    return verdict


def kill_under_load(stack: Stack, name: str, down_seconds: float = 1.0) -> Load:
    load = Load(stack.config.base_url)
    load.start()
    time.sleep(1.5)
    stack.kill(name)
    time.sleep(down_seconds)
    stack.restart(name)
    time.sleep(1.5)
    load.stop()
    return load


def test_cache_killed_and_restarted(clean: None, stack: Stack, backend: Backend, processors: Processors) -> None:
    load = kill_under_load(stack, "cache")
    figures = check_invariants(load, backend, processors)
    assert figures.accepted > 200 and figures.refused == 0


def test_consumer_killed_and_restarted(clean: None, stack: Stack, backend: Backend,
                                       processors: Processors) -> None:
    processors.configure("default", delay=300)  # keep payments in flight when it dies
    load = kill_under_load(stack, "consumer")
    processors.configure("default", delay=0)
    figures = check_invariants(load, backend, processors)
    assert figures.accepted > 200


def test_a_restarted_consumer_does_not_wait_out_a_dead_ones_leases(clean: None, stack: Stack, backend: Backend,
                                                                   processors: Processors) -> None:
    # Leases far longer than the drain allowed below: only the dead consumer's
    # lapsed heartbeat (3 s, then its settle time: the 2 s payment timeout plus
    # 1 s margin) can bring its payments back in time.
    stack.config.service_env["cache"] = {"CACHE_LEASE_MS": "300000"}
    stack.restart("cache")
    try:
        processors.configure("default", delay=300)
        load = Load(stack.config.base_url)
        load.start()
        time.sleep(1.5)
        stack.kill("consumer")
        in_flight = backend.stats()["queue"]["inFlight"]
        stack.restart("consumer")
        time.sleep(1.0)
        load.stop()
        processors.configure("default", delay=0)
        assert in_flight > 0, "the consumer died holding no lease: nothing to bring back"
        figures = check_invariants(load, backend, processors, drain_timeout=45)  # << the 300 s lease
        assert figures.accepted > 100
    finally:
        processors.configure("default", delay=0)
        stack.config.service_env.pop("cache", None)
        stack.restart("cache")
        # Both apis (nginx alternates) back on the cache before the next test purges it.
        wait_until(lambda: all(backend.http.get("/stats").status_code == 200 for _ in range(4)), timeout=15,
                   what="the apis to reach the restarted cache", ignoring=httpx.HTTPError)


@pytest.mark.parametrize("name", ["api1", "api2"])
def test_api_killed_and_restarted(clean: None, stack: Stack, backend: Backend, processors: Processors,
                                  name: str) -> None:
    load = kill_under_load(stack, name)
    figures = check_invariants(load, backend, processors)
    assert figures.accepted > 200
    # nginx sends new requests to the surviving instance: at most the requests
    # in flight at the killed one go unanswered.
    assert figures.refused + figures.unanswered <= 5


@pytest.mark.parametrize("name", ["cache", "consumer", "api1"])
def test_graceful_stop_and_start_under_load_loses_nothing(clean: None, stack: Stack, backend: Backend,
                                                          processors: Processors, name: str) -> None:
    load = Load(stack.config.base_url)
    load.start()
    time.sleep(1.0)
    stack.restart(name)  # SIGTERM, wait for it to exit, start again
    time.sleep(1.0)
    load.stop()
    figures = check_invariants(load, backend, processors)
    assert figures.accepted > 100


def test_a_full_backlog_answers_503_and_drains_later(clean: None, stack: Stack, backend: Backend,
                                                     processors: Processors) -> None:
    for api in ("api1", "api2"):
        stack.config.service_env[api] = {"API_MAX_BACKLOG": "30"}
        stack.restart(api)
    try:
        processors.configure("default", failure=True)
        answers = [backend.pay() for _ in range(120)]
        refused = [r for _, r in answers if r.status_code == 503]
        accepted = [cid for cid, r in answers if r.status_code == 202]
        assert refused and accepted
        assert refused[0].headers["Retry-After"] == "1" and "error" in refused[0].json()
        processors.configure("default", failure=False)
        wait_until(lambda: backend.processed() >= len(accepted), timeout=30, what="the backlog to drain",
                   ignoring=httpx.HTTPError)
        time.sleep(0.5)
        assert backend.processed() == len(accepted)
    finally:
        processors.configure("default", failure=False)
        for api in ("api1", "api2"):
            stack.config.service_env.pop(api, None)
            stack.restart(api)
