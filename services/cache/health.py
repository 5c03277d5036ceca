"""The cache's liveness and readiness, in the standard gRPC health protocol
(grpc.health.v1: what Kubernetes' gRPC probes and grpc_health_probe ask).

Service "" is the server as a whole: SERVING while it runs (liveness).
Service ``READINESS`` ("pipeline.v1.Cache") is SERVING while the store answers
(readiness): checked once a second by reading its stats with a one-second
deadline, so a Redis that is down or a store that stalls shows within two.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.cache.store import CacheStore, StoreUnavailable
from services.common import logs

log = logging.getLogger("cache.health")
READINESS = "pipeline.v1.Cache"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """The health service, known to be alive and not yet ready from the first
    probe on (an unknown service would be NOT_FOUND)."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", SERVING)
    await servicer.set(READINESS, NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


async def watch_readiness(store: CacheStore, servicer: health.aio.HealthServicer,
                          every_seconds: float = 1.0) -> None:
    ready: bool | None = None
    while True:
        try:
            await asyncio.wait_for(store.stats(), every_seconds)
            now_ready = True
        except (StoreUnavailable, TimeoutError) as exc:
            now_ready = False
            why = repr(exc)
        if now_ready != ready:
            await servicer.set(READINESS, SERVING if now_ready else NOT_SERVING)
            if ready is not None or not now_ready:
                log.warning("ready" if now_ready else "not ready: the store does not answer",
                            extra=logs.fields() if now_ready else logs.fields(error=why))
            ready = now_ready
        await asyncio.sleep(every_seconds)
