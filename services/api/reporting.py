"""The api's own figures, sent to the cache about once a second.

The cache keeps each instance's latest report for ten seconds and hands all of
them out with its stats, so that whichever instance nginx picks answers
/stats and /metrics for every instance (Prometheus and the dashboard see the
whole system through one address). A report that gets through also tells the
readiness probe that the cache has been reached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc

log = logging.getLogger("api.reporting")
REPORT_INTERVAL_SECONDS = 1.0


class ApiReporter:
    def __init__(self, stub: pipeline_pb2_grpc.CacheAsyncStub, stats: Callable[[], pb.ApiStats],
                 interval_seconds: float = REPORT_INTERVAL_SECONDS) -> None:
        self._stub = stub
        self._stats = stats
        self._interval = interval_seconds
        self.reached_cache = False  # a report got through at least once
        self._failing = False

    async def report(self) -> bool:
        try:
            await self._stub.ReportApi(self._stats(), timeout=max(self._interval, 1.0))
        except grpc.aio.AioRpcError as exc:
            if not self._failing:  # once per outage: the shipper logs the outage itself
                log.info("report to the cache failed", extra=logs.fields(code=str(exc.code())))
            self._failing = True
            return False
        self._failing = False
        self.reached_cache = True
        return True

    async def run(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self._interval)
