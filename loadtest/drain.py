"""``make drain``: how fast the consumer empties a backlog, inside its compose limits.

    python -m loadtest.drain [--payments 10000] [--delays 0,10,20] [--runs 1]

For each delay: a fresh cache and consumer (each inside the CPU/memory limits of
docker-compose.yml, via cgroup v1) and the processor stand-ins. The default
processor is made to fail, ``--payments`` payments are queued straight into the
cache (gRPC ``Enqueue``), then default recovers with ``delay`` ms per payment,
as in the official test's last 20 s. The clock runs from the recovery until the
cache's ledger holds every payment; the stand-in's own count must agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path

import grpc

from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from tools.cgroups import available as cgroups_available
from tools.cgroups import compose_limits
from tools.clients import Processors
from tools.stack import REPO, Stack, StackConfig

RESULTS = REPO / "loadtest" / "results"
SERVICES = ("cache", "consumer")


def enqueue(stub: pipeline_pb2_grpc.CacheStub, count: int, batch: int = 500) -> None:
    for start in range(0, count, batch):
        size = min(batch, count - start)
        stub.Enqueue(pb.SubmitBatch(seq=start + size, payments=[
            pb.Payment(correlation_id=str(uuid.uuid4()), amount_cents=1990) for _ in range(size)]),
            timeout=10)


def drain_once(payments: int, delay_ms: int, limits: bool, run_dir: Path) -> dict:
    applied = {name: limit for name, limit in compose_limits(REPO / "docker-compose.yml").items()
               if name in SERVICES} if limits else {}
    shutil.rmtree(run_dir, ignore_errors=True)  # no journal from an earlier run
    config = StackConfig(run_dir=run_dir, port=0, limits=applied, services=SERVICES,
                         env={"LOG_LEVEL": "WARNING"})
    with Stack(config) as stack, grpc.insecure_channel(stack.cache_address) as channel:
        stub = pipeline_pb2_grpc.CacheStub(channel)
        processors = Processors(*config.processor_urls)
        processors.reset()
        processors.configure("fallback", failure=True)
        processors.configure("default", delay=delay_ms, failure=True)
        enqueue(stub, payments)
        time.sleep(1.0)  # the consumer has seen default fail and holds the queue
        baseline = {name: stack.cgroups[name].usage() for name in applied}
        started = time.monotonic()
        processors.configure("default", failure=False)
        deadline = started + 120
        while stub.Stats(pb.StatsRequest(), timeout=5).default.total_requests < payments:
            if time.monotonic() > deadline:
                raise SystemExit(f"backlog not drained within 120 s at delay {delay_ms} ms")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        stats = stub.Stats(pb.StatsRequest(), timeout=5)
        at_processor = processors.summary("default")["totalRequests"]
        result: dict = {
            "payments": payments, "delay_ms": delay_ms, "seconds": round(seconds, 3),
            "per_second": round(payments / seconds), "ledger": stats.default.total_requests,
            "fallback": stats.fallback.total_requests, "at_processor": at_processor,
            "exactly_once": at_processor == payments == stats.default.total_requests
            and stats.fallback.total_requests == 0,
        }
        for name in applied:
            usage = stack.cgroups[name].usage().since(baseline[name])
            result[name] = {"limit_cpus": applied[name].cpus,
                            "avg_cores": round(usage.cpu_seconds / seconds, 3),
                            "throttled_pct": round(100 * usage.throttled_share, 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--delays", default="0,10,20", help="default processor delays (ms), comma-separated")
    parser.add_argument("--runs", type=int, default=1, help="runs per delay")
    parser.add_argument("--no-limits", dest="limits", action="store_false")
    parser.add_argument("--run-dir", default="/tmp/rinha-drain")
    args = parser.parse_args()
    limits = args.limits and cgroups_available()
    if args.limits and not limits:
        print("cgroup v1 is not writable here: running without limits")
    results = []
    for delay in (int(d) for d in args.delays.split(",")):
        for _ in range(args.runs):
            result = drain_once(args.payments, delay, limits, Path(args.run_dir))
            results.append(result)
            consumer = result.get("consumer", {})
            print(f"delay {delay:>3} ms: {result['payments']} payments in {result['seconds']:.2f} s "
                  f"= {result['per_second']}/s; consumer {consumer.get('avg_cores', '-')} cores "
                  f"(limit {consumer.get('limit_cpus', '-')}, throttled {consumer.get('throttled_pct', '-')}%); "
                  f"cache {result.get('cache', {}).get('avg_cores', '-')} cores; "
                  f"exactly once: {result['exactly_once']}", flush=True)
    for delay in sorted({r["delay_ms"] for r in results}):
        rates = [r["per_second"] for r in results if r["delay_ms"] == delay]
        print(f"delay {delay} ms: median {statistics.median(rates)}/s over {len(rates)} run(s)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"drain-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"-> {path.relative_to(REPO)}")
    if not all(r["exactly_once"] for r in results):
        raise SystemExit("FAILED: the ledger and the processor disagree")


if __name__ == "__main__":
    main()
