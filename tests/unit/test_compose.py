"""The deployment rules of CONTRACT.md §1, checked on docker-compose.yml (no
Docker engine runs here)."""

from pathlib import Path

import pytest
import yaml

from services.api.__main__ import default_payments_listen
from tools.cgroups import Cgroup, Limit, compose_limits, parse_cpuset, parse_memory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_every_service_declares_limits_within_the_budget(compose: dict) -> None:
    limits = compose_limits(REPO / "docker-compose.yml")
    assert set(limits) == set(compose["services"])
    assert sum(limit.cpus for limit in limits.values()) <= 1.5 + 1e-9
    assert sum(limit.memory_bytes for limit in limits.values()) <= 350 * 1024**2


def test_memory_units_follow_docker() -> None:
    assert parse_memory("20MB") == parse_memory("20m") == 20 * 1024**2
    assert parse_memory("1g") == 1024**3
    with pytest.raises(ValueError):
        parse_memory("lots")


def test_cpusets_follow_docker() -> None:
    assert parse_cpuset("0") == {0}
    assert parse_cpuset("0,2") == {0, 2}
    assert parse_cpuset("1-3") == {1, 2, 3}
    for bad in ("", "a", "1-x", "-1"):
        with pytest.raises(ValueError):
            parse_cpuset(bad)


def test_a_cpuset_becomes_the_affinity_of_what_runs_in_the_cgroup(tmp_path: Path) -> None:
    """The bench applies compose's cpuset as CPU affinity (Cgroup.enter, as a
    Popen preexec_fn); shown here without touching /sys (the cgroup writes are
    redirected to a temporary directory)."""
    import os
    import subprocess
    import sys

    cgroup = Cgroup("t", Limit(0.5, 1 << 20, cpuset=frozenset({0})))
    cgroup.dirs = {name: tmp_path / name for name in cgroup.dirs}
    for directory in cgroup.dirs.values():
        directory.mkdir()
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         preexec_fn=cgroup.enter, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[0]"
    assert (tmp_path / "cpu" / "cgroup.procs").read_text().isdigit()
    assert os.sched_getaffinity(0) != {0} or os.cpu_count() == 1  # the parent is untouched


def test_only_nginx_publishes_and_only_9999(compose: dict) -> None:
    published = {name: s.get("ports") for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"nginx": ["9999:9999"]}


def test_no_host_network_privileged_or_replicas(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        assert not service.get("privileged"), name
        assert "replicas" not in service.get("deploy", {}), name


def test_two_api_instances_behind_nginx(compose: dict) -> None:
    apis = [s for s in compose["services"].values() if "services.api" in " ".join(s.get("command", []))]
    assert len(apis) >= 2
    nginx = (REPO / "nginx.conf").read_text()
    assert nginx.count("server unix:/run/rinha/api") == 2 * len(apis)  # each: lane + aiohttp
    for api in apis:
        listen = api["environment"]["API_LISTEN"]
        assert f"server {listen} " in nginx
        assert f"server {default_payments_listen(listen)} " in nginx
    assert "access_log off" in nginx and "keepalive 256" in nginx


def test_consumer_reaches_processors_on_the_external_network(compose: dict) -> None:
    consumer = compose["services"]["consumer"]
    assert "payment-processor" in consumer["networks"]
    assert compose["networks"]["payment-processor"]["external"] is True
    env = consumer["environment"]
    assert env["PROCESSOR_DEFAULT_URL"] == "http://payment-processor-default:8080"
    assert env["PROCESSOR_FALLBACK_URL"] == "http://payment-processor-fallback:8080"


def test_services_run_from_the_built_image(compose: dict) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install ." in dockerfile
    for name in ("api1", "api2", "cache", "consumer"):
        assert compose["services"][name]["build"] == "."


def test_the_backend_never_uses_admin_endpoints_or_tokens() -> None:
    for path in (REPO / "services").rglob("*.py"):
        text = path.read_text()
        assert "X-Rinha-Token" not in text and "/admin/" not in text, path


def test_every_service_restarts_unless_stopped(compose: dict) -> None:
    """A dead service comes back by itself (``make run``'s Supervisor does the
    same locally); read after YAML merges, as compose applies ``<<: *service``."""
    assert compose["services"]
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
