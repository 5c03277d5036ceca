"""One health poller per processor for the whole system.

The health endpoint allows one call per 5 s per processor, shared by every
caller. Every consumer may run, so who polls is decided in the cache: the
heartbeat (``liveness.py``) wins or renews a poller lease with a fencing token,
and before each call the poller claims a slot (``ClaimHealthPoll``), granted
at most once per interval for the whole system, and only under the current
token. A poller that lost its lease (it froze, or the cache gave the lease to
another consumer) is refused and stops. What it learns goes back to the cache
(``ReportHealth``) and from there to every consumer with their heartbeats.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.common.rpc_client import Backoff
from services.common.timefmt import now_ms
from services.consumer.processors import ProcessorClient
from services.consumer.routing import Router

log = logging.getLogger("consumer.health")


async def poll_while_elected(stub: pipeline_pb2_grpc.CacheAsyncStub, client: ProcessorClient, router: Router,
                             processor: str, token: int, interval_seconds: float) -> None:
    """Poll ``processor`` under ``token`` until the cache says it is someone
    else's turn. Calls to the cache that fail are retried; no health call is
    made without a fresh grant."""
    interval_ms = int(interval_seconds * 1000)
    backoff = Backoff(ceiling=interval_seconds)
    while True:
        try:
            grant = await stub.ClaimHealthPoll(
                pb.PollClaim(processor=processor, token=token, interval_ms=interval_ms), timeout=2)
        except grpc.aio.AioRpcError:
            await backoff.wait()
            continue
        backoff.reset()
        if grant.wait_ms < 0:
            log.info("no longer the health poller", extra=logs.fields(processor=processor))
            return
        if grant.wait_ms > 0:
            await asyncio.sleep(grant.wait_ms / 1000)
            continue
        report = await client.health(processor)
        if report.status == 200:
            router.health(processor, report.failing, report.min_response_time_ms, now_ms())
            shared = pb.HealthReport(processor=processor, token=token, answered=True,
                                     failing=report.failing,
                                     min_response_time_ms=report.min_response_time_ms)
        elif report.status == 429:
            shared = pb.HealthReport(processor=processor, token=token,
                                     retry_after_ms=int(report.retry_after_seconds * 1000))
        else:
            log.info("health check failed", extra=logs.fields(processor=processor, status=report.status))
            continue
        try:
            await stub.ReportHealth(shared, timeout=2)
        except grpc.aio.AioRpcError as exc:
            log.warning("could not share a health report", extra=logs.fields(code=str(exc.code())))
