"""The HTTP client toward the payment processors, one keep-alive pool for both.

Every call is classified by what we know afterwards: the processor stored the
payment (``OK``), already had it (``DUPLICATE``), certainly did not store it
(``FAILED``), or might have (``UNKNOWN``: the request may have left and no
answer came back). Only the last needs settling before any retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import aiohttp
import orjson

from services.common.timefmt import InvalidTimestamp, parse_iso_ms


class Outcome(enum.Enum):
    OK = "ok"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Timeouts:
    payment_seconds: float = 10.0
    lookup_seconds: float = 3.0
    health_seconds: float = 3.0
    connect_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class Found:
    requested_at_ms: int
    amount_cents: int


@dataclass(frozen=True, slots=True)
class HealthReport:
    status: int
    failing: bool = False
    min_response_time_ms: int = 0
    retry_after_seconds: float = 0.0


class LookupFailed(Exception):
    """The processor could not tell whether it holds a payment."""


class ProcessorClient:
    def __init__(self, urls: dict[str, str], timeouts: Timeouts, max_connections: int) -> None:
        self.urls = urls
        self.timeouts = timeouts
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         keepalive_timeout=30, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "ProcessorClient.start() was not awaited"
        return self._session

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self.timeouts.connect_seconds)

    async def pay(self, processor: str, correlation_id: str, amount_cents: int,
                  requested_at: str) -> Outcome:
        body = orjson.dumps({"correlationId": correlation_id, "amount": amount_cents / 100,
                             "requestedAt": requested_at})
        try:
            async with self.session.post(
                    f"{self.urls[processor]}/payments", data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=self._timeout(self.timeouts.payment_seconds)) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientConnectorError:
            return Outcome.FAILED  # never connected: nothing was sent
        except aiohttp.ConnectionTimeoutError:
            return Outcome.FAILED
        except (TimeoutError, aiohttp.ClientError):
            return Outcome.UNKNOWN
        if 200 <= status < 300:
            return Outcome.OK
        if status == 422:
            return Outcome.DUPLICATE
        return Outcome.FAILED

    async def find(self, processor: str, correlation_id: str) -> Found | None:
        """The payment as ``processor`` stored it, or None if it does not have it."""
        try:
            async with self.session.get(
                    f"{self.urls[processor]}/payments/{correlation_id}",
                    timeout=self._timeout(self.timeouts.lookup_seconds)) as response:
                payload = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise LookupFailed(f"{processor}: {exc!r}") from exc
        if status == 404:
            return None
        if status != 200:
            raise LookupFailed(f"{processor} answered {status}")
        try:
            data = orjson.loads(payload)
            return Found(requested_at_ms=parse_iso_ms(data["requestedAt"]),
                         amount_cents=round(float(data["amount"]) * 100))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidTimestamp) as exc:
            raise LookupFailed(f"{processor} sent an unreadable payment: {exc!r}") from exc

    async def health(self, processor: str) -> HealthReport:
        try:
            async with self.session.get(
                    f"{self.urls[processor]}/payments/service-health",
                    timeout=self._timeout(self.timeouts.health_seconds)) as response:
                payload = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After", "")
        except (TimeoutError, aiohttp.ClientError):
            return HealthReport(status=0)
        if status == 429:
            seconds = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 5.0
            return HealthReport(status=429, retry_after_seconds=seconds)
        if status != 200:
            return HealthReport(status=status)
        try:
            data = orjson.loads(payload)
            return HealthReport(status=200, failing=bool(data["failing"]),
                                min_response_time_ms=int(data["minResponseTime"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return HealthReport(status=-1)
