"""Results go back to the cache in batches: one Complete and one Requeue call per
flush instead of one RPC per payment. A failed flush keeps its items and tries
again; nothing is dropped while the consumer lives, and if it dies the cache's
leases bring the payments back to be settled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc

log = logging.getLogger("consumer.reporting")
T = TypeVar("T")


class Reporter:
    def __init__(self, stub: pipeline_pb2_grpc.CacheStub, *, flush_seconds: float,
                 rpc_timeout_seconds: float = 5.0) -> None:
        self._stub = stub
        self._flush_seconds = flush_seconds
        self._rpc_timeout = rpc_timeout_seconds
        self._completions: list[pb.Completion] = []
        self._retries: list[pb.Retry] = []
        self._wake = asyncio.Event()

    def completed(self, correlation_id: str, processor: str, amount_cents: int,
                  requested_at_ms: int) -> None:
        self._completions.append(pb.Completion(
            correlation_id=correlation_id, processor=processor,
            amount_cents=amount_cents, requested_at_ms=requested_at_ms))
        self._wake.set()

    def retry(self, payment: pb.Payment, check: tuple[str, ...], delay_seconds: float) -> None:
        again = pb.Payment(correlation_id=payment.correlation_id, amount_cents=payment.amount_cents,
                           check=check, attempts=payment.attempts)  # which lease this hands back
        self._retries.append(pb.Retry(payment=again, delay_ms=int(delay_seconds * 1000)))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._completions) + len(self._retries)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._flush_seconds)
            self._wake.clear()
            if not await self.flush():
                self._wake.set()
                await asyncio.sleep(0.2)

    async def flush(self) -> bool:
        """Send what is pending; False if the cache could not be reached.

        What was not sent is put back even when the flush is cancelled (the
        consumer stopping), so the final flush still has it. A batch the cache
        applied just before the cancel goes again: both calls are idempotent."""
        completions, self._completions = self._completions, []
        retries, self._retries = self._retries, []
        sent_completions = sent_retries = False
        try:
            sent_completions = await self._send("completions", completions, lambda batch: self._stub.Complete(
                pb.CompleteRequest(completions=batch), timeout=self._rpc_timeout, wait_for_ready=True))
            sent_retries = await self._send("retries", retries, lambda batch: self._stub.Requeue(
                pb.RequeueRequest(retries=batch), timeout=self._rpc_timeout, wait_for_ready=True))
        finally:
            if not sent_completions:
                self._completions[:0] = completions
            if not sent_retries:
                self._retries[:0] = retries
        return sent_completions and sent_retries

    @staticmethod
    async def _send(kind: str, batch: list[T], call: Callable[[list[T]], Awaitable[object]]) -> bool:
        if not batch:
            return True
        try:
            await call(batch)
        except grpc.aio.AioRpcError as exc:
            log.warning("could not report to the cache", extra=logs.fields(
                kind=kind, count=len(batch), code=str(exc.code())))
            return False
        return True
