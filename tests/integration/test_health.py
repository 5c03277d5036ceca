"""Liveness and readiness as an orchestrator asks for them (the probe CLI,
over each service's own socket), and /metrics against the processors' own
counts, on the real stack; then the states before readiness: an api whose
cache is not there yet, a consumer that knows no processor's health yet, a
cache whose Redis is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.cache.health import READINESS
from services.common.probe import grpc_serving, http_status
from tools import processes
from tools.clients import Backend, Processors
from tools.redis_server import RedisServer
from tools.stack import REPO, Stack
from tools.waiting import wait_until

pytestmark = pytest.mark.integration


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.common.probe", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=20)


def test_every_service_is_live_and_ready_as_the_probe_sees_it(stack: Stack, backend: Backend) -> None:
    for path in ("/health/live", "/health/ready"):
        response = backend.http.get(path)
        assert response.status_code == 200, response.text
    for api in ("api1", "api2"):
        assert _probe("http", f"unix:{stack.socket(api)}", "/health/ready").returncode == 0
    cache = stack.cache_address_of(1)
    assert _probe("grpc", cache).returncode == 0
    assert _probe("grpc", cache, READINESS).returncode == 0
    consumer = _probe("http", f"unix:{stack.node_dir(1) / 'consumer-health.sock'}", "/health/ready")
    assert consumer.returncode == 0, consumer.stderr
    missing = _probe("http", f"unix:{stack.node_dir(1) / 'no-such.sock'}", "/health/live")
    assert missing.returncode == 1 and "unhealthy" in missing.stderr


def _metrics(backend: Backend) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = backend.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def _total(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (found, have), value in metrics.items() if found == name and wanted <= have)


def test_metrics_agree_with_the_processors_and_cover_every_instance(
        clean: None, backend: Backend, processors: Processors) -> None:
    before = _metrics(backend)
    sent = 120
    for _ in range(sent):
        _, response = backend.pay()
        assert response.status_code == 202
    wait_until(lambda: backend.processed() >= sent, timeout=30, what="every payment processed",
               ignoring=httpx.HTTPError)
    # The apis and the consumer report once a second: wait for the counts to catch up.
    reads: list[dict[tuple[str, frozenset[tuple[str, str]]], float]] = []

    def caught_up() -> bool:
        reads.append(_metrics(backend))
        return (_total(reads[-1], "rinha_api_payments_total", status="202")
                - _total(before, "rinha_api_payments_total", status="202") >= sent
                and _total(reads[-1], "rinha_processor_requests_total", outcome="ok")
                - _total(before, "rinha_processor_requests_total", outcome="ok") >= sent)

    wait_until(caught_up, timeout=10, what="the apis' and the consumer's reports", ignoring=httpx.HTTPError)
    after = reads[-1]
    assert _sorted_202s(reads) == [_total(r, "rinha_api_payments_total", status="202") for r in reads], \
        "a counter went down between two scrapes"
    for name in ("default", "fallback"):
        theirs = processors.summary(name)
        assert _total(after, "rinha_payments_processed_total", processor=name) == theirs["totalRequests"]
        assert _total(after, "rinha_payments_processed_amount_total", processor=name) == pytest.approx(
            theirs["totalAmount"])
    accepted = (_total(after, "rinha_api_payments_total", status="202")
                - _total(before, "rinha_api_payments_total", status="202"))
    assert accepted == sent  # nothing else posted meanwhile: this test owns the stack
    instances = {dict(labels)["instance"] for (name, labels) in after if name == "rinha_api_payments_total"}
    assert instances == {"api1", "api2"}  # both, whichever one nginx asked
    for instance in instances:  # each whole request timed once (malformed ones are only counted)
        def grown(name: str, instance: str = instance) -> float:
            return _total(after, name, instance=instance) - _total(before, name, instance=instance)
        assert grown("rinha_api_payment_request_duration_seconds_count") == grown("rinha_api_payments_total")
    assert _total(after, "rinha_processor_requests_total", outcome="ok") >= sent
    assert _total(after, "rinha_consumers_alive") == 1
    assert _total(after, "rinha_queue_payments") == 0
    assert _total(after, "rinha_cache_journal_bytes") > 0


def _sorted_202s(reads: list[dict[tuple[str, frozenset[tuple[str, str]]], float]]) -> list[float]:
    return sorted(_total(r, "rinha_api_payments_total", status="202") for r in reads)


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(REPO), "LOG_LEVEL": "INFO", **env})


@pytest.fixture()
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        processes.stop(proc)


def _ready_json(listen: str) -> tuple[int, str]:
    transport = httpx.HTTPTransport(uds=listen.removeprefix("unix:"))
    with httpx.Client(transport=transport, base_url="http://api", timeout=3) as client:
        response = client.get("/health/ready")
    return response.status_code, response.json().get("why", "")


def test_an_api_is_live_at_once_and_ready_once_it_has_reached_the_cache(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    cache = f"unix:{tmp_path / 'cache.sock'}"
    api = f"unix:{tmp_path / 'api.sock'}"
    spawned.append(_spawn("services.api", {"API_LISTEN": api, "CACHE_ADDRESS": cache,
                                            "API_SPOOL_DIR": str(tmp_path / "spool")}, tmp_path / "api.log"))
    wait_until(lambda: (tmp_path / "api.sock").exists(), timeout=20, what="the api's socket")
    assert http_status(api, "/health/live") == 200
    status, why = _ready_json(api)
    assert (status, why) == (503, "the cache has not been reached yet")
    # The consumer, too, waits: no heartbeat accepted yet.
    consumer_health = f"unix:{tmp_path / 'consumer-health.sock'}"
    spawned.append(_spawn("services.consumer", {
        "CACHE_ADDRESS": cache, "CONSUMER_HEALTH_LISTEN": consumer_health,
        # Nothing listens there: no processor's health can become known.
        "PROCESSOR_DEFAULT_URL": "http://127.0.0.1:9", "PROCESSOR_FALLBACK_URL": "http://127.0.0.1:9"},
        tmp_path / "consumer.log"))
    wait_until(lambda: (tmp_path / "consumer-health.sock").exists(), timeout=20, what="the consumer's health socket")
    assert http_status(consumer_health, "/health/live") == 200
    assert _ready_json(consumer_health) == (503, "no heartbeat accepted by the cache yet")

    spawned.append(_spawn("services.cache", {"CACHE_ADDRESS": cache, "CACHE_JOURNAL": str(tmp_path / "journal.log")},
                          tmp_path / "cache.log"))
    wait_until(lambda: _ready_json(api)[0] == 200, timeout=20, what="the api ready once the cache is there",
               ignoring=httpx.HTTPError)
    wait_until(lambda: _ready_json(consumer_health)[1].startswith("no health known yet"), timeout=20,
               what="the consumer's heartbeat accepted", ignoring=httpx.HTTPError)
    assert _ready_json(consumer_health) == (503, "no health known yet for default, fallback")
    assert grpc_serving(cache, READINESS) == "SERVING"


def test_a_cache_on_redis_is_not_ready_while_redis_is_gone_and_stays_live(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        cache = f"unix:{tmp_path / 'cache.sock'}"
        spawned.append(_spawn("services.cache", {"CACHE_ADDRESS": cache, "CACHE_STORE": "redis",
                                                  "REDIS_URL": redis.url, "REDIS_TIMEOUT_MS": "500"},
                              tmp_path / "cache.log"))
        wait_until(lambda: (tmp_path / "cache.sock").exists(), timeout=20, what="the cache's socket")
        wait_until(lambda: grpc_serving(cache, READINESS) == "SERVING", timeout=10, what="ready on a live Redis")
        redis.kill()
        started = time.monotonic()
        wait_until(lambda: grpc_serving(cache, READINESS) == "NOT_SERVING", timeout=10, what="not ready without Redis")
        assert time.monotonic() - started < 5
        assert grpc_serving(cache) == "SERVING"  # alive: restarting the cache would not bring Redis back
        redis.start()
        wait_until(lambda: grpc_serving(cache, READINESS) == "SERVING", timeout=15,
                   what="ready again once Redis is back")
    finally:
        redis.stop()
