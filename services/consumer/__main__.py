"""``python -m services.consumer``: pulls payments from the cache and gets them
charged by the payment processors."""

from __future__ import annotations

from services.common.notls import keep_tls_out

if __name__ == "__main__":  # run as the service, not imported (tests)
    keep_tls_out()  # before anything imports asyncio

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass

from services.common import logs, runtime
from services.common.config import ConfigError, env_choice, env_float, env_int, env_str, env_url, load_or_exit
from services.common.listen import check_listen
from services.common.payment import PROCESSORS
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc_client import cache_channel, cache_stub
from services.consumer.jobs import JobContext, PaymentJob, RetryPolicy
from services.consumer.liveness import Heartbeat
from services.consumer.loop import Consumer
from services.consumer.probes import Probes
from services.consumer.processors import ProcessorClient, Timeouts
from services.consumer.reporting import Reporter
from services.consumer.routing import STRATEGIES, Permit, ProcessorState, Router
from services.consumer.stats import consumer_stats
from services.orch import Orchestrator, OrchestratorLimits


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    cache_address: str
    processor_urls: dict[str, str]
    routing: str
    limits: OrchestratorLimits
    timeouts: Timeouts
    batch_size: int
    poll_wait_ms: int
    dequeue_linger_ms: int
    max_rate: int
    flush_ms: int
    health_interval_seconds: float
    probe_interval_ms: int
    settle_margin_ms: int
    heartbeat_ttl_ms: int
    instance: str
    health_listen: str  # "" when off

    @classmethod
    def from_env(cls) -> ConsumerSettings:
        timeouts = Timeouts(
            payment_seconds=env_int("CONSUMER_PAYMENT_TIMEOUT_MS", 10_000, minimum=100) / 1000,
            lookup_seconds=env_int("CONSUMER_LOOKUP_TIMEOUT_MS", 3_000, minimum=100) / 1000,
        )
        limits = OrchestratorLimits(
            workers=env_int("CONSUMER_WORKERS", 100, minimum=1, maximum=2_000),
            job_timeout_seconds=env_int("CONSUMER_JOB_TIMEOUT_MS", 30_000, minimum=100) / 1000,
        )
        if limits.job_timeout_seconds <= timeouts.payment_seconds + timeouts.lookup_seconds:
            raise ConfigError("CONSUMER_JOB_TIMEOUT_MS must exceed the payment plus lookup "
                              "timeouts, or jobs would be cut off mid-call")
        return cls(
            cache_address=env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock"),
            processor_urls={
                "default": env_url("PROCESSOR_DEFAULT_URL", "http://payment-processor-default:8080"),
                "fallback": env_url("PROCESSOR_FALLBACK_URL", "http://payment-processor-fallback:8080"),
            },
            routing=env_choice("ROUTING_STRATEGY", "patient", STRATEGIES),
            limits=limits,
            timeouts=timeouts,
            batch_size=env_int("CONSUMER_BATCH", 30, minimum=1, maximum=1_000),
            poll_wait_ms=env_int("CONSUMER_POLL_WAIT_MS", 500, minimum=0, maximum=5_000),
            dequeue_linger_ms=env_int("CONSUMER_DEQUEUE_LINGER_MS", 25, minimum=0, maximum=1_000),
            max_rate=env_int("CONSUMER_MAX_RATE", 2_000, minimum=0, maximum=1_000_000),
            flush_ms=env_int("CONSUMER_FLUSH_MS", 25, minimum=0, maximum=1_000),
            health_interval_seconds=env_float("HEALTH_POLL_INTERVAL_S", 5.05, minimum=5.0),
            probe_interval_ms=env_int("CONSUMER_PROBE_INTERVAL_MS", 100, minimum=1),
            settle_margin_ms=env_int("CONSUMER_SETTLE_MARGIN_MS", 1_000, minimum=0),
            # Beats go out every third of it: two may be lost before the
            # consumer is taken for gone.
            heartbeat_ttl_ms=env_int("CONSUMER_HEARTBEAT_TTL_MS", 3_000, minimum=300, maximum=60_000),
            instance=env_str("CONSUMER_INSTANCE", socket.gethostname()),
            health_listen=health_listen(),
        )


def health_listen() -> str:
    """CONSUMER_HEALTH_LISTEN; by default a socket beside the cache's (a unix
    one: /run/rinha/cache.sock -> /run/rinha/consumer-health.sock), none
    ("off") beside a TCP one."""
    cache = env_str("CACHE_ADDRESS", "unix:/run/rinha/cache.sock")
    default = (f"unix:{os.path.dirname(cache.removeprefix('unix:'))}/consumer-health.sock"
               if cache.startswith("unix:") else "off")
    listen = env_str("CONSUMER_HEALTH_LISTEN", default)
    return "" if listen == "off" else check_listen("CONSUMER_HEALTH_LISTEN", listen)


async def serve(settings: ConsumerSettings) -> None:
    log = logs.setup("consumer")
    channel = cache_channel(settings.cache_address)
    stub = cache_stub(channel)
    client = ProcessorClient(settings.processor_urls, settings.timeouts,
                             max_connections=settings.limits.workers + 8)
    router = Router(settings.routing, {name: ProcessorState(name) for name in PROCESSORS},
                    probe_interval_seconds=settings.probe_interval_ms / 1000)
    reporter = Reporter(stub, flush_seconds=settings.flush_ms / 1000)
    ctx = JobContext(client, router, reporter,
                     RetryPolicy(settle_margin_seconds=settings.settle_margin_ms / 1000))
    orchestrator = Orchestrator(settings.limits)

    def make_job(payment: pb.Payment, permit: Permit) -> PaymentJob:
        return PaymentJob(payment, permit, ctx)

    consumer = Consumer(stub, orchestrator, router, make_job, batch_size=settings.batch_size,
                        poll_wait_ms=settings.poll_wait_ms,
                        linger_seconds=settings.dequeue_linger_ms / 1000, max_rate=settings.max_rate,
                        instance=settings.instance)
    heartbeat = Heartbeat(stub, client, router, consumer=consumer.id,
                          ttl_seconds=settings.heartbeat_ttl_ms / 1000,
                          settle_seconds=lambda: max(ctx.settle_delay(name) for name in router.states),
                          stats=lambda: consumer_stats(consumer.instance, orchestrator.stats(), ctx.counters,
                                                       router, client.calls),
                          poll_interval_seconds=settings.health_interval_seconds)
    background = [asyncio.create_task(reporter.run()), asyncio.create_task(heartbeat.beat_forever())]
    probes = Probes(router, lambda: heartbeat.accepted)
    if settings.health_listen:
        await probes.start(settings.health_listen)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, consumer.stop)
    runtime.settle_after_startup()
    log.info("started", extra=logs.fields(routing=settings.routing,
                                          workers=settings.limits.workers,
                                          processors=settings.processor_urls))
    await consumer.run()
    # Stopping: let running jobs finish (each has its own deadline), then make
    # sure every result reached the cache.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(settings.limits.job_timeout_seconds):
            await orchestrator.drain()
    await orchestrator.stop()
    for task in background:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            while reporter.pending and not await reporter.flush():
                await asyncio.sleep(0.1)
    await heartbeat.leave()
    await probes.stop()
    log.info("stopped", extra=logs.fields(unreported=reporter.pending))
    await client.close()
    await channel.close()


def main() -> None:
    settings = load_or_exit(ConsumerSettings.from_env, "consumer")
    runtime.run(lambda: serve(settings), "consumer", default_loop="uvloop", default_policy="batch")


if __name__ == "__main__":
    main()
