"""Break the running stack on purpose (SIGKILL mid-load) and check that nothing
accepted is lost or charged twice, and that the ledger equals the processors'."""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from tests.integration.conftest import Backend, Processors, wait_for
from tools.stack import Stack

pytestmark = pytest.mark.integration


class Load(threading.Thread):
    """Posts payments through nginx at a steady pace, remembering every answer."""

    def __init__(self, base_url: str, per_second: float = 100) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=base_url, timeout=5)
        self.pause = 1 / per_second
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.unanswered: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            correlation_id = str(uuid.uuid4())
            try:
                response = self.http.post("/payments", json={"correlationId": correlation_id, "amount": 19.9})
                (self.accepted if response.is_success else self.refused).append(correlation_id)
            except httpx.HTTPError:
                self.unanswered.append(correlation_id)
            time.sleep(self.pause)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    @property
    def attempted(self) -> list[str]:
        return self.accepted + self.refused + self.unanswered


def check_invariants(load: Load, backend: Backend, processors: Processors) -> dict[str, int]:
    accepted = set(load.accepted)
    wait_for(lambda: processed_count(backend) >= len(accepted), 60, f"{len(accepted)} payments processed")
    wait_for(lambda: (q := backend.stats()["queue"])["pending"] + q["delayed"] + q["inFlight"] == 0,
             30, "an empty queue")
    where: dict[str, list[str]] = {}
    for correlation_id in load.attempted:
        where[correlation_id] = [n for n in ("default", "fallback") if processors.find(n, correlation_id)]
    lost = [c for c in accepted if not where[c]]
    double = [c for c, found in where.items() if len(found) > 1]
    assert not lost, f"{len(lost)} accepted payments never charged"
    assert not double, f"{len(double)} payments charged at both processors"
    for correlation_id, found in where.items():
        state = backend.http.get(f"/payments/{correlation_id}")
        if found:
            theirs = processors.find(found[0], correlation_id)
            ours = state.json()
            assert (ours["state"], ours["processor"], ours["requestedAt"]) == \
                ("processed", found[0], theirs["requestedAt"]), correlation_id
        else:
            assert state.status_code == 404 or state.json()["state"] != "processed"
    ours = backend.summary()
    for name in ("default", "fallback"):
        assert ours[name]["totalRequests"] == processors.summary(name)["totalRequests"]
    return {"accepted": len(accepted), "refused": len(load.refused), "unanswered": len(load.unanswered)}


def processed_count(backend: Backend) -> int:
    summary = backend.summary()
    return summary["default"]["totalRequests"] + summary["fallback"]["totalRequests"]


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
    assert figures["accepted"] > 200 and figures["refused"] == 0


def test_consumer_killed_and_restarted(clean: None, stack: Stack, backend: Backend,
                                       processors: Processors) -> None:
    processors.configure("default", delay=300)  # keep payments in flight when it dies
    load = kill_under_load(stack, "consumer")
    processors.configure("default", delay=0)
    figures = check_invariants(load, backend, processors)
    assert figures["accepted"] > 200


@pytest.mark.parametrize("name", ["api1", "api2"])
def test_api_killed_and_restarted(clean: None, stack: Stack, backend: Backend, processors: Processors,
                                  name: str) -> None:
    load = kill_under_load(stack, name)
    figures = check_invariants(load, backend, processors)
    assert figures["accepted"] > 200
    # nginx sends new requests to the surviving instance: at most the requests
    # in flight at the killed one go unanswered.
    assert figures["refused"] + figures["unanswered"] <= 5


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
    assert figures["accepted"] > 100


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
        wait_for(lambda: processed_count(backend) >= len(accepted), 30, "the backlog to drain")
        time.sleep(0.5)
        assert processed_count(backend) == len(accepted)
    finally:
        processors.configure("default", failure=False)
        for api in ("api1", "api2"):
            stack.config.service_env.pop(api, None)
            stack.restart(api)
