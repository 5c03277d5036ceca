"""A real Prometheus (Debian's) scraping the stack's /metrics through nginx
every second, with the repo's rules loaded (ops/prometheus/): after a few
hundred payments, PromQL over its HTTP API agrees with the processors' own
counts, the histograms with the counters, and the rules evaluate.

Skipped where the ``prometheus`` binary cannot be installed (``make
prometheus``), except in CI (CI set), where that fails."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tools.clients import Backend, Load, Processors
from tools.prometheus_server import PrometheusNotInstalled, PrometheusServer, prometheus_binary
from tools.stack import Stack
from tools.waiting import wait_steady, wait_until

pytestmark = pytest.mark.integration

PAYMENTS = 300
# Amounts beyond the load's 19.90, so that the sums say something.
AMOUNTS = (0.01, 7.0, 1234.56, 99.99)
BAD_BODIES = (b'{"correlationId": "not-a-uuid", "amount": 1}', b'{"amount": 1}', b"{")


@pytest.fixture(scope="module")
def prometheus(stack: Stack) -> Iterator[PrometheusServer]:
    try:
        prometheus_binary()
    except PrometheusNotInstalled as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: CI must install it (make install)")
        pytest.skip(str(exc))
    directory = Path(tempfile.mkdtemp(prefix="rinha-prometheus-", dir="/tmp"))
    server = PrometheusServer(directory, [f"127.0.0.1:{stack.config.port}"], scrape_interval="1s",
                              evaluation_interval="1s")
    with server:
        server.wait_for_scrape(timeout=60)
        yield server
    shutil.rmtree(directory, ignore_errors=True)


def settled(what: str, read, expected, timeout: float = 30.0):
    """Poll ``read()`` until it equals ``expected`` (the apis and consumers
    report about once a second, and Prometheus scrapes every second); the
    last reading either way."""
    seen = []

    def check() -> bool:
        seen.append(read())
        return bool(seen[-1] == expected)

    wait_until(check, timeout=timeout, what=f"{what} == {expected}", ignoring=httpx.HTTPError,
               on_timeout=lambda: f"last seen {seen[-1] if seen else None}")
    return seen[-1]


def steady(prom: PrometheusServer, queries: tuple[str, ...], seconds: float = 3.0, timeout: float = 30.0) -> None:
    """Wait until the per-process counters have stopped moving for a few
    scrapes: the reports of earlier tests' requests (each api and consumer
    reports about once a second) are in before the test reads its baseline."""
    prom.wait_for_scrape()
    wait_steady(lambda: [prom.value(query) for query in queries], seconds=seconds, timeout=timeout, what=str(queries))


def test_prometheus_counters_agree_with_the_processors(clean: None, stack: Stack, backend: Backend,
                                                       processors: Processors,
                                                       prometheus: PrometheusServer) -> None:
    prom = prometheus
    # What Prometheus holds before: the per-process counters count since
    # their process started (only the ledger falls to 0 with the purge).
    steady(prom, ("sum(rinha_api_payments_total)", "sum(rinha_processor_requests_total)"))
    answers_before = prom.value("sum(rinha_api_payments_total)") or 0.0
    accepted_before = prom.value('sum(rinha_api_payments_total{status="202"})') or 0.0
    timed_before = prom.value("sum(rinha_api_payment_request_duration_seconds_count)") or 0.0
    calls_before = prom.values("sum by (processor) (rinha_processor_requests_total)", "processor")

    load = Load(stack.config.base_url, per_second=300, concurrency=4)
    load.start()
    wait_until(lambda: len(load.attempted) >= PAYMENTS - len(AMOUNTS) * 5, timeout=30, what="the load's payments")
    load.stop()
    accepted = len(load.accepted)
    for amount in AMOUNTS * 5:
        _, response = backend.pay(amount)
        assert response.status_code == 202, response.text
        accepted += 1
    for body in BAD_BODIES:
        response = backend.http.post("/payments", content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, response.text
    posts = len(load.attempted) + len(AMOUNTS) * 5 + len(BAD_BODIES)
    assert not load.refused and not load.unanswered, load.statuses()
    assert accepted >= PAYMENTS

    wait_until(lambda: backend.processed() >= accepted, timeout=60, what=f"{accepted} payments processed",
               ignoring=httpx.HTTPError)
    wait_until(lambda: backend.backlog() == 0, timeout=60, what="an empty queue", ignoring=httpx.HTTPError)
    theirs = {name: processors.summary(name) for name in ("default", "fallback")}
    assert sum(t["totalRequests"] for t in theirs.values()) == accepted, theirs

    # The ledger, as scraped, equals the processors' own counts and amounts.
    counts = settled("processed per processor",
                     lambda: prom.values("sum by (processor) (rinha_payments_processed_total)", "processor"),
                     {name: float(t["totalRequests"]) for name, t in theirs.items()})
    amounts = prom.values("sum by (processor) (rinha_payments_processed_amount_total)", "processor")
    for name, t in theirs.items():
        assert amounts[name] == pytest.approx(t["totalAmount"], abs=0.005), (name, amounts, theirs)
    # POST /payments answers: every 202 counted once, by the api that gave it.
    settled("202s counted", lambda: prom.value('sum(rinha_api_payments_total{status="202"})'),
            accepted_before + accepted)
    answered = settled("POSTs counted", lambda: prom.value("sum(rinha_api_payments_total)"), answers_before + posts)
    by_api = prom.values('sum by (instance) (rinha_api_payments_total{status="202"})', "instance")
    assert set(by_api) == {"api1", "api2"}, by_api
    # The request-duration histogram: every 202 and every refusal admitted to
    # the parser timed (a framing error is answered before it), the +Inf bucket
    # equal to the count, sums of seconds plausible.
    timed = prom.value("sum(rinha_api_payment_request_duration_seconds_count)") or 0.0
    assert accepted <= timed - timed_before <= answered - answers_before, (timed, timed_before, accepted)
    assert prom.value('sum(rinha_api_payment_request_duration_seconds_bucket{le="+Inf"})') == timed
    seconds = prom.value("sum(rinha_api_payment_request_duration_seconds_sum)") or 0.0
    assert 0 < seconds < timed * 0.1, (seconds, timed)  # under 100 ms a POST on average
    # Calls to the processors: at least one per payment charged (the
    # consumer reports with its heartbeat), each timed.
    def calls_made() -> dict[str, float]:
        now = prom.values("sum by (processor) (rinha_processor_requests_total)", "processor")
        return {name: now.get(name, 0) - calls_before.get(name, 0) for name in theirs}

    wait_until(lambda: all(made >= counts[name] for name, made in calls_made().items()), timeout=30,
               what=f"a call counted per payment processed ({counts})", ignoring=httpx.HTTPError)
    calls = prom.values("sum by (processor) (rinha_processor_requests_total)", "processor")
    timed_calls = prom.values("sum by (processor) (rinha_processor_request_duration_seconds_count)", "processor")
    assert timed_calls == calls
    # The queue, as scraped, is empty; a consumer is alive; the processors are up.
    settled("the backlog", lambda: prom.value("rinha:queue:backlog"), 0.0)
    assert prom.value('sum(rinha_queue_payments{state="pending"})') == 0
    assert (prom.value("max(rinha_consumers_alive)") or 0) >= 1
    assert prom.values("max by (processor) (rinha_processor_failing)", "processor") == {"default": 0,
                                                                                          "fallback": 0}

    # The recording rules evaluate over what was scraped.
    intake = prom.value("rinha:intake:rate1m")
    assert intake is not None and intake > 0, intake
    processed_rate = prom.values("rinha:processed:rate1m", "processor")
    assert processed_rate.get("default", 0) > 0, processed_rate
    p50 = prom.value("rinha:api_payment_request_duration_seconds:p50_1m")
    p99 = prom.value("rinha:api_payment_request_duration_seconds:p99_1m")
    assert p50 is not None and p99 is not None and 0 < p50 <= p99 <= 10, (p50, p99)
    call_p99 = prom.values("rinha:processor_request_duration_seconds:p99_1m", "processor")
    assert 0 < call_p99["default"] <= 10, call_p99
    assert prom.value("rinha:consumer_unknown_outcomes:unsettled") is not None
    for group in prom.rule_groups():
        for rule in group["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), (group["name"], rule)
    firing = [alert for group in prom.rule_groups() for rule in group["rules"]
              for alert in rule.get("alerts", []) if alert["state"] == "firing"]
    assert firing == [], firing

    # The target is up: one scrape of nginx gave every api's and consumer's series.
    (target,) = [t for t in prom.targets_up() if t["labels"]["job"] == "rinha"]
    assert target["health"] == "up", target
    assert prom.value('up{job="rinha"}') == 1
    instances = {s["metric"]["instance"] for s in prom.query("rinha_consumer_workers")}
    assert len(instances) == 1 and instances != {f"127.0.0.1:{stack.config.port}"}, instances
    print(f"\nPromQL after {accepted} payments ({posts} POSTs): processed {counts}, amounts {amounts}, "
          f"processors {theirs}; 202s +{accepted}; histogram count +{timed - timed_before:.0f}; "
          f"calls {calls}; intake {intake:.2f}/s; api p50 {p50 * 1000:.3f} ms p99 {p99 * 1000:.3f} ms; "
          f"processor call p99 {call_p99}")


def test_a_failing_processor_shows_and_trips_its_alert(clean: None, backend: Backend, processors: Processors,
                                                        prometheus: PrometheusServer) -> None:
    """The default processor failing: its health gauge goes to 1 through
    /metrics and the ProcessorDown rule takes it up (pending: it fires after a
    minute); once it is back, the held payments go through and the ledger as
    scraped equals its count again."""
    prom = prometheus
    processors.configure("default", failure=True)
    for _ in range(20):
        assert backend.pay()[1].status_code == 202
    settled("default's health as scraped",
            lambda: prom.values("max by (processor) (rinha_processor_failing)", "processor"),
            {"default": 1.0, "fallback": 0.0})

    def down_alerts() -> list[dict[str, object]]:
        return [alert for group in prom.rule_groups() for rule in group["rules"]
                if rule.get("name") == "ProcessorDown" for alert in rule.get("alerts", [])]

    wait_until(lambda: [a["labels"]["processor"] for a in down_alerts()] == ["default"], timeout=15,  # type: ignore[index]
               what="ProcessorDown pending for default", ignoring=httpx.HTTPError)
    processors.configure("default", failure=False)
    wait_until(lambda: backend.processed() >= 20, timeout=60, what="20 payments processed", ignoring=httpx.HTTPError)
    wait_until(lambda: backend.backlog() == 0, timeout=60, what="an empty queue", ignoring=httpx.HTTPError)
    count = processors.summary("default")["totalRequests"] + processors.summary("fallback")["totalRequests"]
    assert count == 20
    settled("processed as scraped", lambda: prom.value("sum(rinha_payments_processed_total)"), 20.0)
    settled("health as scraped", lambda: prom.values("max by (processor) (rinha_processor_failing)", "processor"),
            {"default": 0.0, "fallback": 0.0})
    wait_until(lambda: down_alerts() == [], timeout=15, what="ProcessorDown gone", ignoring=httpx.HTTPError)
