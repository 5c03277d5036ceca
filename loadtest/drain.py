"""``make drain``: how fast the consumer empties a backlog, inside its compose limits.

    python -m loadtest.drain [--payments 10000] [--delays 0,10,20] [--runs 1]

For each delay: a fresh cache and consumer (each inside the CPU/memory limits of
docker-compose.yml, via cgroup v1) and the processor stand-ins. The default
processor is made to fail, ``--payments`` payments are queued straight into the
cache (gRPC ``Enqueue``), then default recovers with ``delay`` ms per payment,
as in the official test's last 20 s. The clock runs from the recovery until the
cache's ledger holds every payment; the stand-in's own count must agree.

    python -m loadtest.drain --store redis [--consumers 1,2,4] [--payments 20000] [--runs 1]

``--store redis``: for each consumer count N, a fresh stack of N nodes over one
redis-server, each node only a cache front and a consumer (no apis, no nginx),
each of them inside its docker-compose.yml limit and Redis inside
docker-compose.redis.yml's (0.5 CPU / 256 MB). The backlog (20,000 by default)
is queued into node 1's front while default fails; default recovers with
delay 0 (``--delays``) and the clock runs until the ledger holds every payment.
Reported: payments/s, the scaling efficiency (the rate over N x the
1-consumer rate), Redis' CPU (its cgroup; /proc beside it), and Redis calls
per payment from ``INFO commandstats`` before and after, net of the drain's
own reads: ``FCALL``s (round trips of the fronts' RPC batches) and every
command (which counts the commands the functions run inside Redis too).
With ``--runs`` > 1 the counts alternate (1, 2, 4, 1, 2, 4, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import uuid
from pathlib import Path

import grpc
import redis

from loadtest.bench import peak_rss_bytes, redis_limit
from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from tools.cgroups import ResourceLimit, compose_limits
from tools.cgroups import available as cgroups_available
from tools.clients import Processors
from tools.stack import REPO, STORES, Stack, StackConfig, add_isolation_options, node_name

RESULTS = REPO / "loadtest" / "results"
SERVICES = ("cache", "consumer")
DEFAULTS = {"memory": {"payments": 10_000, "delays": "0,10,20"},
            "redis": {"payments": 20_000, "delays": "0"}}
# What one poll of the ledger costs Redis: the gRPC Summary is one FCALL of
# rinha_totals, which runs one HMGET per processor for counts and one for
# amounts (services/cache/redis_store: totals; store.lua: totals()).
SUMMARY_FCALLS = 1
SUMMARY_COMMANDS = 1 + 4
POLL_SECONDS = 0.02


def enqueue(stub: pipeline_pb2_grpc.CacheStub, count: int, batch: int = 500) -> None:
    for start in range(0, count, batch):
        size = min(batch, count - start)
        stub.Enqueue(pb.SubmitBatch(seq=start + size, payments=[
            pb.Payment(correlation_id=str(uuid.uuid4()), amount_cents=1990) for _ in range(size)]),
            timeout=10)


def hold_backlog(stub: pipeline_pb2_grpc.CacheStub, processors: Processors, payments: int,
                 delay_ms: int) -> Processors:
    """Both processors failing, ``payments`` queued; default will answer after
    ``delay_ms`` once it recovers. Returns ``processors`` for the recovery."""
    processors.reset()
    processors.configure("fallback", failure=True)
    processors.configure("default", delay=delay_ms, failure=True)
    enqueue(stub, payments)
    time.sleep(1.0)  # the consumers have seen default fail and hold the queue
    return processors


def drain_once(payments: int, delay_ms: int, limits: bool, run_dir: Path,
               standin_ports: tuple[int, int] = (8001, 8002), cgroup_parent: str = "rinha",
               timeout: float = 120) -> dict:
    applied = {name: limit for name, limit in compose_limits(REPO / "docker-compose.yml").items()
               if name in SERVICES} if limits else {}
    shutil.rmtree(run_dir, ignore_errors=True)  # no journal from an earlier run
    config = StackConfig(run_dir=run_dir, port=0, limits=applied, services=SERVICES,
                         env={"LOG_LEVEL": "WARNING"}, default_port=standin_ports[0],
                         fallback_port=standin_ports[1], cgroup_parent=cgroup_parent)
    with Stack(config) as stack, grpc.insecure_channel(stack.cache_address) as channel:
        stub = pipeline_pb2_grpc.CacheStub(channel)
        processors = hold_backlog(stub, Processors(*config.processor_urls), payments, delay_ms)
        baseline = {name: stack.cgroups[name].usage() for name in applied}
        started = time.monotonic()
        processors.configure("default", failure=False)
        deadline = started + timeout
        while stub.Stats(pb.StatsRequest(), timeout=5).default.total_requests < payments:
            if time.monotonic() > deadline:
                raise SystemExit(f"backlog not drained within {timeout:.0f} s at delay {delay_ms} ms")
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


def node_limits(consumers: int) -> dict[str, ResourceLimit]:
    """Each node's cache front and consumer under their docker-compose.yml
    limits ("cache", "n2.cache", ...), and Redis under docker-compose.redis.yml's."""
    compose = compose_limits(REPO / "docker-compose.yml")
    limits = {node_name(node, service): compose[service]
              for node in range(1, consumers + 1) for service in SERVICES}
    limits["redis"] = redis_limit()
    return limits


def command_calls(commandstats: dict) -> dict[str, int]:
    """``INFO commandstats`` as redis-py parses it -> calls by command."""
    return {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in commandstats.items()}


def redis_calls(before: dict[str, int], after: dict[str, int], polls: int) -> dict[str, int]:
    """FCALLs and commands of every kind between two ``command_calls``, net of
    the drain's own: ``polls`` Summary calls and the INFO that took ``before``
    (INFO is only ever ours: the fronts do not send it)."""
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return {"fcalls": delta.get("fcall", 0) - polls * SUMMARY_FCALLS,
            "commands": sum(calls for name, calls in delta.items() if name != "info") - polls * SUMMARY_COMMANDS}


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (every thread), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain_redis_once(payments: int, consumers: int, delay_ms: int, limits: bool, run_dir: Path, *,
                     standin_ports: tuple[int, int], cgroup_parent: str, timeout: float) -> dict:
    applied = node_limits(consumers) if limits else {}
    shutil.rmtree(run_dir, ignore_errors=True)  # no AOF from an earlier run
    config = StackConfig(run_dir=run_dir, port=0, limits=applied, services=SERVICES, store="redis",
                         nodes=consumers, env={"LOG_LEVEL": "WARNING"}, default_port=standin_ports[0],
                         fallback_port=standin_ports[1], cgroup_parent=cgroup_parent)
    with Stack(config) as stack, grpc.insecure_channel(stack.cache_address) as channel:
        assert stack.redis is not None
        client = redis.Redis(unix_socket_path=str(stack.redis.socket))
        stub = pipeline_pb2_grpc.CacheStub(channel)
        processors = hold_backlog(stub, Processors(*config.processor_urls), payments, delay_ms)
        redis_pid = stack.procs["redis"].pid
        baseline = {name: stack.cgroups[name].usage() for name in applied}
        redis_cpu = process_cpu_seconds(redis_pid)
        before = command_calls(client.info("commandstats"))
        started = time.monotonic()
        processors.configure("default", failure=False)
        deadline, polls = started + timeout, 0
        # Summary (one FCALL), not Stats: its cost in Redis is known and taken off.
        while True:
            polls += 1
            if stub.Summary(pb.SummaryRequest(), timeout=5).default.total_requests >= payments:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"backlog not drained within {timeout:.0f} s with {consumers} consumer(s)")
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        after = command_calls(client.info("commandstats"))
        redis_cpu = process_cpu_seconds(redis_pid) - redis_cpu
        usage = {name: stack.cgroups[name].usage().since(baseline[name]) for name in applied}
        client.close()
        stats = stub.Stats(pb.StatsRequest(), timeout=5)
        at_processor = processors.summary("default")["totalRequests"]
        calls = redis_calls(before, after, polls)
        result: dict = {
            "store": "redis", "consumers": consumers,
            "payments": payments, "delay_ms": delay_ms, "seconds": round(seconds, 3),
            "per_second": round(payments / seconds), "ledger": stats.default.total_requests,
            "fallback": stats.fallback.total_requests, "at_processor": at_processor,
            "exactly_once": at_processor == payments == stats.default.total_requests
            and stats.fallback.total_requests == 0,
            "redis_fcalls": calls["fcalls"], "redis_commands": calls["commands"], "ledger_polls": polls,
            "redis_fcalls_per_payment": round(calls["fcalls"] / payments, 4),
            "redis_commands_per_payment": round(calls["commands"] / payments, 2),
        }
        redis_entry: dict = {"proc_cores": round(redis_cpu / seconds, 3),
                             "peak_rss_mb": round(peak_rss_bytes(redis_pid) / 2**20, 1)}
        for name in applied:
            entry = {"limit_cpus": applied[name].cpus,
                     "avg_cores": round(usage[name].cpu_seconds / seconds, 3),
                     "throttled_pct": round(100 * usage[name].throttled_share, 1)}
            if name == "redis":
                redis_entry = {**entry, "peak_cgroup_mb": round(usage[name].peak_memory_bytes / 2**20, 1),
                               **redis_entry}
            else:
                result[name] = entry
        result["redis"] = redis_entry
        for service in SERVICES:  # every node's, added up
            names = [node_name(node, service) for node in range(1, consumers + 1)]
            if all(name in result for name in names):
                result[f"{service}_cores"] = round(sum(result[name]["avg_cores"] for name in names), 3)
    return result


def scaling(results: list[dict]) -> dict[tuple[int, int], dict]:
    """Per (consumers, delay): the median rate over its runs, and the
    efficiency: that rate over consumers x the 1-consumer median at that delay."""
    table: dict[tuple[int, int], dict] = {}
    for key in sorted({(r["consumers"], r["delay_ms"]) for r in results}):
        rates = [r["per_second"] for r in results if (r["consumers"], r["delay_ms"]) == key]
        table[key] = {"rates": rates, "median": statistics.median(rates)}
    for (consumers, delay), row in table.items():
        one = table.get((1, delay))
        row["efficiency"] = round(row["median"] / (consumers * one["median"]), 3) if one else None
    return table


def _median_of(rows: list[dict], key: str, places: int = 3) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    return f"{statistics.median(values):.{places}f}" if values else "-"


def main_redis(args: argparse.Namespace, limits: bool) -> None:
    counts = [int(n) for n in args.consumers.split(",")]
    delays = [int(d) for d in args.delays.split(",")]
    results = []
    for _ in range(args.runs):
        for consumers in counts:
            for delay in delays:
                result = drain_redis_once(args.payments, consumers, delay, limits, Path(args.run_dir),
                                          standin_ports=args.standin_ports, cgroup_parent=args.cgroup_parent,
                                          timeout=args.timeout)
                results.append(result)
                print(f"{consumers} consumer(s), delay {delay} ms: {result['payments']} payments in "
                      f"{result['seconds']:.2f} s = {result['per_second']}/s; consumers "
                      f"{result.get('consumer_cores', '-')} cores, fronts {result.get('cache_cores', '-')} cores, "
                      f"redis {result['redis'].get('avg_cores', result['redis']['proc_cores'])} cores; "
                      f"{result['redis_fcalls_per_payment']} FCALL and {result['redis_commands_per_payment']} "
                      f"commands per payment; exactly once: {result['exactly_once']}", flush=True)
    table = scaling(results)
    for result in results:
        result["scaling_efficiency"] = table[(result["consumers"], result["delay_ms"])]["efficiency"]
    print(f"{'consumers':>9} {'delay':>5} {'payments/s (runs)':>24} {'median':>7} {'efficiency':>10} "
          f"{'consumers':>9} {'fronts':>7} {'redis':>6} {'redis':>6} {'FCALL':>8} {'commands':>9} {'exactly':>7}")
    print(f"{'':>9} {'ms':>5} {'':>24} {'':>7} {'vs N x 1':>10} "
          f"{'cores':>9} {'cores':>7} {'cores':>6} {'thr.%':>6} {'/payment':>8} {'/payment':>9} {'once':>7}")
    for (consumers, delay), row in table.items():
        rows = [r for r in results if (r["consumers"], r["delay_ms"]) == (consumers, delay)]
        redis_rows = [{"cores": r["redis"].get("avg_cores", r["redis"]["proc_cores"]),
                       "throttled": r["redis"].get("throttled_pct")} for r in rows]
        efficiency = f"{row['efficiency']:.3f}" if row["efficiency"] is not None else "-"
        print(f"{consumers:>9} {delay:>5} {' / '.join(map(str, row['rates'])):>24} {row['median']:>7} "
              f"{efficiency:>10} {_median_of(rows, 'consumer_cores'):>9} {_median_of(rows, 'cache_cores'):>7} "
              f"{_median_of(redis_rows, 'cores'):>6} {_median_of(redis_rows, 'throttled', 1):>6} "
              f"{_median_of(rows, 'redis_fcalls_per_payment', 4):>8} "
              f"{_median_of(rows, 'redis_commands_per_payment', 1):>9} "
              f"{'yes' if all(r['exactly_once'] for r in rows) else 'NO':>7}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"drain-redis-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"-> {path.relative_to(REPO)}")
    if not all(r["exactly_once"] for r in results):
        raise SystemExit("FAILED: the ledger and the processor disagree")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=STORES, default="memory",
                        help="memory (default): one cache and one consumer; redis: N nodes over one Redis")
    parser.add_argument("--payments", type=int, help="the backlog (default: 10,000; 20,000 with --store redis)")
    parser.add_argument("--delays", help="default processor delays (ms), comma-separated "
                                         "(default: 0,10,20; 0 with --store redis)")
    parser.add_argument("--consumers", help="--store redis: consumer counts, comma-separated (default 1,2,4; "
                                            "one node per consumer: a cache front and the consumer)")
    parser.add_argument("--runs", type=int, default=1, help="runs per delay (and consumer count)")
    parser.add_argument("--no-limits", dest="limits", action="store_false")
    parser.add_argument("--run-dir", default="/tmp/rinha-drain")
    add_isolation_options(parser)
    parser.add_argument("--timeout", type=float, default=120, help="seconds a drain may take")
    args = parser.parse_args()
    args.payments = args.payments or DEFAULTS[args.store]["payments"]
    args.delays = args.delays or DEFAULTS[args.store]["delays"]
    if args.consumers and args.store != "redis":
        parser.error("--consumers needs --store redis (memory mode runs one cache and one consumer)")
    args.consumers = args.consumers or "1,2,4"
    limits = args.limits and cgroups_available()
    if args.limits and not limits:
        print("cgroup v1 is not writable here: running without limits")
    if args.store == "redis":
        main_redis(args, limits)
        return
    results = []
    for delay in (int(d) for d in args.delays.split(",")):
        for _ in range(args.runs):
            result = drain_once(args.payments, delay, limits, Path(args.run_dir), args.standin_ports,
                                args.cgroup_parent, args.timeout)
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
