"""Two nodes over one Redis (``STORE=redis NODES=2``: tools/stack.py), broken on
purpose under load sent through both nodes' nginx, then the invariants: every
2XX'd id charged exactly once at exactly one processor (the stand-ins are
asked), our ledger equal to their records, and the summary read through each
node equal to theirs over the whole range and three windows within it.

The cluster has ports of its own (TEST_CLUSTER_PORT, default 9997, node 2 one
below; stand-ins on TEST_CLUSTER_DEFAULT_PORT / TEST_CLUSTER_FALLBACK_PORT,
8003 / 8004), so it runs beside conftest's single-node stack in one session.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from tools.clients import Backend, Load, Processors, Verdict, verify
from tools.stack import Stack, StackConfig
from tools.waiting import wait_until

pytestmark = pytest.mark.integration

# conftest's short timeouts; a consumer's heartbeat lapses after 3 s.
CLUSTER_ENV = {"LOG_LEVEL": "INFO", "CACHE_LEASE_MS": "5000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
               "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000",
               "CONSUMER_HEARTBEAT_TTL_MS": "3000"}
HEALTH_INTERVAL_MS = 5000  # the processors' limit: one health call per 5 s


@pytest.fixture(scope="module")
def cluster() -> Iterator[Stack]:
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-cluster-", dir="/tmp"))
    config = StackConfig(
        run_dir=run_dir, store="redis", nodes=2,
        port=int(os.environ.get("TEST_CLUSTER_PORT", "9997")),
        default_port=int(os.environ.get("TEST_CLUSTER_DEFAULT_PORT", "8003")),
        fallback_port=int(os.environ.get("TEST_CLUSTER_FALLBACK_PORT", "8004")),
        env=CLUSTER_ENV,
    )
    try:
        with Stack(config) as running:
            yield running
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def stand_ins(cluster: Stack) -> Processors:
    return Processors(*cluster.config.processor_urls)


@pytest.fixture(scope="module")
def nodes(cluster: Stack) -> list[Backend]:
    """One client per node's nginx, node 1 first."""
    return [Backend(url) for url in cluster.config.base_urls]


@pytest.fixture()
def fresh(cluster: Stack, stand_ins: Processors, nodes: list[Backend]) -> Iterator[None]:
    """Every service of both nodes up and unfrozen (whatever the test before
    did), healthy and empty processors, an empty store."""
    heal(cluster)
    stand_ins.reset()
    nodes[0].http.post("/purge-payments").raise_for_status()
    yield
    stand_ins.reset()
    heal(cluster)


def heal(cluster: Stack) -> None:
    for name in list(cluster.frozen):
        cluster.thaw(name)
    for name, proc in list(cluster.procs.items()):
        if proc.poll() is not None:
            cluster.restart(name)
    # Every api of every node (nginx alternates between a node's two) reaches the store.
    for url in cluster.config.base_urls:
        node = Backend(url)

        def both_apis_answer(node: Backend = node) -> bool:
            return all(node.http.get("/stats").status_code == 200 for _ in range(4))

        wait_until(both_apis_answer, timeout=20, what=f"{url}'s apis to reach the store", ignoring=httpx.HTTPError)


def live_consumers(cluster: Stack) -> int:
    """Consumers whose heartbeat the store holds as current (asked through node 1's cache front)."""
    with grpc.insecure_channel(cluster.cache_address) as channel:
        return pipeline_pb2_grpc.CacheStub(channel).Stats(pb.StatsRequest(), timeout=3).consumers


def check_invariants(cluster: Stack, load: Load, nodes: list[Backend], stand_ins: Processors, *,
                     drain_timeout: float = 60) -> Verdict:
    verdict = verify(load, nodes, stand_ins, drain_timeout=drain_timeout)
    assert not verdict.problems(), verdict.problems()
    assert verdict.summaries_compared >= 4 * len(nodes), "whole range and 3 windows, through every node"
    for url in cluster.config.base_urls:
        assert load.accepted_by[url] > 50, f"too little load went through {url}: {dict(load.accepted_by)}"
    return verdict


@pytest.mark.parametrize("node", [1, 2])
def test_a_whole_node_killed_mid_load_and_restarted(fresh: None, cluster: Stack, nodes: list[Backend],
                                                    stand_ins: Processors, node: int) -> None:
    stand_ins.configure("default", delay=200)  # its consumer dies holding leases
    load = Load(cluster.config.base_urls)
    load.start()
    time.sleep(2.0)
    cluster.kill(f"node{node}")  # SIGKILL, all its processes at once
    assert all(cluster.procs[name].poll() == -signal.SIGKILL for name in cluster.node_services(node))
    time.sleep(1.0)
    cluster.restart(f"node{node}")
    time.sleep(2.0)
    load.stop()
    stand_ins.configure("default", delay=0)
    figures = check_invariants(cluster, load, nodes, stand_ins)
    assert figures.accepted > 200


def test_redis_killed_mid_load_and_restarted_from_its_aof(fresh: None, cluster: Stack, nodes: list[Backend],
                                                          stand_ins: Processors) -> None:
    load = Load(cluster.config.base_urls)
    load.start()
    time.sleep(2.0)
    processed_before = nodes[0].processed()
    cluster.kill("redis")  # SIGKILL
    assert cluster.procs["redis"].returncode == -signal.SIGKILL
    time.sleep(1.0)
    cluster.restart("redis")  # replays its AOF
    time.sleep(2.0)
    load.stop()
    # What was processed before the crash must come back from the AOF: were
    # it lost, the ledger would miss ids the processors hold (mismatches) and
    # the summaries would fall short of theirs.
    assert processed_before > 50
    figures = check_invariants(cluster, load, nodes, stand_ins)
    assert figures.accepted > 200


def test_a_consumer_frozen_past_its_heartbeat_and_lease_then_continued(
        fresh: None, cluster: Stack, nodes: list[Backend], stand_ins: Processors) -> None:
    """8 s of SIGSTOP: past its heartbeat (3 s), its settle time (3 s) and the
    lease (5 s). The other node's consumer must take its payments over (each
    checked at the processors first), and what the frozen one does once
    continued (late results, calls it had started) must not charge twice."""
    stand_ins.configure("default", delay=300)  # the frozen consumer holds payments mid-call
    load = Load(cluster.config.base_urls)
    load.start()
    time.sleep(2.0)
    cluster.freeze("n2.consumer")
    time.sleep(1.0)
    processed_at_freeze = nodes[0].processed()
    time.sleep(7.0)
    assert live_consumers(cluster) == 1, "the frozen consumer's heartbeat should have lapsed"
    progress = nodes[1].processed() - processed_at_freeze
    cluster.thaw("n2.consumer")
    time.sleep(2.0)
    load.stop()
    stand_ins.configure("default", delay=0)
    assert progress > 200, "node 1's consumer should have gone on processing"
    check_invariants(cluster, load, nodes, stand_ins)
    wait_until(lambda: live_consumers(cluster) == 2, timeout=10, what="the continued consumer to beat again")


def test_each_processor_is_polled_at_most_once_per_interval_by_the_whole_cluster(
        fresh: None, cluster: Stack, nodes: list[Backend], stand_ins: Processors) -> None:
    """One elected poller per processor, a claim granted at most once per
    interval: with both nodes' consumers running, the stand-ins never see two
    health calls less than 5 s apart (429s count too: a refused call still
    spends the budget and is what a second poller would get)."""
    wait_until(lambda: live_consumers(cluster) == 2, timeout=10, what="both consumers to beat")
    stand_ins.reset()  # the purge empties the health-call logs
    load = Load(cluster.config.base_urls, per_second=20)
    load.start()
    time.sleep(17.0)
    load.stop()
    assert live_consumers(cluster) == 2
    for name in ("default", "fallback"):
        calls = sorted(stand_ins.health_calls(name))
        gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
        assert len(calls) >= 3, f"{name}: {len(calls)} health calls in 17 s; the poller should make 3 or more"
        assert min(gaps) >= HEALTH_INTERVAL_MS, f"{name}: calls {gaps} ms apart"


def test_every_node_answers_metrics_and_stats_for_the_whole_cluster(fresh: None, cluster: Stack,
                                                                    nodes: list[Backend]) -> None:
    """Each api's report lives in Redis, so either node's /metrics and /stats
    name all four apis and both consumers, the other node's included."""
    apis = {"api1", "api2", "n2.api1", "n2.api2"}
    consumers = {"consumer", "n2.consumer"}
    for node in nodes:
        def complete(node: Backend = node) -> bool:
            stats = node.stats()
            return ({api["instance"] for api in stats["apis"]} == apis
                    and stats["consumer"]["alive"] == len(consumers))
        wait_until(complete, timeout=10, what=f"{node.http.base_url}/stats to list every api", ignoring=httpx.HTTPError)
        text = node.http.get("/metrics").text
        for instance in apis:
            assert f'rinha_api_spool_bytes{{instance="{instance}"}}' in text, instance
        for instance in consumers:
            assert f'rinha_consumer_workers{{instance="{instance}"}}' in text, instance
