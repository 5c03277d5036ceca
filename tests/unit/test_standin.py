"""The processor stand-in behaves as docs/contract.md §2 says the real processors do.

Every pipeline test that injects faults trusts this double, so each rule the
pipeline's correctness leans on (delay before the decision, insert after the
caller gave up, 422 on a retry, inclusive summary bounds, the health budget)
is pinned here against a server on an ephemeral port.
"""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.timefmt import InvalidTimestamp, format_ms, parse_iso_us
from standin.app import PROCESSOR, FixedWindowLimiter, Processor, StandinSettings, build_app, to_cents
from standin.faults import Proxy, Refuse, Trickle, is_poison
from standin.timestamps import NotATimestamp, epoch_us, text_ms
from tools.waiting import wait_until_async

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parents[2]
ADMIN = {"X-Rinha-Token": "123"}
T0 = "2025-07-10T12:00:00.000Z"


@dataclass
class Standin:
    url: str
    http: aiohttp.ClientSession
    processor: Processor

    async def call(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                   **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
            raw = await response.read()
            body = await response.json(content_type=None) if raw else None
            return response.status, body, response

    async def pay(self, cid: str = "c1", amount: float = 19.9, at: str = T0, **kwargs: Any) -> tuple[int, Any]:
        status, body, _ = await self.call("POST", "/payments",
                                          json={"correlationId": cid, "amount": amount, "requestedAt": at}, **kwargs)
        return status, body

    async def configure(self, **config: object) -> None:
        for key, value in config.items():
            status, body, _ = await self.call("PUT", f"/admin/configurations/{key}", json={key: value}, headers=ADMIN)
            assert status == 200, body

    async def switch(self, key: str, **config: object) -> tuple[int, Any]:
        status, body, _ = await self.call("PUT", f"/admin/configurations/{key}", json=config, headers=ADMIN)
        return status, body

    async def summary(self, token: str = "123", **bounds: str) -> tuple[int, Any]:
        status, body, _ = await self.call("GET", "/admin/payments-summary", params=bounds,
                                          headers={"X-Rinha-Token": token})
        return status, body


StartStandin = Callable[..., Awaitable[Standin]]


@pytest_asyncio.fixture
async def start_standin() -> AsyncIterator[StartStandin]:
    """Starts stand-ins on ephemeral ports; ``handler_cancellation`` picks aiohttp's disconnect policy."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(handler_cancellation: bool = False, **settings: Any) -> Standin:
        app = build_app(StandinSettings(**settings))
        runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Standin(f"http://127.0.0.1:{port}", session, app[PROCESSOR])

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest_asyncio.fixture
async def standin(start_standin: StartStandin) -> Standin:
    return await start_standin()


async def _eventually_found(standin: Standin, cid: str, timeout: float = 2.0) -> Any:
    """The stored payment once ``GET /payments/{cid}`` finds it (404 until then)."""
    async def found() -> Any:
        status, body, _ = await standin.call("GET", f"/payments/{cid}")
        assert status in (200, 404), (status, body)
        return body if status == 200 else None

    return await wait_until_async(found, timeout=timeout, what=f"payment {cid} stored", interval=0.02)


# -- POST /payments and GET /payments/{id} --------------------------------------------------------

async def test_stores_a_payment_then_answers_422_to_the_same_correlation_id(standin: Standin) -> None:
    assert await standin.pay("c1", 19.9) == (200, {"message": "payment processed successfully"})
    status, body = await standin.pay("c1", 5.0, "2025-07-10T13:00:00.000Z")
    assert status == 422 and "error" in body
    status, body, _ = await standin.call("GET", "/payments/c1")
    assert (status, body) == (200, {"correlationId": "c1", "amount": 19.9, "requestedAt": T0})
    assert (await standin.summary())[1]["totalRequests"] == 1


async def test_get_by_id_gives_back_the_instant_sent_with_milliseconds_and_z(standin: Standin) -> None:
    await standin.pay("c1", 10, "2025-07-10T12:34:56.789Z")
    await standin.pay("c2", 10, "2025-07-10T09:34:56.7+00:00")
    assert (await standin.call("GET", "/payments/c1"))[1]["requestedAt"] == "2025-07-10T12:34:56.789Z"
    assert (await standin.call("GET", "/payments/c2"))[1]["requestedAt"] == "2025-07-10T09:34:56.700Z"
    assert standin.processor.payments["c2"].requested_at == "2025-07-10T09:34:56.7+00:00"
    status, body, response = await standin.call("GET", "/payments/unknown")
    assert status == 404 and "error" in body and response.content_type == "application/json"


@pytest.mark.parametrize(("amount", "cents"), [(19.9, 1990), (0.125, 13), (1.005, 101), (19.999, 2000),
                                               (7, 700), (0.1 + 0.2, 30)])
async def test_amounts_are_rounded_to_cents_on_the_decimal_written(amount: float, cents: int) -> None:
    assert to_cents(amount) == cents


async def test_amount_is_stored_rounded_to_two_decimals(standin: Standin) -> None:
    await standin.pay("c1", 0.125)
    assert (await standin.call("GET", "/payments/c1"))[1]["amount"] == 0.13


@pytest.mark.parametrize("body", [
    {"amount": 1, "requestedAt": T0},
    {"correlationId": "", "amount": 1, "requestedAt": T0},
    {"correlationId": "c1", "requestedAt": T0},
    {"correlationId": "c1", "amount": "1.00", "requestedAt": T0},
    {"correlationId": "c1", "amount": True, "requestedAt": T0},
    {"correlationId": "c1", "amount": 1},
    {"correlationId": "c1", "amount": 1, "requestedAt": "yesterday"},
    {"correlationId": "c1", "amount": 1, "requestedAt": 1752148800000},
    {"correlationId": "c1", "amount": 1, "requestedAt": "2025-13-40T12:00:00Z"},
])
async def test_malformed_payments_are_refused_with_a_json_error_and_not_stored(
        standin: Standin, body: dict[str, Any]) -> None:
    status, answer, response = await standin.call("POST", "/payments", json=body)
    assert status in (400, 422) and "error" in answer and response.content_type == "application/json"
    assert standin.processor.payments == {}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
async def test_unparseable_bodies_get_400(standin: Standin, raw: bytes) -> None:
    status, answer, _ = await standin.call("POST", "/payments", data=raw,
                                           headers={"Content-Type": "application/json"})
    assert status == 400 and "error" in answer


async def test_the_delay_is_served_before_success(standin: Standin) -> None:
    await standin.configure(delay=200)
    started = time.monotonic()
    assert (await standin.pay())[0] == 200
    assert time.monotonic() - started >= 0.2


async def test_a_failing_processor_still_makes_you_wait_the_delay(standin: Standin) -> None:
    await standin.configure(delay=250, failure=True)
    started = time.monotonic()
    status, body = await standin.pay()
    assert status == 500 and "error" in body
    assert time.monotonic() - started >= 0.25
    assert (await standin.call("GET", "/payments/c1"))[0] == 404


async def test_the_decision_is_taken_after_the_delay(standin: Standin) -> None:
    """Faults changed during the delay apply, so the delay cannot have been a sleep after deciding."""
    await standin.configure(delay=300, failure=True)
    pending = asyncio.create_task(standin.pay("c1"))
    await asyncio.sleep(0.1)
    await standin.configure(failure=False)
    assert (await pending)[0] == 200

    first = asyncio.create_task(standin.pay("c2"))
    await asyncio.sleep(0.1)
    await standin.configure(delay=0)
    assert (await standin.pay("c2", at="2025-07-10T12:00:00.100Z"))[0] == 200
    assert (await first)[0] == 422  # sent first, but checked for duplicates only after its delay
    assert standin.processor.payments["c2"].requested_at == "2025-07-10T12:00:00.100Z"


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_a_payment_lands_even_after_the_caller_gave_up(
        start_standin: StartStandin, handler_cancellation: bool) -> None:
    standin = await start_standin(handler_cancellation=handler_cancellation)
    await standin.configure(delay=300)
    with pytest.raises(asyncio.TimeoutError):
        await standin.pay("c1", timeout=aiohttp.ClientTimeout(total=0.08))
    assert (await standin.call("GET", "/payments/c1"))[0] == 404  # still inside the delay
    await asyncio.sleep(0.25)
    found = await _eventually_found(standin, "c1")
    assert found["amount"] == 19.9
    assert (await standin.pay("c1"))[0] == 422  # the caller's retry meets the stored payment
    assert standin.processor.gate.running == 0


async def test_past_the_running_and_waiting_limits_it_answers_503(start_standin: StartStandin) -> None:
    standin = await start_standin(max_running=2, max_waiting=1)
    await standin.configure(delay=250)
    started = time.monotonic()
    tasks = [asyncio.create_task(standin.pay(f"c{i}")) for i in range(3)]
    gate = standin.processor.gate
    await wait_until_async(lambda: (gate.running, gate.waiting) == (2, 1), timeout=2,
                           what="two payments running and one waiting", interval=0.01)

    status, body = await standin.pay("c3")
    assert status == 503 and "error" in body
    assert time.monotonic() - started < 0.4  # a queued request could not finish before 0.5 s
    assert (await standin.call("GET", "/payments/c0"))[0] == 503  # lookups share the limit
    assert (await standin.summary())[0] == 200  # admin calls do not
    assert [s for s, _ in await asyncio.gather(*tasks)] == [200, 200, 200]
    assert time.monotonic() - started >= 0.5  # the queued one waited for a slot, then its own delay
    assert sorted(standin.processor.payments) == ["c0", "c1", "c2"]
    assert (standin.processor.gate.running, standin.processor.gate.waiting) == (0, 0)


# -- GET /payments/service-health -----------------------------------------------------------------

async def test_health_reports_the_faults_without_the_delay(standin: Standin) -> None:
    await standin.configure(delay=500, failure=True)
    started = time.monotonic()
    status, body, _ = await standin.call("GET", "/payments/service-health")
    assert (status, body) == (200, {"failing": True, "minResponseTime": 500})
    assert time.monotonic() - started < 0.2


async def test_health_allows_one_call_per_window_queues_two_and_refuses_the_rest(
        start_standin: StartStandin) -> None:
    """Only lower bounds are exact here: a GC pause can delay an answer but never hasten one.
    The window arithmetic itself is pinned by the clock-free test below."""
    window = 0.3
    standin = await start_standin(health_window_seconds=window)
    started = time.monotonic()

    async def health() -> tuple[int, float, str | None]:
        status, _, response = await standin.call("GET", "/payments/service-health")
        return status, time.monotonic() - started, response.headers.get("Retry-After")

    results = await asyncio.gather(*(health() for _ in range(5)))
    assert sorted(status for status, _, _ in results) == [200, 200, 200, 429, 429]
    served = sorted(at for status, at, _ in results if status == 200)
    refused = [(at, retry_after) for status, at, retry_after in results if status == 429]
    assert all(retry_after is not None and int(retry_after) >= 1 for _, retry_after in refused)
    assert all(at < served[-1] for at, _ in refused)  # refused at once, not after waiting in the queue
    assert window - 0.01 <= served[-1] <= 2 * window + 0.2  # the last one queued waited into a later window

    await asyncio.sleep(window)  # the queue has drained and a fresh window has begun
    assert (await health())[0] == 200


async def test_the_health_windows_are_fixed_not_sliding() -> None:
    limiter = FixedWindowLimiter(window=5.0, queue=2)
    assert limiter.claim(4.9) == 0.0
    assert limiter.claim(5.1) == 0.0  # a new window, although 0.2 s after the last call
    assert limiter.claim(6.0) == pytest.approx(4.0)  # queued into [10, 15)
    assert limiter.claim(6.0) == pytest.approx(9.0)  # queued into [15, 20)
    assert limiter.claim(6.0) is None
    assert limiter.retry_after(6.0) == 14  # the first window nobody has claimed: [20, 25)
    limiter.release()
    assert limiter.claim(10.0) == pytest.approx(10.0)  # a freed queue place takes [20, 25)
    assert limiter.retry_after(19.99) == 6
    assert limiter.retry_after(24.9999) == 1


async def test_every_health_call_is_logged_on_arrival_429s_included_until_a_purge(
        start_standin: StartStandin) -> None:
    standin = await start_standin(health_window_seconds=0.3)
    before = int(time.time() * 1000)
    answers = await asyncio.gather(*(standin.call("GET", "/payments/service-health") for _ in range(4)))
    after = int(time.time() * 1000)
    assert sorted(status for status, _, _ in answers) == [200, 200, 200, 429]
    await standin.call("GET", "/payments/c1")  # not a health call

    status, body, _ = await standin.call("GET", "/admin/health-calls", headers=ADMIN)
    assert status == 200 and len(body["calls"]) == 4
    assert all(before <= at <= after for at in body["calls"])
    # Arrival times: the two queued calls were answered ~0.3 and ~0.6 s later.
    assert max(body["calls"]) - min(body["calls"]) < 250
    assert after - before >= 550

    await standin.call("POST", "/admin/purge-payments", headers=ADMIN)
    assert (await standin.call("GET", "/admin/health-calls", headers=ADMIN))[1] == {"calls": []}


# -- admin API ------------------------------------------------------------------------------------

async def test_summary_counts_requested_at_between_from_and_to_inclusive(start_standin: StartStandin) -> None:
    standin = await start_standin(fee=0.15)
    instants = ["2025-07-10T12:00:00.000Z", "2025-07-10T12:00:00.001Z", "2025-07-10T12:00:01.000Z"]
    for i, at in enumerate(instants):
        assert (await standin.pay(f"c{i}", 19.9, at))[0] == 200

    assert await standin.summary(**{"from": instants[1], "to": instants[2]}) == (200, {
        "totalRequests": 2, "totalAmount": 39.8, "totalFee": 5.97, "feePerTransaction": 0.15})
    assert (await standin.summary(**{"from": instants[0], "to": instants[0]}))[1]["totalRequests"] == 1
    assert (await standin.summary(**{"from": "2025-07-10T12:00:00.000001Z",
                                     "to": "2025-07-10T12:00:00.999999Z"}))[1]["totalRequests"] == 1
    assert (await standin.summary(**{"from": "2025-07-10T12:00:00.000000001Z",
                                     "to": "2025-07-10T12:00:00.000999999Z"}))[1]["totalRequests"] == 0
    assert (await standin.summary(**{"from": "2025-07-10T09:00:00.001-03:00",
                                     "to": "2025-07-10T12:00:00.001"}))[1]["totalRequests"] == 1
    assert (await standin.summary(**{"from": "2025-07-10T12:00:02Z",
                                     "to": "2025-07-10T12:00:03Z"}))[1]["totalRequests"] == 0


@pytest.mark.parametrize("bounds", [{}, {"from": "2025-07-10T12:00:00.500Z"}, {"to": "2025-07-10T11:00:00.000Z"},
                                    {"from": "", "to": "2025-07-10T11:00:00.000Z"}])
async def test_summary_counts_every_row_when_either_bound_is_missing(
        standin: Standin, bounds: dict[str, str]) -> None:
    await standin.pay("c1", 10, "2025-07-10T12:00:00.000Z")
    await standin.pay("c2", 0.01, "2025-07-10T12:00:01.000Z")
    assert await standin.summary(**bounds) == (200, {
        "totalRequests": 2, "totalAmount": 10.01, "totalFee": 0.5, "feePerTransaction": 0.05})


@pytest.mark.parametrize("bounds", [{"from": "nope", "to": T0}, {"from": T0, "to": "2025-02-30T00:00:00Z"}])
async def test_summary_refuses_invalid_bounds(standin: Standin, bounds: dict[str, str]) -> None:
    status, body = await standin.summary(**bounds)
    assert status == 400 and "error" in body


async def test_summary_of_many_payments_has_no_float_drift(standin: Standin) -> None:
    await asyncio.gather(*(standin.pay(f"c{i}", 19.9) for i in range(300)))
    _, body = await standin.summary()
    assert body == {"totalRequests": 300, "totalAmount": 5970.0, "totalFee": 298.5, "feePerTransaction": 0.05}


ADMIN_CALLS = [("GET", "/admin/payments-summary", None),
               ("PUT", "/admin/configurations/token", {"token": "x"}),
               ("PUT", "/admin/configurations/delay", {"delay": 10}),
               ("PUT", "/admin/configurations/failure", {"failure": True}),
               ("PUT", "/admin/configurations/refuse", {"every": 1}),
               ("PUT", "/admin/configurations/proxy", {"every": 1}),
               ("PUT", "/admin/configurations/trickle", {"every": 1, "seconds": 1}),
               ("POST", "/admin/purge-payments", None),
               ("GET", "/admin/health-calls", None)]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
@pytest.mark.parametrize("headers", [{}, {"X-Rinha-Token": "wrong"}, {"X-Rinha-Token": ""}])
async def test_admin_calls_need_the_token(standin: Standin, method: str, path: str, body: Any,
                                          headers: dict[str, str]) -> None:
    await standin.pay()
    status, answer, _ = await standin.call(method, path, json=body, headers=headers)
    assert status == 401 and "error" in answer
    proc = standin.processor
    assert (proc.token, proc.delay_ms, proc.failing, len(proc.payments)) == ("123", 0, False, 1)
    assert (proc.refuse, proc.proxy, proc.trickle) == (Refuse(), Proxy(), Trickle())


async def test_the_token_can_be_replaced(standin: Standin) -> None:
    status, body, _ = await standin.call("PUT", "/admin/configurations/token", json={"token": "s3cret"},
                                         headers=ADMIN)
    assert (status, body) == (204, None)
    assert (await standin.summary("123"))[0] == 401
    assert (await standin.summary("s3cret"))[0] == 200
    assert (await standin.call("PUT", "/admin/configurations/token", json={"token": ""},
                               headers={"X-Rinha-Token": "s3cret"}))[0] == 400


async def test_the_initial_token_is_configurable(start_standin: StartStandin) -> None:
    standin = await start_standin(token="abc")
    assert (await standin.summary("123"))[0] == 401
    assert (await standin.summary("abc"))[0] == 200


async def test_purge_forgets_every_payment(standin: Standin) -> None:
    await standin.pay("c1")
    await standin.pay("c2")
    status, body, _ = await standin.call("POST", "/admin/purge-payments", headers=ADMIN)
    assert (status, body) == (200, {"message": "All payments purged."})
    assert (await standin.call("GET", "/payments/c1"))[0] == 404
    assert (await standin.summary())[1]["totalRequests"] == 0
    assert (await standin.pay("c1"))[0] == 200  # a purged id is new again


async def test_configuration_answers_what_it_was_and_what_it_is(standin: Standin) -> None:
    async def put(key: str, value: object) -> tuple[int, Any]:
        status, body, _ = await standin.call("PUT", f"/admin/configurations/{key}", json={key: value},
                                             headers=ADMIN)
        return status, body

    assert await put("delay", 100) == (200, {"config": "delay", "was": 0, "is": 100})
    assert await put("delay", 0) == (200, {"config": "delay", "was": 100, "is": 0})
    assert await put("failure", True) == (200, {"config": "failure", "was": False, "is": True})
    assert await put("failure", True) == (200, {"config": "failure", "was": True, "is": True})
    for key, bad in (("delay", -1), ("delay", "10"), ("delay", True), ("delay", 1.5), ("failure", "yes"),
                     ("failure", 1), ("failure", None)):
        status, body = await put(key, bad)
        assert status == 400 and "error" in body, (key, bad)
    assert (standin.processor.delay_ms, standin.processor.failing) == (0, True)


# -- the switches for answers that are not the processor's (issue 17) ------------------------------

async def test_poison_is_a_pure_function_of_the_id() -> None:
    ids = [f"id-{i}" for i in range(3000)]
    assert not any(is_poison(cid, 0) for cid in ids)
    assert all(is_poison(cid, 1) for cid in ids)
    picked = [cid for cid in ids if is_poison(cid, 10)]
    assert 200 < len(picked) < 400  # about one in ten
    assert picked == [cid for cid in ids if is_poison(cid, 10)]
    assert is_poison("c", 7) == (int("2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6", 16) % 7 == 0)


async def test_refuse_turns_away_the_poison_payments_every_time_and_stores_nothing(standin: Standin) -> None:
    assert await standin.switch("refuse", every=4, status=403) == (
        200, {"config": "refuse", "was": {"every": 0, "status": 400}, "is": {"every": 4, "status": 403}})
    ids = [f"c{i}" for i in range(20)]
    poison = {cid for cid in ids if is_poison(cid, 4)}
    assert 0 < len(poison) < len(ids)
    for cid in ids:
        status, body = await standin.pay(cid)
        assert (status, "error" in body) == ((403, True) if cid in poison else (200, False)), cid
    for cid in poison:
        assert (await standin.pay(cid))[0] == 403  # the retry is refused as well
        assert (await standin.call("GET", f"/payments/{cid}"))[0] == 404
    assert set(standin.processor.payments) == set(ids) - poison

    await standin.switch("refuse", every=4)
    assert (await standin.pay(next(iter(poison))))[0] == 400  # the default status


async def test_refuse_comes_after_the_delay(standin: Standin) -> None:
    poison = next(cid for cid in (f"c{i}" for i in range(100)) if is_poison(cid, 5))
    await standin.configure(delay=200)
    await standin.switch("refuse", every=5)
    started = time.monotonic()
    assert (await standin.pay(poison))[0] == 400
    assert time.monotonic() - started >= 0.2


async def test_proxy_stores_every_nth_payment_then_answers_as_a_proxy(standin: Standin) -> None:
    assert (await standin.switch("proxy", every=3, status=503))[1]["is"] == {"every": 3, "status": 503}
    async def post(cid: str) -> tuple[int, str, bytes]:
        payment = {"correlationId": cid, "amount": 19.9, "requestedAt": T0}
        async with standin.http.post(standin.url + "/payments", json=payment) as response:
            return response.status, response.content_type, await response.read()

    answers = [(await post(f"c{i}"))[:2] for i in range(6)]
    proxied = (503, "text/html")
    assert answers == [(200, "application/json"), (200, "application/json"), proxied] * 2
    assert sorted(standin.processor.payments) == [f"c{i}" for i in range(6)]  # all stored, proxied or not

    await standin.switch("proxy", every=1)  # a new switch counts afresh; 502 by default
    status, _, body = await post("c0")
    assert status == 502 and b"Bad Gateway" in body  # whatever the processor said (a 422 here)


async def test_trickle_sends_the_head_a_byte_at_a_time_after_storing(standin: Standin) -> None:
    await standin.switch("trickle", every=2, seconds=0.6)
    assert (await standin.pay("c0"))[0] == 200  # the first is answered at once
    host, port = standin.url.removeprefix("http://").split(":")
    body = b'{"correlationId": "c1", "amount": 19.9, "requestedAt": "2025-07-10T12:00:00.000Z"}'
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    while chunk := await asyncio.wait_for(reader.read(1024), 2):
        arrivals.append((time.monotonic() - started, chunk))
    writer.close()
    answer = b"".join(chunk for _, chunk in arrivals)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in head.lower()
    assert rest == b'{"message":"payment processed successfully"}'
    assert len(arrivals) > 20  # in many pieces
    assert arrivals[0][0] < 0.3 and 0.55 <= arrivals[-1][0] < 1.5  # spread over the 0.6 s
    assert "c1" in standin.processor.payments


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_a_caller_that_gives_up_mid_trickle_still_finds_the_payment_stored(
        start_standin: StartStandin, handler_cancellation: bool) -> None:
    standin = await start_standin(handler_cancellation=handler_cancellation)
    await standin.switch("trickle", every=1, seconds=5)
    with pytest.raises(asyncio.TimeoutError):
        await standin.pay("c1", timeout=aiohttp.ClientTimeout(total=0.2))
    assert "c1" in standin.processor.payments
    await wait_until_async(lambda: standin.processor.gate.running == 0, timeout=2, interval=0.01,
                           what="no payment running (the trickle stopped with the caller)")
    await standin.switch("trickle", every=0)
    assert (await standin.pay("c1"))[0] == 422


@pytest.mark.parametrize(("key", "body"), [
    ("refuse", {"every": -1}), ("refuse", {"every": "2"}), ("refuse", {"every": True}), ("refuse", {"every": 1.0}),
    ("refuse", {"every": 1, "status": 500}), ("refuse", {"every": 1, "status": 399}),
    ("refuse", {"every": 1, "status": "400"}),
    ("proxy", {"every": 1, "status": 500}), ("proxy", {"every": 1, "status": 502.0}),
    ("proxy", {"every": -3}),
    ("trickle", {"every": 1, "seconds": 0}), ("trickle", {"every": 1, "seconds": -1}),
    ("trickle", {"every": 1, "seconds": "1"}), ("trickle", {"every": 1, "seconds": 601}),
    ("trickle", {"every": 1, "seconds": True}),
])
async def test_switches_refuse_values_they_cannot_take(standin: Standin, key: str, body: dict[str, Any]) -> None:
    status, answer, _ = await standin.call("PUT", f"/admin/configurations/{key}", json=body, headers=ADMIN)
    assert status == 400 and "error" in answer
    proc = standin.processor
    assert (proc.refuse, proc.proxy, proc.trickle) == (Refuse(), Proxy(), Trickle())


async def test_purge_switches_the_new_faults_off(standin: Standin) -> None:
    await standin.switch("refuse", every=1)
    await standin.switch("proxy", every=1, status=504)
    await standin.switch("trickle", every=1, seconds=2)
    assert (await standin.call("POST", "/admin/purge-payments", headers=ADMIN))[0] == 200
    proc = standin.processor
    assert (proc.refuse, proc.proxy, proc.trickle) == (Refuse(), Proxy(), Trickle())
    assert (await standin.pay("c1"))[0] == 200


# -- python -m standin ----------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_command_line_starts_a_server_with_its_fee_and_token() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", str(port), "--fee", "0.15",
         "--name", "fallback", "--token", "tok"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async def answers() -> bool:
                async with http.get(f"{url}/payments/none") as response:
                    assert response.status == 404
                    return True

            await wait_until_async(answers, timeout=10, what="the stand-in to start", interval=0.05,
                                   ignoring=aiohttp.ClientConnectionError)
            payment = {"correlationId": "c1", "amount": 100, "requestedAt": T0}
            async with http.post(f"{url}/payments", json=payment) as response:
                assert response.status == 200
            async with http.get(f"{url}/admin/payments-summary", headers={"X-Rinha-Token": "tok"}) as response:
                assert await response.json() == {"totalRequests": 1, "totalAmount": 100.0, "totalFee": 15.0,
                                                 "feePerTransaction": 0.15}
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "fallback" in lines[0] and str(port) in lines[0]


# -- its own timestamps (standin/timestamps.py): an oracle shares no code with the pipeline ---------

def _imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


async def test_no_module_of_the_stand_in_imports_the_pipelines_code() -> None:
    sources = sorted((REPO / "standin").rglob("*.py"))
    assert REPO / "standin" / "timestamps.py" in sources
    pipeline = {f"{path.relative_to(REPO)}: {module}" for path in sources for module in _imported_modules(path)
                if module == "services" or module.startswith("services.")}
    assert pipeline == set()


BASE_US = 1_594_384_496_000_000  # 2020-07-10T12:34:56Z


@pytest.mark.parametrize(("text", "expected"), [
    ("2020-07-10T12:34:56.000Z", BASE_US),
    ("2020-07-10T12:34:56Z", BASE_US),
    ("2020-07-10T12:34:56z", BASE_US),
    ("2020-07-10T12:34:56", BASE_US),
    ("2020-07-10 12:34:56", BASE_US),
    ("  2020-07-10T12:34:56Z\n", BASE_US),
    ("2020-07-10T12:34:56.5Z", BASE_US + 500_000),
    ("2020-07-10T12:34:56,25Z", BASE_US + 250_000),
    ("2020-07-10T12:34:56.123456Z", BASE_US + 123_456),
    ("2020-07-10T12:34:56.123456789Z", BASE_US + 123_456),
    ("2020-07-10T15:34:56.000+03:00", BASE_US),
    ("2020-07-10T09:34:56-0300", BASE_US),
    ("2020-07-11T12:33:56+23:59", BASE_US),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59.999999Z", -1),
])
async def test_the_stand_in_reads_a_timestamp(text: str, expected: int) -> None:
    assert epoch_us(text) == expected


async def test_a_lower_bound_rounds_into_its_window() -> None:
    assert epoch_us("2020-07-10T12:34:56.0000001Z", round_up=True) == BASE_US + 1
    assert epoch_us("2020-07-10T12:34:56.0000001Z") == BASE_US
    assert epoch_us("2020-07-10T12:34:56.000001000Z", round_up=True) == BASE_US + 1


INVALID = ["", " ", "yesterday", "2020-07-10", "2020-07-10T12:34", "2020-07-10T12:34:5", "20200710T123456Z",
           "2020-7-10T12:34:56Z", "2020-07-10t12:34:56Z", "2020-07-10T12:34:56.Z", "2020-07-10T12:34:56.1234567890Z",
           "2020-13-10T12:34:56Z", "2020-02-30T00:00:00Z", "2020-07-32T00:00:00Z", "2020-07-10T25:00:00Z",
           "2020-07-10T24:00:00Z", "2020-07-10T12:60:00Z", "2020-07-10T12:34:60Z", "0000-01-01T00:00:00Z",
           "2020-07-10T12:34:56+25:00", "2020-07-10T12:34:56+24:00", "2020-07-10T12:34:56+00:60",
           "2020-07-10T12:34:56+3:00", "2020-07-10T12:34:56+03:0", "2020-07-10T12:34:56+03:00:00",
           "2020-07-10T12:34:56 Z", "2020-07-10T12:34:56ZZ", "2020-07-10T12:34:56UTC", "2020-07-10T12:34:56+0",
           "2020-07-10T12:34:56.5.5Z", "+2020-07-10T12:34:56Z", "2020-07-10T12:34:56.123+03:00x"]


@pytest.mark.parametrize("text", INVALID)
async def test_the_stand_in_refuses_what_is_not_a_timestamp_as_the_pipeline_does(text: str) -> None:
    with pytest.raises(NotATimestamp):
        epoch_us(text)
    with pytest.raises(InvalidTimestamp):
        parse_iso_us(text)


async def test_both_take_ascii_digits_only() -> None:
    """The contract's timestamps are written in ASCII digits. The stand-in
    found that services/common/timefmt.py's ``\\d`` took other scripts' too."""
    arabic_indic_2020 = "\u0662\u0660\u0662\u0660-07-10T12:34:56Z"
    with pytest.raises(NotATimestamp):
        epoch_us(arabic_indic_2020)
    with pytest.raises(InvalidTimestamp):
        parse_iso_us(arabic_indic_2020)


async def test_the_stand_in_writes_milliseconds_and_z() -> None:
    assert text_ms(BASE_US // 1000 + 7) == "2020-07-10T12:34:56.007Z"
    assert text_ms(0) == "1970-01-01T00:00:00.000Z"
    assert text_ms(-1) == "1969-12-31T23:59:59.999Z"


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    """Any text of the form both accept: every separator, fraction and zone."""
    moment = datetime(1, 1, 2) + timedelta(seconds=draw(st.integers(0, 315_537_465_599)))  # to 9999-12-30
    places = draw(st.integers(0, 9))
    fraction = f"{draw(st.sampled_from('.,'))}{draw(st.integers(0, 10**places - 1)):0{places}d}" if places else ""
    zone = draw(st.sampled_from(["", "Z", "z"]) | st.builds(
        lambda sign, hours, minutes, colon: f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}",
        st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59), st.booleans()))
    blank = draw(st.sampled_from(["", " ", "\t", "\n"]))
    return (f"{blank}{moment.year:04d}-{moment.month:02d}-{moment.day:02d}{draw(st.sampled_from('T '))}"
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}{fraction}{zone}{blank}")


def _read(parse: Callable[..., int], refusal: type[ValueError], text: str, round_up: bool) -> int | None:
    """The instant ``parse`` reads in ``text``; None if it refuses it."""
    try:
        return parse(text, round_up=round_up)
    except refusal:
        return None


async def test_the_stand_in_and_the_pipeline_agree_on_every_valid_timestamp() -> None:
    @settings(max_examples=800, deadline=None)
    @given(timestamps(), st.booleans())
    def agree(text: str, round_up: bool) -> None:
        assert epoch_us(text, round_up=round_up) == parse_iso_us(text, round_up=round_up), text

    agree()


def _one_edit_away(valid: str, alphabet: str = "0123456789-:Tt Zz+.,x") -> Iterator[str]:
    """Every text with one character of ``valid`` deleted, replaced, or one inserted."""
    for at in range(len(valid) + 1):
        yield valid[:at] + valid[at + 1:]
        for char in alphabet:
            yield valid[:at] + char + valid[at:]
            yield valid[:at] + char + valid[at + 1:]


async def test_the_stand_in_and_the_pipeline_agree_on_every_timestamp_one_edit_away() -> None:
    """Both refuse it, or both read the same instant (ASCII only: the
    pipeline's regular expression takes any Unicode digit, the stand-in ASCII ones)."""
    @settings(max_examples=150, deadline=None)
    @given(timestamps(), st.booleans())
    def agree(valid: str, round_up: bool) -> None:
        for text in _one_edit_away(valid):
            ours = _read(epoch_us, NotATimestamp, text, round_up)
            assert ours == _read(parse_iso_us, InvalidTimestamp, text, round_up), text

    agree()


async def test_the_stand_in_writes_what_the_pipeline_writes_and_reads_it_back() -> None:
    @settings(max_examples=1000, deadline=None)
    @given(st.integers(min_value=-30_610_224_000_000, max_value=253_402_300_799_999))  # years 1000 to 9999
    def agree(epoch_ms: int) -> None:
        assert text_ms(epoch_ms) == format_ms(epoch_ms)
        assert epoch_us(text_ms(epoch_ms)) == epoch_ms * 1000

    agree()
