"""Generated requests against the live api (through nginx), from its own
OpenAPI document: no 5XX, every answer as documented, and nothing queued that
was not answered 202. Each test sends its own requests and keeps its own
count: they pass alone and in any order.

POST /purge-payments is left out: it would wipe the state the last check
counts (its behaviour is covered by the pipeline tests)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

from services.common.payment import InvalidPayment, amount_to_cents
from tools.clients import Backend
from tools.waiting import wait_until

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).resolve().parents[2] / "services" / "api" / "openapi.json"
schema = schemathesis.openapi.from_path(OPENAPI).exclude(path="/purge-payments")
SLIP = json.loads(OPENAPI.read_text())["components"]["schemas"]["PaymentSlip"]["properties"]


def documented_slip(body: object) -> bool:
    """A slip the document accepts: its own pattern and bounds, plus what
    ``multipleOf`` cannot say and the amount's description does, a 2-decimal
    amount up to binary float noise (the rule ``amount_to_cents`` defines).
    schemathesis negates ``multipleOf`` by arithmetic that can land on exactly
    such a float (3.69 + 1 == 4.6899999999999995) and would call the 202 a
    schema violation."""
    if not isinstance(body, dict):
        return False
    correlation_id, amount = body.get("correlationId"), body.get("amount")
    if not isinstance(correlation_id, str) or not re.fullmatch(SLIP["correlationId"]["pattern"], correlation_id):
        return False
    try:
        amount_to_cents(amount)
    except InvalidPayment:
        return False
    return SLIP["amount"]["minimum"] <= amount <= SLIP["amount"]["maximum"]


def test_float_noise_is_a_documented_amount_and_a_third_decimal_is_not() -> None:
    slip = {"correlationId": "72469c2a-a1d2-5ac1-946b-cbf6ca7258f5"}
    assert documented_slip({**slip, "amount": 4.6899999999999995})
    assert documented_slip({**slip, "amount": 57 * 0.01})
    assert not documented_slip({**slip, "amount": 4.695})
    assert not documented_slip({**slip, "amount": 0.001})
    assert not documented_slip({"correlationId": "not-a-uuid", "amount": 1})


def cache_total(backend: Backend) -> int:
    """Every payment the cache holds: processed or not."""
    return backend.processed() + backend.backlog()


def spools_shipped(backend: Backend) -> None:
    """Every api's spool is empty: all it accepted is in the cache."""
    wait_until(lambda: all(not instance for instance in spool_backlogs(backend)), timeout=10,
               what="spools to ship", interval=0.1, ignoring=httpx.HTTPError)


def spool_backlogs(backend: Backend) -> list[int]:
    return [backend.http.get("/health").json()["spoolPending"] for _ in range(4)]


@dataclass
class Ledger:
    """One test's count: what the cache held when it started (every spool
    shipped) and how many of its requests were answered 202 to POST /payments."""

    backend: Backend
    baseline: int
    accepted: int = 0

    def grew(self) -> int:
        """How many payments the cache gained since the test started."""
        spools_shipped(self.backend)
        return cache_total(self.backend) - self.baseline


@pytest.fixture
def ledger(backend: Backend) -> Ledger:
    spools_shipped(backend)  # what earlier tests sent counts in the baseline, not in this test
    return Ledger(backend, cache_total(backend))


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_behaves_as_documented(case: schemathesis.Case, backend: Backend) -> None:
    excluded: list[Any] = []  # schemathesis' checks, typed by it more narrowly than it takes them
    negated = {where for where, part in case.meta.components.items() if part.mode.is_negative} if case.meta else set()
    if negated == {ParameterLocation.BODY} and documented_slip(case.body):
        excluded.append(negative_data_rejection)  # the body's negation left a slip valid as documented
    case.call_and_validate(base_url=str(backend.http.base_url).rstrip("/"), excluded_checks=excluded)


def test_nothing_was_queued_that_was_not_accepted(backend: Backend, ledger: Ledger) -> None:
    """Generated requests to every operation, valid and not, POST /payments the
    most: the cache gains no more payments than were answered 202."""
    payments = schema["/payments"]["POST"]
    requests = st.one_of([source.as_strategy(generation_mode=mode)
                          for source in (schema, payments) for mode in (GenerationMode.POSITIVE,
                                                                       GenerationMode.NEGATIVE)])
    base_url = str(backend.http.base_url).rstrip("/")

    @given(case=requests)
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    def send(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url)
        if case.path == "/payments" and case.method.upper() == "POST" and response.status_code == 202:
            ledger.accepted += 1

    send()
    assert 0 <= ledger.grew() <= ledger.accepted
