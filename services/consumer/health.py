"""One health poller per processor for the whole system.

The health endpoint allows one call per 5 s per processor, shared by every
caller; the consumer is the only one that asks, and it honours 429/Retry-After.
"""

from __future__ import annotations

import asyncio
import logging

from services.common import logs
from services.common.timefmt import now_ms
from services.consumer.processors import ProcessorClient
from services.consumer.routing import Router

log = logging.getLogger("consumer.health")


async def poll_health(client: ProcessorClient, router: Router, processor: str,
                      interval_seconds: float) -> None:
    while True:
        report = await client.health(processor)
        wait = interval_seconds
        if report.status == 200:
            router.health(processor, report.failing, report.min_response_time_ms, now_ms())
        elif report.status == 429:
            wait = max(interval_seconds, report.retry_after_seconds)
        else:
            log.info("health check failed", extra=logs.fields(processor=processor,
                                                              status=report.status))
        await asyncio.sleep(wait)
