"""Generated requests against the live api (through nginx), from its own
OpenAPI document: no 5XX, every answer as documented, and nothing queued that
was not answered 202.

POST /purge-payments is left out: it would wipe the state the last check
counts (its behaviour is covered by the pipeline tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tools.clients import Backend, wait_for

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).resolve().parents[2] / "services" / "api" / "openapi.json"
schema = schemathesis.openapi.from_path(OPENAPI).exclude(path="/purge-payments")
seen = {"baseline": None, "accepted": 0}


def cache_total(backend: Backend) -> int:
    """Every payment the cache holds: processed or not."""
    return backend.processed() + backend.backlog()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_behaves_as_documented(case: schemathesis.Case, backend: Backend) -> None:
    if seen["baseline"] is None:
        seen["baseline"] = cache_total(backend)
    response = case.call_and_validate(base_url=str(backend.http.base_url).rstrip("/"))
    if case.path == "/payments" and case.method.upper() == "POST" and response.status_code == 202:
        seen["accepted"] += 1


def test_nothing_was_queued_that_was_not_accepted(backend: Backend) -> None:
    assert seen["baseline"] is not None, "the generated tests did not run"
    wait_for(lambda: all(not instance for instance in spool_backlogs(backend)), 10, "spools to ship")
    grew = cache_total(backend) - seen["baseline"]
    assert 0 <= grew <= seen["accepted"]


def spool_backlogs(backend: Backend) -> list[int]:
    return [backend.http.get("/health").json()["spoolPending"] for _ in range(4)]
