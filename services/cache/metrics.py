"""``GET /metrics``: the whole system in Prometheus' text format.

Rendered here, in the cache (the ``Metrics`` RPC), and relayed by whichever
api nginx asks: rendering is enough Python that, on an api, it would hold up
the POSTs queued behind it once per scrape; a scrape a second raised the
official scenario's p99 when the api rendered it
(BENCHMARKS.md, "Decisions in force": /metrics rendered by the cache).

Built per scrape from one Stats reply (the cache's state, every consumer's and
every api instance's last report) and rendered by prometheus_client: a
collector that yields metric families from that snapshot, so nothing is
recorded through the library on the hot path (each process counts into plain
integers and ``Durations``; services/common/metrics.py). Per-process series
carry an ``instance`` label of their own (API_INSTANCE, CONSUMER_INSTANCE):
scrape with ``honor_labels: true`` (ops/prometheus/prometheus.yml).

Counters count since their process started (a restart starts again at 0, as
Prometheus expects of a counter); the ledger's counts equal the processors'
own and fall to 0 with a purge.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from services.common.metrics import cumulative_buckets
from services.common.rpc import pipeline_pb2 as pb

QUEUE_STATES = ("pending", "delayed", "leased", "rejected")
JOB_RESULTS = (("done", "jobs_done"), ("failed", "jobs_failed"), ("timed_out", "jobs_timed_out"))


def render(reply: pb.StatsReply, restarts: dict[str, int]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(reply, restarts))
    return generate_latest(registry)


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels, unit="seconds")


def _observe(family: HistogramMetricFamily, labels: list[str], histogram: pb.Histogram) -> None:
    family.add_metric(labels, cumulative_buckets(histogram), histogram.sum)


class Snapshot(Collector):
    def __init__(self, reply: pb.StatsReply, restarts: dict[str, int]) -> None:
        self.reply = reply
        self.restarts = restarts

    def collect(self) -> Iterator[Metric]:
        yield from self._system()
        yield from self._apis()
        yield from self._consumers()
        yield from self._cache()

    def _system(self) -> Iterator[Metric]:
        reply = self.reply
        queue = GaugeMetricFamily("rinha_queue_payments", "Payments accepted and not processed, by state "
                                  "(rejected: parked after a processor refused them).", labels=["state"])
        for state, value in zip(QUEUE_STATES, (reply.queued, reply.delayed, reply.in_flight, reply.rejected),
                                strict=True):
            queue.add_metric([state], value)
        yield queue
        processed = CounterMetricFamily("rinha_payments_processed", "Payments charged, by processor "
                                        "(the ledger: equal to the processors' own counts).", labels=["processor"])
        amount = CounterMetricFamily("rinha_payments_processed_amount", "Amount charged, by processor, "
                                     "in the payments' currency.", labels=["processor"])
        for name, totals in (("default", reply.default), ("fallback", reply.fallback)):
            processed.add_metric([name], totals.total_requests)
            amount.add_metric([name], totals.total_amount_cents / 100)
        yield processed
        yield amount
        for name, value, doc in (
                ("requeues", reply.requeued, "Leased payments handed back for another attempt."),
                ("stale_requeues", reply.stale_requeues, "Hand-backs ignored: an earlier lease than the current one."),
                ("duplicates", reply.duplicates, "Submissions of a correlationId already held (not queued again)."),
                ("late_completions", reply.late_completions, "Completions of payments whose lease had run out."),
                ("expired_duplicates", reply.expired_duplicates,
                 "Ids accepted again after the retention that the processor had charged before.")):
            yield CounterMetricFamily(f"rinha_queue_{name}", doc, value=value)
        yield GaugeMetricFamily("rinha_consumers_alive", "Consumers whose heartbeat is current.",
                                value=reply.consumers)
        yield GaugeMetricFamily("rinha_retention_seconds", "How long a processed payment stays known "
                                "(0: until a purge).", value=reply.retention_ms / 1000)
        failing = GaugeMetricFamily("rinha_processor_failing", "1 if the processor's health endpoint "
                                    "last said it is failing.", labels=["processor"])
        slowest = GaugeMetricFamily("rinha_processor_min_response_time_seconds", "The processor's own "
                                    "minimum response time, from its health endpoint.", labels=["processor"])
        checked = GaugeMetricFamily("rinha_processor_health_checked_timestamp_seconds", "When the health "
                                    "endpoint last answered (0: never).", labels=["processor"])
        for health in reply.consumer.health:
            failing.add_metric([health.name], int(health.failing))
            slowest.add_metric([health.name], health.min_response_time_ms / 1000)
            checked.add_metric([health.name], health.checked_at_ms / 1000)
        yield failing
        yield slowest
        yield checked
        restarts = CounterMetricFamily("rinha_service_restarts", "Restarts by the local supervisor "
                                       "(make run; compose counts its own).", labels=["service"])
        for service, count in sorted(self.restarts.items()):
            restarts.add_metric([service], count)
        yield restarts

    def _apis(self) -> Iterator[Metric]:
        answers = CounterMetricFamily("rinha_api_payments", "POST /payments answered, by HTTP status.",
                                      labels=["instance", "status"])
        seconds = _histogram("rinha_api_payment_request_duration", "POST /payments inside the api, from its "
                             "bytes read to its answer written (nginx and socket queues not included).",
                             ["instance"])
        gauges = {
            "spool_pending_payments": ("Payments in the spool not yet acknowledged by the cache.", "spool_pending"),
            "spool_bytes": ("The spool file's reserved size on disk.", "spool_bytes"),
            "cache_backlog_payments": ("The system's backlog as of the cache's last acknowledgement.",
                                       "cache_backlog"),
            "backlog_limit_payments": ("API_MAX_BACKLOG: past it, POST /payments answers 503.", "backlog_limit"),
            "cache_connected": ("1 while the stream to the cache is up.", "cache_connected"),
        }
        families = {name: GaugeMetricFamily(f"rinha_api_{name}", doc, labels=["instance"])
                    for name, (doc, _) in gauges.items()}
        for api in self.reply.apis:
            for status, count in sorted(api.answers.items()):
                answers.add_metric([api.instance, str(status)], count)
            _observe(seconds, [api.instance], api.seconds)
            for name, (_, field) in gauges.items():
                families[name].add_metric([api.instance], float(getattr(api, field)))
        yield answers
        yield seconds
        yield from families.values()

    def _consumers(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("rinha_consumer_workers", "The orchestrator's pool size.", labels=["instance"])
        running = GaugeMetricFamily("rinha_consumer_jobs_running", "Jobs running now.", labels=["instance"])
        jobs = CounterMetricFamily("rinha_consumer_jobs", "Jobs ended, by result.", labels=["instance", "result"])
        retries = CounterMetricFamily("rinha_consumer_retries", "Payments handed back to be tried again.",
                                      labels=["instance"])
        rejected = CounterMetricFamily("rinha_consumer_rejected", "Payments parked as refused by a processor.",
                                       labels=["instance"])
        unknown = CounterMetricFamily("rinha_consumer_unknown_outcomes", "Attempts whose outcome was unknown "
                                      "(no answer, or a proxy's 502/503/504).", labels=["instance"])
        settled = CounterMetricFamily("rinha_consumer_unknown_outcomes_settled", "Unknown outcomes settled by "
                                      "asking the processors: found (charged) or not.", labels=["instance", "found"])
        calls = CounterMetricFamily("rinha_processor_requests", "Payment requests to the processors, by outcome.",
                                    labels=["instance", "processor", "outcome"])
        seconds = _histogram("rinha_processor_request_duration", "Payment requests to the processors, "
                             "sent to answered.", ["instance", "processor"])
        for consumer in _newest_per_instance(self.reply.per_consumer):
            name = [consumer.instance]
            workers.add_metric(name, consumer.pool_size)
            running.add_metric(name, consumer.jobs_running)
            for result, field in JOB_RESULTS:
                jobs.add_metric([consumer.instance, result], getattr(consumer, field))
            retries.add_metric(name, consumer.retries)
            rejected.add_metric(name, consumer.rejected)
            unknown.add_metric(name, consumer.unknown_outcomes)
            settled.add_metric([consumer.instance, "true"], consumer.unknown_found)
            settled.add_metric([consumer.instance, "false"], consumer.unknown_settled - consumer.unknown_found)
            for processor in consumer.calls:
                for outcome, count in sorted(processor.outcomes.items()):
                    calls.add_metric([consumer.instance, processor.processor, outcome], count)
                _observe(seconds, [consumer.instance, processor.processor], processor.seconds)
        yield from (workers, running, jobs, retries, rejected, unknown, settled, calls, seconds)

    def _cache(self) -> Iterator[Metric]:
        cache = self.reply.cache
        if not cache.journal:
            return
        yield GaugeMetricFamily("rinha_cache_journal_bytes", "The cache's journal file size.",
                                value=cache.journal_bytes)
        fsync = _histogram("rinha_cache_journal_fsync", "fsync of the cache's journal.", [])
        _observe(fsync, [], cache.fsync_seconds)
        yield fsync


def _newest_per_instance(consumers: Iterable[pb.ConsumerStats]) -> list[pb.ConsumerStats]:
    """One report per instance label: a restarted consumer keeps its name while
    its predecessor's heartbeat has not lapsed yet, and two series with the
    same labels would make Prometheus refuse the whole scrape."""
    newest: dict[str, pb.ConsumerStats] = {}
    for consumer in consumers:
        held = newest.get(consumer.instance)
        if held is None or consumer.published_at_ms > held.published_at_ms:
            newest[consumer.instance] = consumer
    return sorted(newest.values(), key=lambda consumer: consumer.instance)
