"""End to end through nginx: payments in, processors charged once, summaries equal."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tools.clients import Backend, Processors
from tools.stack import Stack
from tools.waiting import wait_until

pytestmark = pytest.mark.integration


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def processed(backend: Backend) -> int:
    return backend.processed()


def wait_processed(backend: Backend, count: int, timeout: float = 30) -> None:
    wait_until(lambda: backend.processed() >= count, timeout=timeout, what=f"{count} payments processed",
               ignoring=httpx.HTTPError)
    wait_until(lambda: backend.backlog() == 0, timeout=timeout, what="an empty queue", ignoring=httpx.HTTPError)


def assert_consistent(backend: Backend, processors: Processors, windows: list[dict[str, str]]) -> None:
    for params in windows:
        ours = backend.summary(params)
        for name in ("default", "fallback"):
            theirs = processors.summary(name, params)
            assert ours[name]["totalRequests"] == theirs["totalRequests"], (name, params, ours, theirs)
            assert ours[name]["totalAmount"] == pytest.approx(theirs["totalAmount"], abs=0.001), (name, params)


def windows_around(start: datetime, end: datetime) -> list[dict[str, str]]:
    """Windows both sides agree on. (With one bound missing the processors count
    every row, by contract, while our backend leaves only that side open.)"""
    middle = start + (end - start) / 2
    return [{}, {"from": iso(start), "to": iso(end)}, {"from": iso(start), "to": iso(middle)},
            {"from": iso(middle), "to": iso(end)}, {"from": iso(end), "to": iso(end + timedelta(hours=1))}]


def test_payments_are_processed_once_and_summaries_match(clean: None, backend: Backend,
                                                         processors: Processors) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    amounts = [19.90, 0.01, 1234.56, 7]
    ids = []
    for i in range(200):
        correlation_id, response = backend.pay(amounts[i % len(amounts)])
        assert response.status_code == 202, response.text
        ids.append(correlation_id)
    wait_processed(backend, 200)
    end = datetime.now(UTC) + timedelta(seconds=1)

    summary = backend.summary()
    assert summary["default"]["totalRequests"] == 200
    assert summary["fallback"]["totalRequests"] == 0
    assert summary["default"]["totalAmount"] == pytest.approx(50 * sum(amounts))
    assert_consistent(backend, processors, windows_around(start, end))
    middle = iso(start + (end - start) / 2)
    before, after = backend.summary({"to": middle}), backend.summary({"from": middle})
    for name in ("default", "fallback"):
        assert before[name]["totalRequests"] + after[name]["totalRequests"] >= summary[name]["totalRequests"]
        window = {"from": iso(start - timedelta(days=1)), "to": middle}
        assert before[name]["totalRequests"] == backend.summary(window)[name]["totalRequests"]
    state = backend.http.get(f"/payments/{ids[0]}").json()
    assert state["state"] == "processed" and state["processor"] == "default"
    found = processors.find("default", ids[0])
    assert found is not None and found["requestedAt"] == state["requestedAt"]


def test_a_repeated_correlation_id_is_charged_once(clean: None, backend: Backend,
                                                   processors: Processors) -> None:
    correlation_id = str(uuid.uuid4())
    for _ in range(3):
        _, response = backend.pay(19.90, correlation_id)
        assert response.status_code == 202
    _, response = backend.pay(19.90, correlation_id.upper())
    assert response.status_code == 202
    wait_processed(backend, 1)
    time.sleep(0.5)
    assert processed(backend) == 1
    assert processors.summary("default")["totalRequests"] == 1


def test_default_failing_loses_nothing_and_stays_consistent(clean: None, backend: Backend,
                                                            processors: Processors) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    processors.configure("default", failure=True)
    for _ in range(100):
        assert backend.pay()[1].status_code == 202
    time.sleep(2)
    assert processed(backend) == 0  # patient routing: the queue waits for default
    assert_consistent(backend, processors, [{}])
    processors.configure("default", failure=False)
    wait_processed(backend, 100)
    end = datetime.now(UTC) + timedelta(seconds=1)
    assert backend.summary()["default"]["totalRequests"] == 100
    assert_consistent(backend, processors, windows_around(start, end))


def test_unknown_outcomes_are_settled_not_retried_blindly(clean: None, stack: Stack, backend: Backend,
                                                          processors: Processors) -> None:
    """The processor answers after the consumer gave up, and still stores the payment."""
    stack.config.service_env["consumer"] = {"CONSUMER_PAYMENT_TIMEOUT_MS": "300",
                                            "CONSUMER_JOB_TIMEOUT_MS": "10000",
                                            "CONSUMER_SETTLE_MARGIN_MS": "500"}
    stack.restart("consumer")
    try:
        start = datetime.now(UTC) - timedelta(seconds=1)
        processors.configure("default", delay=800)
        for _ in range(20):
            assert backend.pay()[1].status_code == 202
        wait_until(lambda: backend.stats()["consumer"]["unknownOutcomes"] >= 1, timeout=10, what="an unknown outcome",
                   ignoring=httpx.HTTPError)
        processors.configure("default", delay=0)
        wait_processed(backend, 20, timeout=40)
        end = datetime.now(UTC) + timedelta(seconds=1)
        wait_until(lambda: backend.stats()["consumer"]["unknownSettled"] >= 1, timeout=5,
                   what="a settled unknown outcome", ignoring=httpx.HTTPError)
        assert processed(backend) == 20
        assert processors.summary("default")["totalRequests"] + processors.summary("fallback")["totalRequests"] == 20
        assert_consistent(backend, processors, windows_around(start, end))
    finally:
        stack.config.service_env.pop("consumer", None)
        processors.configure("default", delay=0)
        stack.restart("consumer")


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "JSON"),
    (b"[1, 2]", 400, "object"),
    (b'{"amount": 19.9}', 422, "correlationId is required"),
    (b'{"correlationId": "not-a-uuid", "amount": 19.9}', 422, "UUID"),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"}', 422, "amount is required"),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": "19.90"}', 422, "number"),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 0}', 422, "greater than zero"),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": -1}', 422, "greater than zero"),
    (b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 1.234}', 422, "decimal"),
])
def test_bad_payments_get_a_json_4xx_and_nothing_is_queued(clean: None, backend: Backend, body: bytes,
                                                             status: int, message: str) -> None:
    response = backend.http.post("/payments", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["error"]
    time.sleep(0.05)
    stats = backend.stats()
    assert stats["queue"]["pending"] + stats["queue"]["inFlight"] == 0
    assert processed(backend) == 0


@pytest.mark.parametrize("params", [{"from": "yesterday"}, {"to": "2020-13-01T00:00:00Z"}, {"to": ""}])
def test_bad_summary_windows_get_400(backend: Backend, params: dict[str, str]) -> None:
    response = backend.http.get("/payments-summary", params=params)
    assert response.status_code == 400
    assert "error" in response.json()


def test_an_inverted_window_is_empty_as_at_the_processors(backend: Backend) -> None:
    summary = backend.summary({"from": "2020-07-10T12:00:00Z", "to": "2020-07-10T11:00:00Z"})
    assert summary["default"] == summary["fallback"] == {"totalRequests": 0, "totalAmount": 0.0}


def test_unknown_paths_and_methods_answer_json(backend: Backend) -> None:
    missing = backend.http.get("/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = backend.http.get("/payments")
    assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    unknown = backend.http.get(f"/payments/{uuid.uuid4()}")
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_stats_and_health_report_the_pipeline(backend: Backend) -> None:
    health = backend.http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    wait_until(lambda: backend.stats()["consumer"]["routing"] == "patient", timeout=5, what="consumer stats",
               ignoring=httpx.HTTPError)
    stats = backend.stats()
    assert stats["consumer"]["workers"]["size"] > 0
    assert set(stats["processed"]) == {"default", "fallback"}
    assert stats["queue"]["staleRequeues"] == 0


def test_no_service_maps_openssl(stack: Stack, backend: Backend) -> None:
    """Every service runs with TLS kept out (services/common/notls.py): no
    libcrypto or libssl in its memory, after it has served requests."""
    assert backend.http.get("/payments-summary").status_code == 200
    for name in ("api1", "api2", "cache", "consumer"):
        maps = open(f"/proc/{stack.procs[name].pid}/maps").read()
        assert "libcrypto" not in maps and "libssl" not in maps, name


def test_oversized_bodies_are_cut_off_by_nginx_with_json(backend: Backend) -> None:
    body = b'{"correlationId": "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3", "amount": 1, "pad": "' + b"x" * 20_000 + b'"}'
    response = backend.http.post("/payments", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "error" in response.json()


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400),  # HTTP/1.1 without Host
    (b"BREW /payments HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    (b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    # nginx says 501: never a 5XX for bad input
    (b"POST /payments HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET /.errors/400 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404),
])
def test_malformed_http_refused_by_nginx_gets_json(stack: Stack, request_bytes: bytes, status: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", stack.config.port), timeout=5) as conn:
        conn.sendall(request_bytes)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"application/json" in head
    assert "error" in json.loads(body)


def test_a_slow_client_is_cut_off_by_nginx(stack: Stack) -> None:
    """A client that announces a body and never sends it does not hold a
    connection (or an api worker) for long: nginx's client_body_timeout is 5 s."""
    import socket

    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", stack.config.port), timeout=15) as conn:
        conn.sendall(b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"corr")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    assert 4 <= time.monotonic() - started < 10


def test_both_processors_failing_holds_the_queue_and_drains_after(clean: None, backend: Backend,
                                                                   processors: Processors) -> None:
    processors.configure("default", failure=True)
    processors.configure("fallback", failure=True)
    for _ in range(50):
        assert backend.pay()[1].status_code == 202
    time.sleep(2)
    assert processed(backend) == 0
    assert backend.stats()["queue"]["pending"] + backend.stats()["queue"]["inFlight"] >= 49
    processors.configure("fallback", failure=False)  # patient: still waits for default
    time.sleep(1)
    assert processed(backend) == 0
    processors.configure("default", failure=False)
    wait_processed(backend, 50)
    assert backend.summary()["default"]["totalRequests"] == 50
    assert processors.summary("fallback")["totalRequests"] == 0


def test_cache_ack_mode_answers_once_the_cache_holds_it_not_after_the_linger(
        clean: None, stack: Stack, backend: Backend, processors: Processors) -> None:
    """With ``API_ACK_MODE=cache`` a 202 means the cache holds the payment; the
    shipper must not make each answer wait out its batching linger first."""
    for api in ("api1", "api2"):
        stack.config.service_env[api] = {"API_ACK_MODE": "cache", "API_ACK_TIMEOUT_MS": "1200",
                                         "API_SHIP_LINGER_MS": "1000"}
        stack.restart(api)
    try:
        processors.configure("default", failure=True)  # the payments stay in the cache's queue
        started = time.monotonic()
        for count in range(1, 6):
            _, response = backend.pay()
            assert response.status_code == 202
            assert backend.backlog() == count  # held by the cache when the 202 arrived
        assert time.monotonic() - started < 2.5  # five lingers would take 5 s
    finally:
        processors.configure("default", failure=False)
        for api in ("api1", "api2"):
            stack.config.service_env.pop(api, None)
            stack.restart(api)
