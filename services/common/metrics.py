"""Durations as every service records them for /metrics and /stats.

Each process counts its own observations into fixed buckets (``BOUNDS``, one
set for every histogram, so that any two can be added up) and ships the counts
in its reports (``pb.Histogram``); the cache renders them with
prometheus_client (services/cache/metrics.py). Recording is a ``bisect`` and two
additions, cheap enough for the request path
(BENCHMARKS.md, "Decisions in force": plain counters on the request path).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from services.common.rpc import pipeline_pb2 as pb

# Seconds; 100 µs (the api's own share of a request) to 10 s (a processor's
# payment timeout). An observation above the last falls in the +Inf bucket.
BOUNDS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                             0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Durations:
    """Counts of durations per bucket of ``BOUNDS``, and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a duration equal to a bound belongs to that bound's
        # bucket ("le", less than or equal, as Prometheus defines it).
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def to_pb(self) -> pb.Histogram:
        return pb.Histogram(counts=self.counts, sum=self.sum)


def added(histograms: Iterable[pb.Histogram]) -> pb.Histogram:
    """The sum of several processes' histograms (all over ``BOUNDS``)."""
    counts = [0] * (len(BOUNDS) + 1)
    total = 0.0
    for histogram in histograms:
        for i, count in enumerate(histogram.counts[:len(counts)]):
            counts[i] += count
        total += histogram.sum
    return pb.Histogram(counts=counts, sum=total)


def _counts(histogram: pb.Histogram) -> list[int]:
    """Its counts; zeros for an empty message (a process that observed nothing yet)."""
    return list(histogram.counts) or [0] * (len(BOUNDS) + 1)


def histogram_json(histogram: pb.Histogram) -> dict[str, object]:
    """/stats' form: the bounds, the (not cumulative) counts, the sum."""
    return {"bounds": list(BOUNDS), "counts": _counts(histogram), "sum": histogram.sum}


def cumulative_buckets(histogram: pb.Histogram) -> list[tuple[str, float]]:
    """Prometheus' form: (``le``, cumulative count) pairs ending with +Inf."""
    counts = _counts(histogram)
    running = 0
    buckets = []
    for bound, count in zip((*(repr(b) for b in BOUNDS), "+Inf"), counts, strict=True):
        running += count
        buckets.append((bound, float(running)))
    return buckets


