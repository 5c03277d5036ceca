"""The consumer's loop: take what the pool can run now, run it, report back.

It asks the cache only for as many payments as there are free workers and the
router permits, so nothing sits leased in this process waiting for a worker,
and when the processors are down the queue stays in the cache.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.common.rpc_client import Backoff
from services.common.timefmt import now_ms
from services.consumer.jobs import JobContext, PaymentJob
from services.orch import Orchestrator

log = logging.getLogger("consumer")


class Pacer:
    """At most ``rate`` payments a second on average (0: no limit), taken in batches.

    A backlog then drains as a steady stream instead of a burst: the drain
    costs the same CPU either way, but a burst takes the machine from the load
    generator and the request path at once. No credit builds up while idle."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._free_at = 0.0

    def delay(self, taken: int, now: float) -> float:
        """Seconds to wait, having just taken ``taken`` payments at ``now``."""
        if self.rate <= 0 or taken <= 0:
            return 0.0
        self._free_at = max(self._free_at, now) + taken / self.rate
        return self._free_at - now


class Consumer:
    def __init__(self, stub: pipeline_pb2_grpc.CacheStub, orchestrator: Orchestrator,
                 ctx: JobContext, *, batch_size: int, poll_wait_ms: int,
                 linger_seconds: float = 0.0, max_rate: float = 0.0, instance: str = "") -> None:
        self.stub = stub
        self.orch = orchestrator
        self.ctx = ctx
        self.batch_size = batch_size
        self.poll_wait_ms = poll_wait_ms
        self.linger_seconds = linger_seconds
        self.pacer = Pacer(max_rate)
        self.id = uuid.uuid4().hex  # the leases' holder and heartbeat name, new at every start
        self.instance = instance or f"consumer-{self.id[:8]}"  # its name in /stats and /metrics
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        self.orch.start()
        router = self.ctx.router
        backoff = Backoff()
        while not self._stopping.is_set():
            free = self.orch.free_slots()
            if free == 0:
                await self.orch.wait_for_free_slot()
                continue
            permits = router.permits(min(free, self.batch_size))
            if permits == 0:
                await router.wait_for_change(0.05)
                continue
            try:
                reply = await self.stub.DequeueBatch(
                    pb.DequeueRequest(max=permits, wait_ms=self.poll_wait_ms, consumer=self.id),
                    timeout=self.poll_wait_ms / 1000 + 5, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                router.release(permits)
                log.warning("dequeue failed", extra=logs.fields(code=str(exc.code())))
                await backoff.wait()
                continue
            backoff.reset()
            router.release(permits - len(reply.payments))
            for payment in reply.payments:
                await self.orch.submit(PaymentJob(payment, self.ctx))
            delay = self.pacer.delay(len(reply.payments), asyncio.get_running_loop().time())
            if len(reply.payments) < permits:
                # A short batch means the queue is nearly empty: let it fill a
                # little, so each RPC carries several payments, not one.
                delay = max(delay, self.linger_seconds)
            if delay > 0.001:
                await asyncio.sleep(delay)

    def stats(self) -> pb.ConsumerStats:
        pool = self.orch.stats()
        counters = self.ctx.counters
        return pb.ConsumerStats(
            jobs_running=pool.running, jobs_done=pool.done, jobs_failed=pool.failed,
            jobs_timed_out=pool.timed_out, pool_size=pool.size, retries=counters.retries,
            unknown_outcomes=counters.unknown_outcomes, unknown_settled=counters.unknown_settled,
            health=[pb.ProcessorHealth(name=s.name, failing=s.health_failing,
                                       min_response_time_ms=s.min_response_time_ms,
                                       checked_at_ms=s.health_checked_at_ms)
                    for s in self.ctx.router.states.values()],
            routing=self.ctx.router.strategy, published_at_ms=now_ms(), instance=self.instance,
            rejected=counters.rejected, unknown_found=counters.unknown_found,
            calls=[calls.to_pb(name) for name, calls in self.ctx.client.calls.items()])
