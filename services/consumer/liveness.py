"""The consumer's heartbeat: what keeps its leases its own, and what makes it
(maybe) the system's health poller.

Once every ``ttl / 3`` the consumer tells the cache it is alive for ``ttl``,
with its settle time (the longest an attempt it made may still take to land)
and its stats. If the beats stop (a crash, a freeze, a lost network), the
cache brings its leases back, to be checked at every processor, once the ttl
and then the settle time have passed; a live consumer's leases are never
taken from it. The reply names the processors this consumer polls (a poller
task runs for each) and carries the health the whole system knows, which the
router takes when it is newer than its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.consumer.health import poll_while_elected
from services.consumer.processors import ProcessorClient
from services.consumer.routing import Router

log = logging.getLogger("consumer.liveness")


class Heartbeat:
    def __init__(self, stub: pipeline_pb2_grpc.CacheAsyncStub, client: ProcessorClient, router: Router, *,
                 consumer: str, ttl_seconds: float, settle_seconds: Callable[[], float],
                 stats: Callable[[], pb.ConsumerStats], poll_interval_seconds: float) -> None:
        self._stub = stub
        self._client = client
        self._router = router
        self._consumer = consumer
        self._ttl = ttl_seconds
        self._settle = settle_seconds
        self._stats = stats
        self._poll_interval = poll_interval_seconds
        self._pollers: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self.accepted = False  # the cache has taken a beat (readiness)

    def _request(self, leaving: bool = False) -> pb.HeartbeatRequest:
        return pb.HeartbeatRequest(consumer=self._consumer, ttl_ms=int(self._ttl * 1000),
                                   settle_ms=int(self._settle() * 1000), stats=self._stats(),
                                   leaving=leaving)

    async def beat_forever(self) -> None:
        try:
            while True:
                try:
                    reply = await self._stub.Heartbeat(self._request(), timeout=self._ttl / 3)
                except grpc.aio.AioRpcError as exc:
                    log.warning("heartbeat failed", extra=logs.fields(code=str(exc.code())))
                else:
                    self.accepted = True
                    self._apply(reply)
                await asyncio.sleep(self._ttl / 3)
        finally:
            self._stop_pollers(set(self._pollers))

    async def leave(self) -> None:
        """A graceful stop: the cache may bring back what is still leased once
        the settle time has passed, and another consumer takes over polling."""
        self._stop_pollers(set(self._pollers))
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self._stub.Heartbeat(self._request(leaving=True), timeout=2)

    def _apply(self, reply: pb.HeartbeatReply) -> None:
        router = self._router
        for health in reply.health:
            state = router.states.get(health.name)
            if state is not None and health.checked_at_ms > state.health_checked_at_ms:
                router.health(health.name, health.failing, health.min_response_time_ms,
                              health.checked_at_ms)
        leads = {lease.processor: lease.token for lease in reply.leads if lease.processor in router.states}
        self._stop_pollers({name for name, (token, task) in self._pollers.items()
                            if leads.get(name) != token or task.done()})
        for name, token in leads.items():
            if name not in self._pollers:
                log.info("health poller", extra=logs.fields(processor=name, token=token))
                task = asyncio.create_task(poll_while_elected(
                    self._stub, self._client, router, name, token, self._poll_interval))
                self._pollers[name] = (token, task)

    def _stop_pollers(self, names: set[str]) -> None:
        for name in names:
            _, task = self._pollers.pop(name)
            task.cancel()
