"""What the metrics cost where it matters.

    python -m loadtest.metricsbench [--rounds 5] [--calls 200000]

1. The request path: ``Api.answered`` (a status count and a ``Durations``
   observation, both front doors call it once per POST /payments) with the
   ``perf_counter`` it takes, against prometheus_client's own Counter and
   Histogram doing the same, per call.
2. A scrape: ``render`` of a Stats snapshot of the size a stack has (two apis,
   one consumer, both processors), per call.

Rounds alternate the variants so the machine's drift hits them alike; medians
are quoted (BENCHMARKS.md, "Metrics cost").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.cache.metrics import render
from services.common.metrics import BOUNDS, Durations
from services.common.rpc import pipeline_pb2 as pb


def ours() -> Callable[[], None]:
    answers: dict[int, int] = {}
    durations = Durations()

    def answered(status: int = 202) -> None:  # the body of Api.answered, and the clock
        started = time.perf_counter()
        answers[status] = answers.get(status, 0) + 1
        durations.observe(time.perf_counter() - started)

    return answered


def library() -> Callable[[], None]:
    registry = CollectorRegistry()
    counter = Counter("payments", "POSTs", ["status"], registry=registry)
    histogram = Histogram("seconds", "POSTs", buckets=BOUNDS, registry=registry)

    def answered(status: str = "202") -> None:
        started = time.perf_counter()
        counter.labels(status).inc()
        histogram.observe(time.perf_counter() - started)

    return answered


def clock_only() -> Callable[[], None]:
    def answered() -> None:
        started = time.perf_counter()
        time.perf_counter() - started

    return answered


def snapshot() -> pb.StatsReply:
    durations = Durations()
    for i in range(10_000):
        durations.observe(i / 100_000)
    histogram = durations.to_pb()
    calls = [pb.ProcessorCalls(processor=name, outcomes={"ok": 5000, "failed": 3, "unknown": 1}, seconds=histogram)
             for name in ("default", "fallback")]
    return pb.StatsReply(
        queued=10, in_flight=30, consumers=1,
        consumer=pb.ConsumerStats(health=[pb.ProcessorHealth(name=n) for n in ("default", "fallback")]),
        per_consumer=[pb.ConsumerStats(instance="consumer", calls=calls)],
        apis=[pb.ApiStats(instance=f"api{i}", answers={202: 5000, 422: 2}, seconds=histogram) for i in (1, 2)],
        cache=pb.CacheStats(journal=True, journal_bytes=1 << 20, fsync_seconds=histogram))


def ns_per_call(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.metricsbench")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    variants = {"clock only": clock_only(), "Api.answered (ours)": ours(), "prometheus_client": library()}
    figures: dict[str, list[float]] = {name: [] for name in variants}
    reply = snapshot()
    scrapes: list[float] = []
    for _ in range(args.rounds):
        for name, call in variants.items():
            figures[name].append(ns_per_call(call, args.calls))
        scrapes.append(ns_per_call(lambda: render(reply, {}), 200) / 1e6)
    for name, values in figures.items():
        print(f"{name:22} median {statistics.median(values):7.0f} ns per POST "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"{'render /metrics':22} median {statistics.median(scrapes):7.3f} ms per scrape "
          f"(rounds: {', '.join(f'{v:.3f}' for v in scrapes)}; {len(render(reply, {}))} bytes)")


if __name__ == "__main__":
    main()
