"""This consumer's figures, as the heartbeat carries them to the cache (which
adds every consumer's up for /stats and renders them for /metrics)."""

from __future__ import annotations

from collections.abc import Mapping

from services.common.rpc import pipeline_pb2 as pb
from services.common.timefmt import now_ms
from services.consumer.jobs import JobCounters
from services.consumer.processors import Calls
from services.consumer.routing import Router
from services.orch import PoolStats


def consumer_stats(instance: str, pool: PoolStats, counters: JobCounters, router: Router,
                   calls: Mapping[str, Calls]) -> pb.ConsumerStats:
    return pb.ConsumerStats(
        jobs_running=pool.running, jobs_done=pool.done, jobs_failed=pool.failed,
        jobs_timed_out=pool.timed_out, pool_size=pool.size, retries=counters.retries,
        unknown_outcomes=counters.unknown_outcomes, unknown_settled=counters.unknown_settled,
        health=[pb.ProcessorHealth(name=s.name, failing=s.health_failing,
                                   min_response_time_ms=s.min_response_time_ms,
                                   checked_at_ms=s.health_checked_at_ms)
                for s in router.states.values()],
        routing=router.strategy, published_at_ms=now_ms(), instance=instance,
        rejected=counters.rejected, unknown_found=counters.unknown_found,
        calls=[processor_calls.to_pb(name) for name, processor_calls in calls.items()])
