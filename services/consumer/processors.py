"""The HTTP client toward the payment processors, one keep-alive pool for both.

Every payment attempt is classified by what we know afterwards: the processor
stored the payment (``OK``), already had it (``DUPLICATE``), certainly did not
store it (``FAILED``), might have (``UNKNOWN``: settle with ``GET
/payments/{id}`` before any retry), or refuses this one payment (``REFUSED``:
retrying it anywhere would only fail again, and the processor is not down).

=====================  ===========  ==================================================
What came back         Outcome      Why
=====================  ===========  ==================================================
2xx                    OK           stored
422                    DUPLICATE    it already holds this correlationId (docs/contract.md §2)
no connection; pool    FAILED       nothing was sent (``ConnectFailed``, including
wait timed out                      ``PoolExhausted``)
500, 501, 505-599      FAILED       the processor's own error: it did not store it
408                    FAILED       it gave up reading the request before processing
429                    FAILED       rate-limited: refused before processing
502, 503, 504          UNKNOWN      a proxy's answer (bad gateway, overloaded,
                                    gateway timeout): the processor behind it may
                                    have stored the payment before the answer was lost
sent, no complete      UNKNOWN      timeout (a processor that trickles its answer
answer                              included), dropped, unreadable (``AnswerLost``)
other 4xx              REFUSED      the processor refuses this payment (a poison
                                    one): park it, do not mark the processor down
1xx                    (skipped)    interim: the final answer follows (http.py)
3xx, anything else     UNKNOWN      not an answer we understand: settling costs one
                                    lookup, a wrong FAILED could charge twice
=====================  ===========  ==================================================

A 503 from our stand-in's own overload gate is also classified UNKNOWN: from the
outside it cannot be told from a proxy's, and UNKNOWN only costs a lookup.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

import orjson

from services.common.metrics import Durations
from services.common.rpc import pipeline_pb2 as pb
from services.common.timefmt import InvalidTimestamp, parse_iso_ms
from services.consumer.http import AnswerLost, ConnectFailed, ConnectionLimits, HttpError, Origin, Response


class Outcome(enum.Enum):
    OK = "ok"  # 2xx: stored
    DUPLICATE = "duplicate"  # 422: it already holds this correlationId
    FAILED = "failed"  # certainly not stored: not sent, or the processor's own error
    UNKNOWN = "unknown"  # may be stored: settle with GET /payments/{id}
    REFUSED = "refused"  # a 4xx other than 408/422/429: it refuses this payment


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one payment attempt; ``reason`` says why for the outcomes
    that are not a success (with the start of the processor's body, if any)."""

    outcome: Outcome
    status: int = 0  # the HTTP status, 0 if there was no HTTP answer
    reason: str = ""


_REASON_BODY_CHARS = 200
# The answers without a reason, built once: pay() is on the hot path.
_PLAIN_ANSWERS = {status: Answer(Outcome.OK, status) for status in range(200, 300)}
_PLAIN_ANSWERS[422] = Answer(Outcome.DUPLICATE, 422)
_PROXY_STATUSES = frozenset((502, 503, 504))
_NOT_PROCESSED_STATUSES = frozenset((408, 429))


def classify(status: int) -> Outcome:
    """The outcome an HTTP status means for a payment (the module docstring's table)."""
    if 200 <= status < 300:
        return Outcome.OK
    if status == 422:
        return Outcome.DUPLICATE
    if status in _PROXY_STATUSES:
        return Outcome.UNKNOWN
    if status in _NOT_PROCESSED_STATUSES or 500 <= status < 600:
        return Outcome.FAILED
    if 400 <= status < 500:
        return Outcome.REFUSED
    return Outcome.UNKNOWN


def _reason(processor: str, response: Response) -> str:
    body = response.body[:_REASON_BODY_CHARS * 4].decode(errors="replace")[:_REASON_BODY_CHARS]
    return f"{processor} answered {response.status}: {body}"


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


class Calls:
    """Payment attempts at one processor: how many of each outcome, how long each took."""

    __slots__ = ("outcomes", "seconds")

    def __init__(self) -> None:
        self.outcomes = {outcome.value: 0 for outcome in Outcome}
        self.seconds = Durations()

    def record(self, outcome: Outcome, seconds: float) -> None:
        self.outcomes[outcome.value] += 1
        self.seconds.observe(seconds)

    def to_pb(self, processor: str) -> pb.ProcessorCalls:
        return pb.ProcessorCalls(processor=processor, outcomes=self.outcomes, seconds=self.seconds.to_pb())


class LookupFailed(Exception):
    """The processor could not tell whether it holds a payment."""


class ProcessorClient:
    def __init__(self, urls: dict[str, str], timeouts: Timeouts, max_connections: int) -> None:
        self.timeouts = timeouts
        # A bound on every connection to each processor, not only idle ones: one that
        # stops answering must not make us open a socket per attempt.
        limits = ConnectionLimits(max_connections=max_connections, max_idle=max_connections,
                            connect_seconds=timeouts.connect_seconds)
        self._origins = {name: Origin(url, limits) for name, url in urls.items()}
        self.calls = {name: Calls() for name in urls}

    async def close(self) -> None:
        for origin in self._origins.values():
            origin.close()

    async def pay(self, processor: str, correlation_id: str, amount_cents: int,
                  requested_at: str) -> Answer:
        """One payment attempt, counted and timed per processor (``calls``)."""
        started = time.perf_counter()
        answer = await self._pay(processor, correlation_id, amount_cents, requested_at)
        self.calls[processor].record(answer.outcome, time.perf_counter() - started)
        return answer

    async def _pay(self, processor: str, correlation_id: str, amount_cents: int,
                   requested_at: str) -> Answer:
        body = orjson.dumps({"correlationId": correlation_id, "amount": amount_cents / 100,
                             "requestedAt": requested_at})
        try:
            response = await self._origins[processor].request(
                "POST", "/payments", body, timeout=self.timeouts.payment_seconds)
        except ConnectFailed as exc:  # never connected, or no connection free in time: nothing was sent
            return Answer(Outcome.FAILED, 0, f"{processor}: not sent: {exc}")
        except AnswerLost as exc:
            return Answer(Outcome.UNKNOWN, 0, f"{processor}: no complete answer: {exc}")
        plain = _PLAIN_ANSWERS.get(response.status)
        if plain is not None:
            return plain
        return Answer(classify(response.status), response.status, _reason(processor, response))

    async def find(self, processor: str, correlation_id: str) -> Found | None:
        """The payment as ``processor`` stored it, or None if it does not have it.

        Only 200 and 404 are conclusive; anything else, a proxy's 502/503/504
        included, is a LookupFailed (interim 1xx never get here)."""
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
