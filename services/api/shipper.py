"""Ships the spool to the cache over one long-lived gRPC stream, in batches.

One stream per api instance instead of one unary call per request: every gRPC
message costs the api CPU whatever its size, so a call per request would spend
much of the stack's CPU budget on the hop alone
(BENCHMARKS.md, "Decisions in force": batched gRPC hops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

import grpc

from services.api.spool import Spool
from services.common import logs
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from services.common.rpc_client import Backoff

log = logging.getLogger("api.shipper")


class Shipper:
    def __init__(self, spool: Spool, stub: pipeline_pb2_grpc.CacheAsyncStub, *,
                 batch_max: int, linger_seconds: float) -> None:
        self._spool = spool
        self._stub = stub
        self._batch_max = batch_max
        self._linger = linger_seconds
        self._acked = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._waiter_added = asyncio.Event()
        self.connected = False
        self.cache_backlog = 0  # as of the last acknowledgement

    async def wait_acked(self, seq: int) -> None:
        if seq <= self._acked:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        self._waiter_added.set()
        await future

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._stream()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # grpc errors, broken stream: reconnect
                if self.connected:
                    log.warning("stream to cache lost", extra=logs.fields(error=repr(exc)))
            if self.connected:
                backoff.reset()  # the stream worked: this is a new outage
            self.connected = False
            self._spool.rewind()
            await backoff.wait()

    async def _stream(self) -> None:
        call = self._stub.Submit(wait_for_ready=True)
        reader = asyncio.create_task(self._read_acks(call))
        spool = self._spool
        try:
            while not reader.done():
                if not spool.ready.is_set():
                    waiter = asyncio.ensure_future(spool.ready.wait())
                    await asyncio.wait((waiter, reader), return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                await self._linger_unless_awaited()
                batch = spool.take_unsent(self._batch_max)
                if not batch:
                    continue
                await call.write(pb.SubmitBatch(seq=batch[-1].seq, payments=[
                    pb.Payment(correlation_id=i.correlation_id, amount_cents=i.amount_cents)
                    for i in batch]))
            reader.result()  # re-raise why the stream ended
        finally:
            reader.cancel()
            call.cancel()

    async def _linger_unless_awaited(self) -> None:
        """Wait ``linger`` so a message carries many payments, but not while a
        request waits for an acknowledgement (``API_ACK_MODE=cache``): its
        answer would wait out the linger too. Shipping at once then batches
        whatever arrived while the previous message was in flight."""
        if not self._linger or self._waiters:
            return
        self._waiter_added.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._waiter_added.wait(), self._linger)

    async def _read_acks(self, call: grpc.aio.StreamStreamCall[pb.SubmitBatch, pb.SubmitAck]) -> None:
        while True:
            ack = await call.read()
            if not isinstance(ack, pb.SubmitAck):  # grpc.aio.EOF
                raise ConnectionError("cache closed the stream")
            self.connected = True
            self.cache_backlog = ack.backlog
            self._acked = max(self._acked, ack.seq)
            self._spool.acknowledge(ack.seq)
            waiters = self._waiters
            while waiters and waiters[0][0] <= ack.seq:
                _, future = waiters.popleft()
                if not future.done():
                    future.set_result(None)
