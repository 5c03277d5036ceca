"""The cache as a gRPC service: a thin translation between protobuf and ``Store``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from services.cache.store import Completed, Entry, State, Store
from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc

log = logging.getLogger("cache.server")

_STATE_NAMES = {State.QUEUED: "pending", State.DELAYED: "pending",
                State.LEASED: "processing", State.DONE: "processed"}
MAX_DEQUEUE = 1000
MAX_WAIT_MS = 5_000


def _totals(store: Store, processor: str, request: pb.SummaryRequest) -> pb.ProcessorTotals:
    from_us = request.from_us if request.HasField("from_us") else None
    to_us = request.to_us if request.HasField("to_us") else None
    totals = store.totals(processor, from_us, to_us)
    return pb.ProcessorTotals(total_requests=totals.count, total_amount_cents=totals.amount_cents)


def _payment(entry: Entry) -> pb.Payment:
    return pb.Payment(correlation_id=entry.correlation_id, amount_cents=entry.amount_cents,
                      check=entry.check, attempts=entry.attempts)


class CacheService(pipeline_pb2_grpc.CacheServicer):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.consumer_stats = pb.ConsumerStats()

    async def _durable(self) -> None:
        """Answer only once the changes just made are in the journal."""
        if self.store.journal is not None:
            await self.store.journal.committed()

    async def _submit(self, batch: pb.SubmitBatch) -> pb.SubmitAck:
        new, dup = self.store.submit((p.correlation_id, p.amount_cents) for p in batch.payments)
        await self._durable()
        return pb.SubmitAck(seq=batch.seq, accepted=new, duplicates=dup, backlog=self.store.backlog)

    async def Submit(self, request_iterator: AsyncIterator[pb.SubmitBatch],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.SubmitAck]:
        async for batch in request_iterator:
            yield await self._submit(batch)

    async def Enqueue(self, request: pb.SubmitBatch, context: grpc.aio.ServicerContext) -> pb.SubmitAck:
        return await self._submit(request)

    async def DequeueBatch(self, request: pb.DequeueRequest,
                           context: grpc.aio.ServicerContext) -> pb.DequeueReply:
        limit = min(request.max or 1, MAX_DEQUEUE)
        wait = min(request.wait_ms, MAX_WAIT_MS) / 1000
        holder = request.consumer
        taken = (await self.store.take_waiting(limit, wait, holder) if wait
                 else self.store.take(limit, holder=holder))
        if context.cancelled():  # the consumer gave up the call: nothing was handed out
            for entry in taken:
                self.store.requeue(entry.correlation_id, entry.check, 0)
            return pb.DequeueReply()
        await self._durable()
        return pb.DequeueReply(payments=[_payment(e) for e in taken])

    async def Complete(self, request: pb.CompleteRequest,
                       context: grpc.aio.ServicerContext) -> pb.CompleteReply:
        recorded, ignored = self.store.complete(
            Completed(c.correlation_id, c.processor, c.amount_cents, c.requested_at_ms)
            for c in request.completions)
        await self._durable()
        return pb.CompleteReply(recorded=recorded, ignored=ignored)

    async def Requeue(self, request: pb.RequeueRequest,
                      context: grpc.aio.ServicerContext) -> pb.RequeueReply:
        count = sum(self.store.requeue(r.payment.correlation_id, tuple(r.payment.check),
                                       r.delay_ms / 1000, lease=r.payment.attempts)
                    for r in request.retries)
        await self._durable()
        return pb.RequeueReply(requeued=count)

    async def Reclaim(self, request: pb.ReclaimRequest,
                      context: grpc.aio.ServicerContext) -> pb.ReclaimReply:
        reclaimed = self.store.reclaim(request.consumer, request.settle_ms / 1000)
        if reclaimed:
            log.info("leases reclaimed", extra=logs.fields(leases=reclaimed, settle_ms=request.settle_ms))
        return pb.ReclaimReply(reclaimed=reclaimed)

    async def Summary(self, request: pb.SummaryRequest,
                      context: grpc.aio.ServicerContext) -> pb.SummaryReply:
        return pb.SummaryReply(default=_totals(self.store, "default", request),
                               fallback=_totals(self.store, "fallback", request))

    async def Lookup(self, request: pb.LookupRequest,
                     context: grpc.aio.ServicerContext) -> pb.LookupReply:
        entry = self.store.lookup(request.correlation_id)
        if entry is None:
            return pb.LookupReply(state="unknown")
        return pb.LookupReply(state=_STATE_NAMES[entry.state], processor=entry.processor,
                              requested_at_ms=entry.requested_at_ms,
                              amount_cents=entry.amount_cents, attempts=entry.attempts)

    async def Purge(self, request: pb.PurgeRequest, context: grpc.aio.ServicerContext) -> pb.PurgeReply:
        purged = self.store.purge()
        if self.store.journal is not None:
            self.store.journal.rewrite(self.store.snapshot())
        return pb.PurgeReply(purged=purged)

    async def Stats(self, request: pb.StatsRequest, context: grpc.aio.ServicerContext) -> pb.StatsReply:
        store = self.store
        everything = pb.SummaryRequest()
        return pb.StatsReply(
            queued=store.queued,
            delayed=sum(1 for _, _, e in store.delayed if e.state is State.DELAYED),
            in_flight=len(store.leased),
            default=_totals(store, "default", everything),
            fallback=_totals(store, "fallback", everything),
            requeued=store.counters.requeued,
            duplicates=store.counters.duplicates,
            stale_requeues=store.counters.stale_requeues,
            consumer=self.consumer_stats,
        )

    async def PublishConsumerStats(self, request: pb.ConsumerStats,
                                   context: grpc.aio.ServicerContext) -> pb.Empty:
        self.consumer_stats = request
        return pb.Empty()


async def housekeeping_forever(store: Store, every_seconds: float = 1.0) -> None:
    """Expire leases; compact the journal when it has grown too big. A failed
    compaction (disk full) is logged and tried again: were this loop to end,
    a dead consumer's leases would never come back to the queue."""
    while True:
        await asyncio.sleep(every_seconds)
        store.expire_leases()
        if store.journal is not None and store.journal.needs_compaction:
            try:
                store.journal.rewrite(store.snapshot())
            except OSError as exc:
                log.error("journal compaction failed", extra=logs.fields(error=repr(exc)))
