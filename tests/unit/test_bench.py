"""The benchmark's verdicts: a run's p99 against the floors beside it."""

import http.server
import threading
import time

import pytest

from loadtest.bench import (
    Scraper,
    cpu_jiffies,
    floor_ratio,
    interleave_plan,
    parse_variant,
    series_floor_ratios,
    steal_pct,
    variant_summary,
    variants_ratio,
    violations,
)

CLEAN = {"inconsistencies": 0, "lag": 0, "failed_posts": 0, "default_share": 1.0}


def test_the_ratio_is_to_the_mean_of_the_floors_before_and_after() -> None:
    assert floor_ratio(2.0, 0.9, 1.1) == 2.0
    assert floor_ratio(2.16, 1.04, 1.04) == 2.08


def test_a_clean_run_has_no_violations_without_a_ratio_limit() -> None:
    assert violations({**CLEAN, "p99_over_floor": 3.5}) == []


def test_a_run_above_the_ratio_limit_is_a_violation() -> None:
    assert violations({**CLEAN, "p99_over_floor": 2.01}, max_ratio=2.0) == ["p99 2.01 x floor > 2.0"]
    assert violations({**CLEAN, "p99_over_floor": 2.0}, max_ratio=2.0) == []


def test_every_correctness_miss_is_named() -> None:
    bad = {"inconsistencies": 3, "lag": 1, "failed_posts": 2, "default_share": 0.98}
    assert violations(bad) == ["3 inconsistencies", "lag 1", "2 failed POSTs", "default share 0.9800 < 0.99"]


def test_the_series_ratio_divides_every_run_by_the_median_floor() -> None:
    floor, ratios = series_floor_ratios([2.39, 2.45, 2.41], [0.90, 1.61, 1.25, 1.10])
    assert floor == 1.175
    assert ratios == [2.03, 2.09, 2.05]
    # Series I (session 8): the median of 1.36, 1.31, 1.71, 1.82 printed as 1.5350000000000001
    assert series_floor_ratios([2.97], [1.36, 1.31, 1.71, 1.82]) == (1.535, [1.93])


STAT = """cpu  718 0 710 66788 53 0 9 10 5 0
cpu0 187 0 317 33610 4 0 3 3 0 0
intr 1 2 3
"""


def test_cpu_jiffies_reads_steal_and_the_total_without_counting_guest_time_twice() -> None:
    # guest time (the 9th field) is already inside user: it must not be added again
    assert cpu_jiffies(STAT) == (10, 718 + 710 + 66788 + 53 + 9 + 10)


def test_steal_pct_is_the_share_of_machine_time_taken_by_the_host() -> None:
    assert steal_pct((10, 1000), (60, 3000)) == 2.5
    assert steal_pct((10, 1000), (10, 1000)) == 0.0  # no time passed: no division by zero


def test_host_steal_in_a_run_or_either_floor_beside_it_is_a_violation() -> None:
    # Series H (docs/benchmarks-history.md, session 8): run 2 "passed" at 0.57 x floor only
    # because the floor after it lost 7.89% of the machine to the host.
    run = {**CLEAN, "p99_over_floor": 0.57, "steal_pct": 0.03,
           "floor_before_steal_pct": 0.04, "floor_after_steal_pct": 7.89}
    assert violations(run, max_ratio=2.0, max_steal=1.0) == [
        "host steal 7.89% > 1.0%: the host, not the stack, set this run's tail"]
    assert violations({**CLEAN, "steal_pct": 1.5}, max_steal=1.0) != []
    assert violations({**CLEAN, "steal_pct": 1.0}, max_steal=1.0) == []
    assert violations(run, max_ratio=2.0) == []  # max_steal 0: off


def test_an_interleaved_series_alternates_the_variants_run_by_run() -> None:
    assert interleave_plan(["memory", "redis"], 3) == ["memory", "redis"] * 3
    assert interleave_plan(["memory"], 2) == ["memory", "memory"]


def run(p99: float, ratio: float, **extra: object) -> dict:
    return {**CLEAN, "p99_ms": p99, "p99_over_floor": ratio, "net": 380_000.0, "stack_avg_cores": 0.08,
            "stack_peak_rss_mb": 190.0, "steal_pct": 0.01, "resources": {}, **extra}


def test_a_variant_summary_takes_the_median_of_each_figure_and_the_worst_correctness_miss() -> None:
    runs = [run(1.2, 1.7), run(1.4, 2.1, lag=3), run(1.1, 1.6)]
    summary = variant_summary(runs, series_floor_ms=0.7)
    assert summary["runs"] == 3
    assert (summary["median_p99_ms"], summary["median_p99_over_floor"]) == (1.2, 1.7)
    assert summary["p99_over_series_floor"] == [1.71, 2.0, 1.57]
    assert (summary["median_lag"], summary["max_lag"]) == (0, 3)
    assert "redis_peak_rss_mb" not in summary and "stack_peak_cgroup_mb" not in summary


def test_redis_counts_in_its_variant_summary_like_a_service() -> None:
    redis = {"redis": {"peak_rss_mb": 12.0, "avg_cores": 0.02}}
    summary = variant_summary([run(1.5, 2.0, resources=redis), run(1.7, 2.2, resources=redis)])
    assert (summary["median_redis_peak_rss_mb"], summary["median_redis_avg_cores"]) == (12.0, 0.02)


def test_the_comparison_is_the_second_variants_median_floor_ratio_over_the_firsts() -> None:
    memory = variant_summary([run(1.2, 1.7), run(1.3, 1.8), run(1.1, 1.6)])
    redis = variant_summary([run(1.8, 3.4), run(1.9, 3.6), run(1.7, 3.2)])
    assert variants_ratio(memory, redis) == {"median_p99_ratio": 1.5, "median_floor_ratio_ratio": 2.0}


def test_a_variant_is_a_store_optionally_scraped() -> None:
    assert parse_variant("memory") == ("memory", False)
    assert parse_variant("redis+scraped") == ("redis", True)
    for wrong in ("mongo", "memory+", "memory+watched"):
        with pytest.raises(ValueError):
            parse_variant(wrong)


def test_the_scraper_gets_the_url_every_interval_and_counts_failures() -> None:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the stdlib's name
            hits.append(self.path)
            self.send_response(200 if len(hits) % 2 else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scraper = Scraper(f"http://127.0.0.1:{server.server_port}/metrics", every=0.05)
        scraper.start()
        time.sleep(0.5)
        figures = scraper.stop()
    finally:
        server.shutdown()
    assert set(hits) == {"/metrics"}
    assert 4 <= len(hits) <= 11  # every 50 ms for 0.5 s, not as fast as it can
    assert figures["scrapes"] + figures["failures"] == len(hits)
    assert figures["failures"] == len(hits) // 2  # every second answer was a 503
    assert figures["median_ms"] is not None and figures["max_ms"] >= figures["median_ms"]
