"""The consumer's loop: take what the pool can run now and hand it to the pool.

It asks the cache only for as many payments as there are free workers (the
orchestrator's) and permits (the router's), so nothing sits leased in this
process waiting for a worker, and when the processors are down the queue stays
in the cache. Each payment goes to the pool as a job carrying its permit.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.common.rpc_client import Backoff
from services.consumer.routing import Permit, Router
from services.orch import Job, Orchestrator

MakeJob = Callable[[pb.Payment, Permit], Job]

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
    def __init__(self, stub: pipeline_pb2_grpc.CacheAsyncStub, orchestrator: Orchestrator, router: Router,
                 make_job: MakeJob, *, batch_size: int, poll_wait_ms: int,
                 linger_seconds: float = 0.0, max_rate: float = 0.0, instance: str = "") -> None:
        self.stub = stub
        self.orch = orchestrator
        self.router = router
        self.make_job = make_job
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
        router = self.router
        backoff = Backoff()
        while not self._stopping.is_set():
            free = self.orch.free_slots()
            if free == 0:
                await self.orch.wait_for_free_slot()
                continue
            permits = router.grant(min(free, self.batch_size))
            if not permits:
                await router.wait_for_change(0.05)
                continue
            try:
                reply = await self.stub.DequeueBatch(
                    pb.DequeueRequest(max=len(permits), wait_ms=self.poll_wait_ms, consumer=self.id),
                    timeout=self.poll_wait_ms / 1000 + 5, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                for permit in permits:
                    permit.release()
                log.warning("dequeue failed", extra=logs.fields(code=str(exc.code())))
                await backoff.wait()
                continue
            backoff.reset()
            for permit in permits[len(reply.payments):]:
                permit.release()  # no payment for it
            for payment, permit in zip(reply.payments, permits, strict=False):
                await self.orch.submit(self.make_job(payment, permit))
            delay = self.pacer.delay(len(reply.payments), asyncio.get_running_loop().time())
            if len(reply.payments) < len(permits):
                # A short batch means the queue is nearly empty: let it fill a
                # little, so each RPC carries several payments, not one.
                delay = max(delay, self.linger_seconds)
            if delay > 0.001:
                await asyncio.sleep(delay)
