"""The processor stand-in behaves as CONTRACT.md §2 says the real ones do;
the pipeline's tests are only as good as this double."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from standin.app import StandinSettings, build_app

ADMIN = {"X-Rinha-Token": "123"}
Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def with_standin(scenario: Scenario, **settings: object) -> None:
    async def main() -> None:
        server = TestServer(build_app(StandinSettings(**settings)), host="127.0.0.1")  # type: ignore[arg-type]
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(session, str(server.make_url("")).rstrip("/"))
        finally:
            await server.close()

    asyncio.run(main())


def payment(cid: str = "c1", amount: float = 19.9, at: str = "2025-07-10T12:00:00.000Z") -> dict:
    return {"correlationId": cid, "amount": amount, "requestedAt": at}


async def configure(session: aiohttp.ClientSession, url: str, **config: object) -> None:
    for key, value in config.items():
        async with session.put(f"{url}/admin/configurations/{key}", json={key: value}, headers=ADMIN) as r:
            assert r.status == 200, await r.text()


def test_stores_once_then_answers_422() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        async with session.post(f"{url}/payments", json=payment()) as r:
            assert r.status == 200
        async with session.post(f"{url}/payments", json=payment()) as r:
            assert r.status == 422
        async with session.get(f"{url}/payments/c1") as r:
            assert await r.json() == {"correlationId": "c1", "amount": 19.9,
                                      "requestedAt": "2025-07-10T12:00:00.000Z"}
        async with session.get(f"{url}/payments/other") as r:
            assert r.status == 404

    with_standin(scenario)


def test_a_failing_processor_still_makes_you_wait_the_delay() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        await configure(session, url, delay=300, failure=True)
        started = time.monotonic()
        async with session.post(f"{url}/payments", json=payment()) as r:
            assert r.status == 500
        assert time.monotonic() - started >= 0.3
        async with session.get(f"{url}/payments/c1") as r:
            assert r.status == 404

    with_standin(scenario)


def test_a_payment_lands_even_after_the_caller_gave_up() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        await configure(session, url, delay=400)
        try:
            async with session.post(f"{url}/payments", json=payment(),
                                    timeout=aiohttp.ClientTimeout(total=0.1)):
                raise AssertionError("should have timed out")
        except TimeoutError:
            pass
        async with session.get(f"{url}/payments/c1") as r:
            assert r.status == 404  # not yet: asking early proves nothing
        await asyncio.sleep(0.5)
        async with session.get(f"{url}/payments/c1") as r:
            assert r.status == 200

    with_standin(scenario)


def test_health_is_rate_limited_with_a_queue_of_two() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        async def health() -> tuple[int, float, str | None]:
            started = time.monotonic()
            async with session.get(f"{url}/payments/service-health") as r:
                return r.status, time.monotonic() - started, r.headers.get("Retry-After")

        results = await asyncio.gather(*(health() for _ in range(4)))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 200, 429]
        waits = sorted(wait for status, wait, _ in results if status == 200)
        # Fixed windows: the queued callers are served one window apart.
        assert waits[0] < 0.1 and waits[2] >= 0.14 and waits[2] - waits[1] >= 0.13
        (retry_after,) = [ra for status, _, ra in results if status == 429]
        assert retry_after is not None and int(retry_after) >= 1

    with_standin(scenario, health_window_seconds=0.15)


def test_admin_summary_window_token_and_purge() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        for i, at in enumerate(("2025-07-10T12:00:00.000Z", "2025-07-10T12:00:01.000Z",
                                "2025-07-10T12:00:02.000Z")):
            async with session.post(f"{url}/payments", json=payment(f"c{i}", 10.0, at)) as r:
                assert r.status == 200
        summary_url = f"{url}/admin/payments-summary"
        async with session.get(summary_url) as r:
            assert r.status == 401
        params = {"from": "2025-07-10T12:00:01.000Z", "to": "2025-07-10T12:00:02.000Z"}
        async with session.get(summary_url, params=params, headers=ADMIN) as r:
            assert await r.json() == {"totalRequests": 2, "totalAmount": 20.0, "totalFee": 1.0,
                                      "feePerTransaction": 0.05}
        async with session.get(summary_url, params={"to": "2025-07-10T12:00:00.000Z"}, headers=ADMIN) as r:
            assert (await r.json())["totalRequests"] == 3  # one bound missing: every row
        async with session.put(f"{url}/admin/configurations/token", json={"token": "s3cret"}, headers=ADMIN) as r:
            assert r.status == 204
        async with session.post(f"{url}/admin/purge-payments", headers=ADMIN) as r:
            assert r.status == 401
        async with session.post(f"{url}/admin/purge-payments", headers={"X-Rinha-Token": "s3cret"}) as r:
            assert r.status == 200
        async with session.get(summary_url, headers={"X-Rinha-Token": "s3cret"}) as r:
            assert (await r.json())["totalRequests"] == 0

    with_standin(scenario)


def test_configuration_reports_was_and_is() -> None:
    async def scenario(session: aiohttp.ClientSession, url: str) -> None:
        async with session.put(f"{url}/admin/configurations/delay", json={"delay": 100}, headers=ADMIN) as r:
            assert await r.json() == {"config": "delay", "was": 0, "is": 100}
        async with session.put(f"{url}/admin/configurations/failure", json={"failure": True}, headers=ADMIN) as r:
            assert await r.json() == {"config": "failure", "was": False, "is": True}
        async with session.get(f"{url}/payments/service-health") as r:
            assert await r.json() == {"failing": True, "minResponseTime": 100}

    with_standin(scenario)
