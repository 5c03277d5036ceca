import socket
from pathlib import Path

import pytest

from tools.cgroups import ResourceLimit
from tools.stack import Stack, StackConfig, StackError, split_name


def test_a_second_stack_on_taken_ports_refuses_to_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stack = Stack(StackConfig(run_dir=tmp_path, port=port, default_url="http://127.0.0.1:1",
                                  fallback_url="http://127.0.0.1:2"))
        with pytest.raises(StackError, match=f"port\\(s\\) {port} already in use"):
            stack.start()
        assert stack.procs == {}


def test_node_one_keeps_the_single_node_names_and_places(tmp_path: Path) -> None:
    stack = Stack(StackConfig(run_dir=tmp_path, port=9997, store="redis", nodes=2))
    assert stack.node_services(1) == ["cache", "api1", "api2", "consumer", "nginx"]
    assert stack.node_services(2) == ["n2.cache", "n2.api1", "n2.api2", "n2.consumer", "n2.nginx"]
    assert split_name("n1.cache") == (1, "cache") and split_name("redis") == (1, "redis")
    assert stack.socket("cache") == tmp_path / "cache.sock"
    assert stack.socket("n2.api1") == tmp_path / "n2" / "api1.sock"
    assert stack.config.base_urls == ["http://127.0.0.1:9997", "http://127.0.0.1:9996"]
    env = stack.service_env("n2.cache")
    assert env["CACHE_ADDRESS"] == f"unix:{tmp_path}/n2/cache.sock"
    assert (env["CACHE_STORE"], env["REDIS_URL"]) == ("redis", f"unix://{tmp_path}/redis/redis.sock")
    assert stack.service_env("n2.api2")["API_SPOOL_DIR"] == str(tmp_path / "n2" / "spool" / "api2")


def test_memory_mode_runs_one_node_only(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="memory mode runs exactly one node"):
        StackConfig(run_dir=tmp_path, nodes=2)
    with pytest.raises(StackError, match="store must be one of"):
        StackConfig(run_dir=tmp_path, store="postgres")


def test_a_node_landing_on_a_stand_in_port_refuses_to_start(tmp_path: Path) -> None:
    stack = Stack(StackConfig(run_dir=tmp_path, port=8003, default_port=8001, fallback_port=8002,
                              store="redis", nodes=3))  # nodes 2 and 3 on 8002 and 8001
    with pytest.raises(StackError, match="port\\(s\\) 8001, 8002 would be used twice"):
        stack.start()
    assert stack.procs == {}


def test_limits_go_by_name_under_the_configured_cgroup_parent(tmp_path: Path) -> None:
    limit = ResourceLimit(0.5, 256 * 1024**2)
    stack = Stack(StackConfig(run_dir=tmp_path, store="redis", nodes=2, cgroup_parent="helper",
                              limits={"redis": limit, "n2.consumer": limit}))
    assert stack.cgroups["redis"].dirs["cpu"] == Path("/sys/fs/cgroup/cpu/helper/redis")
    assert stack.cgroups["n2.consumer"].dirs["memory"] == Path("/sys/fs/cgroup/memory/helper/n2.consumer")
    assert Stack(StackConfig(run_dir=tmp_path, limits={"cache": limit})).cgroups["cache"].dirs["cpu"].parent.name \
        == "rinha"


def test_every_service_is_told_where_the_supervisor_counts_restarts(tmp_path: Path) -> None:
    stack = Stack(StackConfig(run_dir=tmp_path, store="redis", nodes=2))
    assert stack.supervisor_status == tmp_path / "supervisor.json"
    for name in ("cache", "api1", "consumer", "n2.api2"):
        assert stack.service_env(name)["SUPERVISOR_STATUS"] == str(tmp_path / "supervisor.json")
