"""The payment job: one attempt at getting one payment charged exactly once.

The rule that keeps the ledger equal to the processors' own: a payment whose
last attempt has an unknown outcome is never sent anywhere until the processor
it went to has been asked (``GET /payments/{id}``) after that attempt can no
longer land. A processor that answers late still inserts, so asking too early
proves nothing; the wait is the payment timeout or the processor's advertised
delay, whichever is longer, plus a margin.

A payment the processor refuses (``Outcome.REFUSED``: a 4XX about the payment
itself) is parked as rejected, with the processor's answer as the reason: it
would be refused again, and retrying it forever would hold a worker and hide
it from the operator, who can revive it (``POST /payments/{id}/requeue``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.timefmt import format_ms, now_ms
from services.consumer.processors import Answer, Found, LookupFailed, Outcome, Timeouts
from services.consumer.routing import Permit, Router

log = logging.getLogger("consumer.jobs")


class Processors(Protocol):
    """What a job needs of the processors' client (``processors.ProcessorClient``)."""

    @property
    def timeouts(self) -> Timeouts: ...

    async def pay(self, processor: str, correlation_id: str, amount_cents: int,
                  requested_at: str) -> Answer: ...

    async def find(self, processor: str, correlation_id: str) -> Found | None: ...


class Outcomes(Protocol):
    """Where a job's result goes (``reporting.Reporter``, which batches it to the cache)."""

    def completed(self, correlation_id: str, processor: str, amount_cents: int,
                  requested_at_ms: int) -> None: ...

    def retry(self, payment: pb.Payment, check: tuple[str, ...], delay_seconds: float) -> None: ...

    def rejected(self, payment: pb.Payment, processor: str, reason: str) -> None: ...


@dataclass(slots=True)
class JobCounters:
    """What the jobs of this process have done, for /stats and /metrics."""

    retries: int = 0
    unknown_outcomes: int = 0
    unknown_settled: int = 0
    unknown_found: int = 0  # of unknown_settled: the processor had it (the rest were resent)
    rejected: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    failed_delay_seconds: float = 0.0
    lookup_failed_delay_seconds: float = 1.0
    settle_margin_seconds: float = 1.0


@dataclass(slots=True)
class JobContext:
    """What every payment job shares: the processors, the router, where
    results go, the retry policy and the counters. Only jobs use it."""

    client: Processors
    router: Router
    reporter: Outcomes
    policy: RetryPolicy
    counters: JobCounters = field(default_factory=JobCounters)

    def settle_delay(self, processor: str) -> float:
        advertised = self.router.states[processor].min_response_time_ms / 1000
        return max(self.client.timeouts.payment_seconds, advertised) + self.policy.settle_margin_seconds


class PaymentJob:
    """One payment, run by the orchestrator. It holds the router's permit the
    payment was dequeued under, and gives it back when it ends."""

    __slots__ = ("payment", "permit", "ctx", "_sent_to", "_finished")

    def __init__(self, payment: pb.Payment, permit: Permit, ctx: JobContext) -> None:
        self.payment = payment
        self.permit = permit
        self.ctx = ctx
        self._sent_to: str | None = None
        self._finished = False

    def __repr__(self) -> str:
        return f"PaymentJob({self.payment.correlation_id})"

    async def run(self) -> None:
        try:
            if self.payment.check and await self._settled_elsewhere():
                return
            await self._attempt()
        finally:
            self.permit.release()

    async def abandon(self, reason: BaseException) -> None:
        """Timed out or crashed: hand the payment back, to be checked first if a
        request may have reached a processor."""
        if self._finished:
            return
        check = tuple(self.payment.check)
        delay = 0.0
        if self._sent_to is not None:
            check = tuple(sorted(set(check) | {self._sent_to}))
            delay = self.ctx.settle_delay(self._sent_to)
        self._retry(check, delay)

    async def _settled_elsewhere(self) -> bool:
        """Ask each processor that may hold the payment. True if the job is over."""
        for processor in self.payment.check:
            try:
                if await self._recorded_if_held(processor):
                    return True
            except LookupFailed:
                self._retry(tuple(self.payment.check), self.ctx.policy.lookup_failed_delay_seconds)
                return True
        self.ctx.counters.unknown_settled += 1
        return False

    async def _recorded_if_held(self, processor: str) -> bool:
        """Ask ``processor`` for the payment; record it as the processor has it
        if it is there (True: the job is over). ``LookupFailed`` if it cannot tell."""
        found = await self.ctx.client.find(processor, self.payment.correlation_id)
        if found is None:
            return False
        self.ctx.counters.unknown_settled += 1
        self.ctx.counters.unknown_found += 1
        self._complete(processor, found.requested_at_ms, found.amount_cents)
        return True

    async def _attempt(self) -> None:
        ctx, payment = self.ctx, self.payment
        processor = ctx.router.target()
        requested_at_ms = now_ms()
        self._sent_to = processor
        answer = await ctx.client.pay(processor, payment.correlation_id, payment.amount_cents,
                                      format_ms(requested_at_ms))
        outcome = answer.outcome
        if outcome is Outcome.OK:
            ctx.router.outcome(processor, ok=True)
            self._complete(processor, requested_at_ms, payment.amount_cents)
        elif outcome is Outcome.DUPLICATE:
            # The processor already holds it (an earlier attempt landed): record
            # it as the processor has it, once.
            if not await self._found_at(processor):
                # It says it holds the payment, yet cannot show it: ask again
                # later rather than spin between a 422 and a "not found".
                self._retry((processor,), ctx.policy.lookup_failed_delay_seconds)
        elif outcome is Outcome.REFUSED:
            # The processor answered, so it is up; it is this payment it refuses.
            ctx.router.outcome(processor, ok=True)
            self._reject(processor, answer.reason)
        elif outcome is Outcome.FAILED:
            ctx.router.outcome(processor, ok=False)
            self._retry((), ctx.policy.failed_delay_seconds)
        else:
            if answer.status:  # a proxy's 502/503/504: the way to the processor is failing
                ctx.router.outcome(processor, ok=False)
            ctx.counters.unknown_outcomes += 1
            if not await self._found_at(processor):
                self._retry((processor,), ctx.settle_delay(processor))

    async def _found_at(self, processor: str) -> bool:
        """Ask ``processor`` at once; True (and the job is over) if it holds the
        payment. Every moment the processor holds a payment our ledger lacks is
        an inconsistency for any audit in between, so a "found" is recorded now
        rather than after the settle delay. Only "found" is conclusive this
        early: a "not found" or a failed lookup proves nothing while the attempt
        can still land, and the payment is handed back to be checked later."""
        try:
            return await self._recorded_if_held(processor)
        except LookupFailed:
            return False

    def _complete(self, processor: str, requested_at_ms: int, amount_cents: int) -> None:
        self._finished = True
        self.ctx.reporter.completed(self.payment.correlation_id, processor, amount_cents,
                                    requested_at_ms)

    def _reject(self, processor: str, reason: str) -> None:
        self._finished = True
        self.ctx.counters.rejected += 1
        log.warning("payment refused by the processor: parked as rejected", extra=logs.fields(
            correlation_id=self.payment.correlation_id, processor=processor, reason=reason))
        self.ctx.reporter.rejected(self.payment, processor, reason)

    def _retry(self, check: tuple[str, ...], delay_seconds: float) -> None:
        self._finished = True
        self.ctx.counters.retries += 1
        self.ctx.reporter.retry(self.payment, check, delay_seconds)
