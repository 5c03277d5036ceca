"""Results go back to the cache in batches: one Complete, one Requeue and one
Reject call per flush instead of one RPC per payment. A failed flush keeps its
items and tries again after a growing pause (``Backoff``); nothing is dropped
while the consumer lives, and if it dies the cache's leases bring the payments
back to be settled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import grpc

from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc_client import Backoff

log = logging.getLogger("consumer.reporting")
T = TypeVar("T")


@dataclass(slots=True)
class _Outbox(Generic[T]):
    """One kind of result waiting for its RPC."""

    kind: str
    send: Callable[[list[T]], Awaitable[object]]
    items: list[T] = field(default_factory=list)


class ResultCalls(Protocol):
    """The cache's three result RPCs, as the reporter calls them
    (``pipeline_pb2_grpc.CacheAsyncStub`` has them; a fake in unit tests)."""

    def Complete(self, request: pb.CompleteRequest, *,
                 timeout: float | None = ..., wait_for_ready: bool | None = ...) -> Awaitable[object]: ...

    def Requeue(self, request: pb.RequeueRequest, *,
                timeout: float | None = ..., wait_for_ready: bool | None = ...) -> Awaitable[object]: ...

    def Reject(self, request: pb.RejectRequest, *,
               timeout: float | None = ..., wait_for_ready: bool | None = ...) -> Awaitable[object]: ...


class Reporter:
    def __init__(self, stub: ResultCalls, *, flush_seconds: float,
                 rpc_timeout_seconds: float = 5.0, backoff: Backoff | None = None) -> None:
        self._flush_seconds = flush_seconds
        self._backoff = backoff or Backoff(first=0.2, ceiling=2.0)
        timeout = rpc_timeout_seconds
        self._completions: _Outbox[pb.Completion] = _Outbox("completions", lambda batch: stub.Complete(
            pb.CompleteRequest(completions=batch), timeout=timeout, wait_for_ready=True))
        self._retries: _Outbox[pb.Retry] = _Outbox("retries", lambda batch: stub.Requeue(
            pb.RequeueRequest(retries=batch), timeout=timeout, wait_for_ready=True))
        self._rejections: _Outbox[pb.Rejection] = _Outbox("rejections", lambda batch: stub.Reject(
            pb.RejectRequest(rejections=batch), timeout=timeout, wait_for_ready=True))
        self._wake = asyncio.Event()

    def completed(self, correlation_id: str, processor: str, amount_cents: int,
                  requested_at_ms: int) -> None:
        self._completions.items.append(pb.Completion(
            correlation_id=correlation_id, processor=processor,
            amount_cents=amount_cents, requested_at_ms=requested_at_ms))
        self._wake.set()

    def retry(self, payment: pb.Payment, check: tuple[str, ...], delay_seconds: float) -> None:
        """Hand ``payment`` (as it was lent) back, naming its lease: should it
        have been lent again meanwhile, the cache ignores this."""
        again = pb.Payment(correlation_id=payment.correlation_id, amount_cents=payment.amount_cents,
                           check=check, lease=payment.lease)
        self._retries.items.append(pb.Retry(payment=again, delay_ms=int(delay_seconds * 1000)))
        self._wake.set()

    def rejected(self, payment: pb.Payment, processor: str, reason: str) -> None:
        """Park ``payment`` (as it was lent) as refused, naming the lease this ends."""
        self._rejections.items.append(pb.Rejection(
            correlation_id=payment.correlation_id, processor=processor, reason=reason,
            lease=payment.lease))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._completions.items) + len(self._retries.items) + len(self._rejections.items)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self._flush_seconds)
            self._wake.clear()
            if await self.flush():
                self._backoff.reset()
            else:
                self._wake.set()
                await self._backoff.wait()

    async def flush(self) -> bool:
        """Send what is pending; False if the cache could not be reached.

        What was not sent is put back even when the flush is cancelled (the
        consumer stopping), so the final flush still has it. A batch the cache
        applied just before the cancel goes again: every call is idempotent
        (a repeated completion is ignored, a repeated hand-back or rejection
        names a lease that is no longer current)."""
        ok = True
        outboxes: tuple[_Outbox[Any], ...] = (self._completions, self._retries, self._rejections)
        for outbox in outboxes:
            ok = await self._send(outbox) and ok
        return ok

    @staticmethod
    async def _send(outbox: _Outbox[T]) -> bool:
        batch, outbox.items = outbox.items, []
        if not batch:
            return True
        sent = False
        try:
            await outbox.send(batch)
            sent = True
        except grpc.aio.AioRpcError as exc:
            log.warning("could not report to the cache", extra=logs.fields(
                kind=outbox.kind, count=len(batch), code=str(exc.code())))
        finally:
            if not sent:
                outbox.items[:0] = batch
        return sent
