"""The cache as a gRPC service: a thin translation between protobuf and a
``CacheStore`` (``store.py``), whichever engine holds the state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeAlias, TypeVar

import grpc

from services.cache.metrics import render
from services.cache.store import (
    Beat,
    CacheStore,
    Completed,
    HandBack,
    Health,
    Lent,
    Rejection,
    State,
    StoreStats,
    StoreUnavailable,
    Totals,
)
from services.common import logs, supervision
from services.common.metrics import added
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc

log = logging.getLogger("cache.server")
T = TypeVar("T")
# Each RPC gets a context typed by its own messages; nothing here depends on which.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_STATE_NAMES = {State.QUEUED: "pending", State.DELAYED: "pending",
                State.LEASED: "processing", State.DONE: "processed", State.REJECTED: "rejected"}
MAX_DEQUEUE = 1000
MAX_WAIT_MS = 5_000
# Summed over consumers in /stats; the rest (health, routing) is the system's.
_SUMMED = ("jobs_running", "jobs_done", "jobs_failed", "jobs_timed_out", "pool_size", "retries",
           "unknown_outcomes", "unknown_settled", "rejected", "unknown_found")
# An api instance's report is kept this long: ten of its one-second reports,
# so a busy moment loses none, and a stopped instance leaves /metrics soon.
API_REPORT_TTL_MS = 10_000


def _totals(totals: Totals) -> pb.ProcessorTotals:
    return pb.ProcessorTotals(total_requests=totals.count, total_amount_cents=totals.amount_cents)


def _payment(lent: Lent) -> pb.Payment:
    return pb.Payment(correlation_id=lent.correlation_id, amount_cents=lent.amount_cents,
                      check=lent.check, lease=lent.lease, attempts=lent.attempts)


def _health(health: Health) -> pb.ProcessorHealth:
    return pb.ProcessorHealth(name=health.processor, failing=health.failing,
                              min_response_time_ms=health.min_response_time_ms,
                              checked_at_ms=health.checked_at_ms)


async def _or_unavailable(call: Awaitable[T], context: Context) -> T:
    """The store's answer, or UNAVAILABLE for the caller to retry when the store
    cannot be reached (nothing is known to have changed)."""
    try:
        return await call
    except StoreUnavailable as exc:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"store unavailable: {exc}")
        raise  # abort raises; this line is for the type checker


class CacheService(pipeline_pb2_grpc.CacheServicer):
    def __init__(self, store: CacheStore, *, retention_ms: int = 0, supervisor_status: str = "") -> None:
        self.store = store
        self.retention_ms = retention_ms  # told to whoever looks up an id the store does not know
        self.supervisor_status = supervisor_status  # make run's restart counts, for /metrics

    async def _submit(self, batch: pb.SubmitBatch, context: Context) -> pb.SubmitAck:
        submitted = await _or_unavailable(
            self.store.submit([(p.correlation_id, p.amount_cents) for p in batch.payments]), context)
        return pb.SubmitAck(seq=batch.seq, accepted=submitted.new, duplicates=submitted.duplicates,
                            backlog=submitted.backlog)

    async def Submit(self, request_iterator: AsyncIterator[pb.SubmitBatch],
                     context: Context) -> AsyncIterator[pb.SubmitAck]:
        async for batch in request_iterator:
            yield await self._submit(batch, context)

    async def Enqueue(self, request: pb.SubmitBatch, context: Context) -> pb.SubmitAck:
        return await self._submit(request, context)

    async def DequeueBatch(self, request: pb.DequeueRequest,
                           context: Context) -> pb.DequeueReply:
        limit = min(request.max or 1, MAX_DEQUEUE)
        wait = min(request.wait_ms, MAX_WAIT_MS) / 1000
        taken = await _or_unavailable(self.store.take(limit, request.consumer, wait), context)
        if context.cancelled():  # the consumer gave up the call: nothing was handed out
            with contextlib.suppress(StoreUnavailable):  # else the leases run out instead
                await self.store.requeue([HandBack(lent.correlation_id, lent.check, 0, lent.lease)
                                          for lent in taken])
            return pb.DequeueReply()
        return pb.DequeueReply(payments=[_payment(lent) for lent in taken])

    async def Complete(self, request: pb.CompleteRequest,
                       context: Context) -> pb.CompleteReply:
        recorded, ignored = await _or_unavailable(self.store.complete(
            [Completed(c.correlation_id, c.processor, c.amount_cents, c.requested_at_ms)
             for c in request.completions]), context)
        return pb.CompleteReply(recorded=recorded, ignored=ignored)

    async def Requeue(self, request: pb.RequeueRequest,
                      context: Context) -> pb.RequeueReply:
        # Each names the lease it returns (Payment.lease): a stale one is ignored.
        count = await _or_unavailable(self.store.requeue(
            [HandBack(r.payment.correlation_id, tuple(r.payment.check), r.delay_ms, r.payment.lease)
             for r in request.retries]), context)
        return pb.RequeueReply(requeued=count)

    async def Reject(self, request: pb.RejectRequest,
                     context: Context) -> pb.RejectReply:
        count = await _or_unavailable(self.store.reject(
            [Rejection(r.correlation_id, r.processor, r.reason, r.lease) for r in request.rejections]),
            context)
        return pb.RejectReply(rejected=count)

    async def Revive(self, request: pb.ReviveRequest,
                     context: Context) -> pb.ReviveReply:
        state = await _or_unavailable(self.store.revive(request.correlation_id), context)
        if state is not None:
            log.info("rejected payment revived" if state is State.QUEUED else "revive refused",
                     extra=logs.fields(correlation_id=request.correlation_id, state=_STATE_NAMES[state]))
        return pb.ReviveReply(revived=state is State.QUEUED,
                              state="unknown" if state is None else _STATE_NAMES[state])

    async def Heartbeat(self, request: pb.HeartbeatRequest,
                        context: Context) -> pb.HeartbeatReply:
        pulse = await _or_unavailable(self.store.heartbeat(Beat(
            request.consumer, request.ttl_ms, request.settle_ms,
            request.stats.SerializeToString(), request.leaving)), context)
        return pb.HeartbeatReply(
            leads=[pb.PollerLease(processor=name, token=token) for name, token in pulse.leads.items()],
            health=[_health(h) for h in pulse.health])

    async def ClaimHealthPoll(self, request: pb.PollClaim,
                              context: Context) -> pb.PollGrant:
        wait = await _or_unavailable(
            self.store.claim_poll(request.processor, request.token, request.interval_ms), context)
        return pb.PollGrant(wait_ms=wait)

    async def ReportHealth(self, request: pb.HealthReport,
                           context: Context) -> pb.HealthAck:
        accepted = await _or_unavailable(self.store.report_health(
            request.processor, request.token, request.failing if request.answered else None,
            request.min_response_time_ms, request.retry_after_ms), context)
        return pb.HealthAck(accepted=accepted)

    async def Summary(self, request: pb.SummaryRequest,
                      context: Context) -> pb.SummaryReply:
        totals = await _or_unavailable(self.store.totals(
            request.from_us if request.HasField("from_us") else None,
            request.to_us if request.HasField("to_us") else None), context)
        return pb.SummaryReply(default=_totals(totals["default"]), fallback=_totals(totals["fallback"]))

    async def Lookup(self, request: pb.LookupRequest,
                     context: Context) -> pb.LookupReply:
        record = await _or_unavailable(self.store.lookup(request.correlation_id), context)
        if record is None:
            return pb.LookupReply(state="unknown", retention_ms=self.retention_ms)
        return pb.LookupReply(state=_STATE_NAMES[record.state], processor=record.processor,
                              requested_at_ms=record.requested_at_ms,
                              amount_cents=record.amount_cents, attempts=record.attempts,
                              reason=record.reason)

    async def Purge(self, request: pb.PurgeRequest, context: Context) -> pb.PurgeReply:
        return pb.PurgeReply(purged=await _or_unavailable(self.store.purge(), context))

    async def ReportApi(self, request: pb.ApiStats, context: Context) -> pb.ApiReportAck:
        await _or_unavailable(self.store.report_api(request.instance, request.SerializeToString(),
                                                    API_REPORT_TTL_MS), context)
        return pb.ApiReportAck()

    async def Stats(self, request: pb.StatsRequest, context: Context) -> pb.StatsReply:
        return await self._stats(context)

    async def Metrics(self, request: pb.MetricsRequest, context: Context) -> pb.MetricsReply:
        reply = await self._stats(context)
        return pb.MetricsReply(exposition=render(reply, supervision.restarts(self.supervisor_status)))

    async def _stats(self, context: Context) -> pb.StatsReply:
        stats, totals = await _or_unavailable(
            asyncio.gather(self.store.stats(), self.store.totals(None, None)), context)
        consumers = [pb.ConsumerStats.FromString(blob) for blob in stats.consumers]
        return pb.StatsReply(
            queued=stats.queued, delayed=stats.delayed, in_flight=stats.leased,
            default=_totals(totals["default"]), fallback=_totals(totals["fallback"]),
            requeued=stats.requeued, duplicates=stats.duplicates,
            stale_requeues=stats.stale_requeues, late_completions=stats.late_completions,
            rejected=stats.rejected, retention_ms=stats.retention_ms,
            expired_duplicates=stats.expired_duplicates,
            consumers=len(consumers), consumer=_sum_consumers(consumers, stats.health),
            per_consumer=consumers, apis=[pb.ApiStats.FromString(blob) for blob in stats.apis],
            cache=_cache_stats(stats))


def _cache_stats(stats: StoreStats) -> pb.CacheStats:
    if stats.journal_bytes is None:
        return pb.CacheStats(journal=False)
    fsync = stats.journal_fsync.to_pb() if stats.journal_fsync is not None else None
    return pb.CacheStats(journal=True, journal_bytes=stats.journal_bytes, fsync_seconds=fsync)


def _sum_consumers(consumers: list[pb.ConsumerStats], health: tuple[Health, ...]) -> pb.ConsumerStats:
    """Every consumer's counters added up, with the system's view of health."""
    total = pb.ConsumerStats(health=[_health(h) for h in health])
    for one in consumers:
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(one, name))
        total.routing = total.routing or one.routing
        total.published_at_ms = max(total.published_at_ms, one.published_at_ms)
    by_processor: dict[str, list[pb.ProcessorCalls]] = {}
    for one in consumers:
        for calls in one.calls:
            by_processor.setdefault(calls.processor, []).append(calls)
    for processor, of_processor in sorted(by_processor.items()):
        outcomes: dict[str, int] = {}
        for each in of_processor:
            for outcome, count in each.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
        total.calls.append(pb.ProcessorCalls(processor=processor, outcomes=outcomes,
                                             seconds=added(each.seconds for each in of_processor)))
    return total


async def housekeeping_forever(store: CacheStore, every_seconds: float = 1.0) -> None:
    """Bring back run-out leases and those of lapsed consumers. An error is
    logged and the loop goes on: were it to end, a dead consumer's leases
    would never come back to the queue."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            expired = await store.expire()
        except StoreUnavailable as exc:
            log.warning("housekeeping: store unavailable", extra=logs.fields(error=str(exc)))
            continue
        if expired:
            log.info("leases expired", extra=logs.fields(leases=expired))
