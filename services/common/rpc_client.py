"""One way to reach the cache: channel options shared by every client, and
the pause between a failed call or stream and the next attempt."""

from __future__ import annotations

import asyncio

import grpc

from services.common.rpc import pipeline_pb2_grpc

# The largest message either end takes, past gRPC's 4 MiB default: headroom
# so that no message the services exchange (a shipped batch, a Stats or
# Metrics reply carrying every instance) is ever refused for its size. The
# cache's server and every client channel set it from here.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MESSAGE_OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    *MESSAGE_OPTIONS,
]


def cache_channel(address: str) -> grpc.aio.Channel:
    """``address`` is ``unix:/path/to.sock`` or ``host:port``."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def cache_stub(channel: grpc.aio.Channel) -> pipeline_pb2_grpc.CacheAsyncStub:
    return pipeline_pb2_grpc.CacheStub(channel)


class Backoff:
    """Doubling pauses between attempts to reach the cache, from ``first`` up
    to ``ceiling``; ``reset`` after a success, so that a cache restart late in
    the process's life is not met with the longest pause."""

    def __init__(self, first: float = 0.05, ceiling: float = 1.0) -> None:
        self.first = first
        self.ceiling = ceiling
        self.next = first

    async def wait(self) -> None:
        pause = self.next
        self.next = min(pause * 2, self.ceiling)
        await asyncio.sleep(pause)

    def reset(self) -> None:
        self.next = self.first
