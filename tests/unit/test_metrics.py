"""/metrics as Prometheus reads it: the shared buckets, the sums of several
processes' histograms, and the exposition rendered from one Stats snapshot,
parsed back with prometheus_client's own parser."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from services.cache.metrics import render
from services.common.metrics import BOUNDS, Durations, added, cumulative_buckets, histogram_json
from services.common.rpc import pipeline_pb2 as pb


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def _types(body: bytes) -> dict[str, str]:
    return {family.name: family.type for family in text_string_to_metric_families(body.decode())}


def test_a_duration_on_a_bound_falls_in_that_bound_bucket() -> None:
    durations = Durations()
    for seconds in (0.0, BOUNDS[0], BOUNDS[0] * 1.01, BOUNDS[-1], BOUNDS[-1] * 2):
        durations.observe(seconds)
    assert durations.counts[0] == 2  # 0 and exactly the first bound: le="0.0001"
    assert durations.counts[1] == 1
    assert durations.counts[len(BOUNDS) - 1] == 1  # exactly 10 s
    assert durations.counts[-1] == 1  # above every bound: +Inf only
    assert durations.count == 5
    assert math.isclose(durations.sum, BOUNDS[0] * 2.01 + BOUNDS[-1] * 3)


def test_histograms_of_several_processes_add_up_bucket_by_bucket() -> None:
    one, two = Durations(), Durations()
    one.observe(0.003)
    two.observe(0.003)
    two.observe(7.0)
    total = added([one.to_pb(), two.to_pb(), pb.Histogram()])  # an empty one (no calls yet) adds nothing
    assert list(total.counts) == [a + b for a, b in zip(one.counts, two.counts, strict=True)]
    assert math.isclose(total.sum, 7.006)
    buckets = cumulative_buckets(total)
    assert buckets[-1] == ("+Inf", 3.0)
    assert dict(buckets)["0.005"] == 2.0 and dict(buckets)["5.0"] == 2.0 and dict(buckets)["10.0"] == 3.0
    assert histogram_json(pb.Histogram())["counts"] == [0] * (len(BOUNDS) + 1)


def _consumer(instance: str, published_at_ms: int, done: int) -> pb.ConsumerStats:
    calls = Durations()
    calls.observe(0.02)
    return pb.ConsumerStats(instance=instance, published_at_ms=published_at_ms, jobs_done=done, pool_size=100,
                            unknown_outcomes=3, unknown_settled=3, unknown_found=1,
                            calls=[pb.ProcessorCalls(processor="default", outcomes={"ok": done, "unknown": 3},
                                                     seconds=calls.to_pb())])


def _snapshot() -> pb.StatsReply:
    post = Durations()
    for _ in range(5):
        post.observe(0.0002)
    return pb.StatsReply(
        queued=7, delayed=1, in_flight=2, rejected=4, consumers=2, retention_ms=86_400_000,
        default=pb.ProcessorTotals(total_requests=10, total_amount_cents=19_900),
        fallback=pb.ProcessorTotals(total_requests=1, total_amount_cents=1_990),
        consumer=pb.ConsumerStats(health=[pb.ProcessorHealth(name="default", failing=True, min_response_time_ms=250,
                                                             checked_at_ms=1_700_000_000_000)]),
        # A restarted consumer keeps its name while the old one's heartbeat is current.
        per_consumer=[_consumer("consumer", 1_000, 50), _consumer("consumer", 2_000, 5)],
        apis=[pb.ApiStats(instance="api1", answers={202: 5, 422: 2}, seconds=post.to_pb(), spool_bytes=1 << 20,
                          backlog_limit=100_000, cache_connected=True)],
        cache=pb.CacheStats(journal=True, journal_bytes=4096, fsync_seconds=Durations().to_pb()))


def test_the_exposition_carries_the_snapshot_in_prometheus_names_and_units() -> None:
    body = render(_snapshot(), {"consumer": 2})
    samples = _samples(body)
    assert samples[("rinha_queue_payments", (("state", "pending"),))] == 7
    assert samples[("rinha_queue_payments", (("state", "rejected"),))] == 4
    assert samples[("rinha_payments_processed_total", (("processor", "default"),))] == 10
    assert samples[("rinha_payments_processed_amount_total", (("processor", "default"),))] == 199.0
    assert samples[("rinha_processor_failing", (("processor", "default"),))] == 1
    assert samples[("rinha_processor_min_response_time_seconds", (("processor", "default"),))] == 0.25
    assert samples[("rinha_api_payments_total", (("instance", "api1"), ("status", "422")))] == 2
    assert samples[("rinha_api_payment_request_duration_seconds_count", (("instance", "api1"),))] == 5
    bucket = "rinha_api_payment_request_duration_seconds_bucket"
    assert samples[(bucket, (("instance", "api1"), ("le", "0.00025")))] == 5
    assert samples[(bucket, (("instance", "api1"), ("le", "0.0001")))] == 0
    assert samples[("rinha_api_spool_bytes", (("instance", "api1"),))] == 1 << 20
    settled = "rinha_consumer_unknown_outcomes_settled_total"
    assert samples[(settled, (("found", "true"), ("instance", "consumer")))] == 1
    assert samples[(settled, (("found", "false"), ("instance", "consumer")))] == 2
    assert samples[("rinha_processor_requests_total",
                    (("instance", "consumer"), ("outcome", "unknown"), ("processor", "default")))] == 3
    assert samples[("rinha_cache_journal_bytes", ())] == 4096
    assert samples[("rinha_service_restarts_total", (("service", "consumer"),))] == 2
    types = _types(body)
    assert types["rinha_api_payment_request_duration_seconds"] == "histogram"
    assert types["rinha_processor_request_duration_seconds"] == "histogram"
    assert types["rinha_payments_processed"] == "counter"
    assert types["rinha_queue_payments"] == "gauge"


def test_one_series_per_instance_the_newest_report_wins() -> None:
    samples = _samples(render(_snapshot(), {}))
    done = [value for (name, labels), value in samples.items()
            if name == "rinha_consumer_jobs_total" and ("result", "done") in labels]
    assert done == [5]  # the consumer published at 2,000 ms, not both (a duplicate series fails the scrape)


def test_without_a_journal_there_are_no_journal_series() -> None:
    snapshot = _snapshot()
    snapshot.cache.CopyFrom(pb.CacheStats(journal=False))
    names = {name for name, _ in _samples(render(snapshot, {}))}
    assert not {name for name in names if name.startswith("rinha_cache_journal")}
    assert "rinha_queue_payments" in names
