"""The drain's arithmetic in Redis mode: calls per payment net of its own
reads, and the scaling efficiency."""

from loadtest.drain import SUMMARY_COMMANDS, node_limits, redis_calls, scaling


def test_redis_calls_leave_out_the_drains_own_polls_and_info() -> None:
    before = {"fcall": 100, "hincrby": 1000, "info": 5}
    after = {"fcall": 100 + 40 + 10, "hincrby": 1000 + 960, "hmget": 40, "info": 6, "ping": 1}
    # 10 polls: 10 FCALL rinha_totals, each with its 4 HMGETs
    assert redis_calls(before, after, polls=10) == {
        "fcalls": 40, "commands": 50 + 960 + 40 + 1 - 10 * SUMMARY_COMMANDS}


def test_scaling_efficiency_is_the_rate_over_n_times_the_one_consumer_rate() -> None:
    results = [{"consumers": n, "delay_ms": 0, "per_second": rate}
               for n, rate in [(1, 1000), (1, 1100), (2, 1800), (4, 2000), (1, 900)]]
    table = scaling(results)
    assert table[(1, 0)] == {"rates": [1000, 1100, 900], "median": 1000, "efficiency": 1.0}
    assert table[(2, 0)]["efficiency"] == 0.9
    assert table[(4, 0)]["efficiency"] == 0.5
    assert scaling([{"consumers": 2, "delay_ms": 0, "per_second": 5}])[(2, 0)]["efficiency"] is None


def test_every_node_has_its_own_front_and_consumer_limits_and_redis_one() -> None:
    limits = node_limits(2)
    assert sorted(limits) == ["cache", "consumer", "n2.cache", "n2.consumer", "redis"]
    assert (limits["n2.cache"].cpus, limits["n2.consumer"].cpus) == (0.25, 0.45)
    assert (limits["redis"].cpus, limits["redis"].memory_bytes) == (0.5, 256 * 1024**2)
