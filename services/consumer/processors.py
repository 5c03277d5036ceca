"""The HTTP client toward the payment processors, one keep-alive pool for both.

Every call is classified by what we know afterwards: the processor stored the
payment (``OK``), already had it (``DUPLICATE``), certainly did not store it
(``FAILED``), or might have (``UNKNOWN``: the request may have left and no
answer came back). Only the last needs settling before any retry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import orjson

from services.common.timefmt import InvalidTimestamp, parse_iso_ms
from services.consumer.http import AnswerLost, ConnectFailed, HttpError, Origin, PoolLimits


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
        self.timeouts = timeouts
        limits = PoolLimits(max_idle=max_connections, connect_seconds=timeouts.connect_seconds)
        self._origins = {name: Origin(url, limits) for name, url in urls.items()}

    async def close(self) -> None:
        for origin in self._origins.values():
            origin.close()

    async def pay(self, processor: str, correlation_id: str, amount_cents: int,
                  requested_at: str) -> Outcome:
        body = orjson.dumps({"correlationId": correlation_id, "amount": amount_cents / 100,
                             "requestedAt": requested_at})
        try:
            response = await self._origins[processor].request(
                "POST", "/payments", body, timeout=self.timeouts.payment_seconds)
        except ConnectFailed:
            return Outcome.FAILED  # never connected: nothing was sent
        except AnswerLost:
            return Outcome.UNKNOWN
        if 200 <= response.status < 300:
            return Outcome.OK
        if response.status == 422:
            return Outcome.DUPLICATE
        return Outcome.FAILED

    async def find(self, processor: str, correlation_id: str) -> Found | None:
        """The payment as ``processor`` stored it, or None if it does not have it."""
        try:
            response = await self._origins[processor].request(
                "GET", f"/payments/{correlation_id}", timeout=self.timeouts.lookup_seconds)
        except HttpError as exc:
            raise LookupFailed(f"{processor}: {exc!r}") from exc
        if response.status == 404:
            return None
        if response.status != 200:
            raise LookupFailed(f"{processor} answered {response.status}")
        try:
            data = orjson.loads(response.body)
            return Found(requested_at_ms=parse_iso_ms(data["requestedAt"]),
                         amount_cents=round(float(data["amount"]) * 100))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, InvalidTimestamp) as exc:
            raise LookupFailed(f"{processor} sent an unreadable payment: {exc!r}") from exc

    async def health(self, processor: str) -> HealthReport:
        try:
            response = await self._origins[processor].request(
                "GET", "/payments/service-health", timeout=self.timeouts.health_seconds)
        except HttpError:
            return HealthReport(status=0)
        if response.status == 429:
            retry_after = response.headers.get(b"retry-after", b"").decode(errors="replace")
            seconds = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else 5.0
            return HealthReport(status=429, retry_after_seconds=seconds)
        if response.status != 200:
            return HealthReport(status=response.status)
        try:
            data = orjson.loads(response.body)
            return HealthReport(status=200, failing=bool(data["failing"]),
                                min_response_time_ms=int(data["minResponseTime"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return HealthReport(status=-1)
