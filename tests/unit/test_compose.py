"""The deployment rules of docs/contract.md §1, checked on docker-compose.yml (no
Docker engine runs here)."""

import fnmatch
import tomllib
from pathlib import Path, PurePosixPath

import dockerfile_reader
import nginx_config
import pytest
import yaml
from nginx_config import Directive

from services.api.__main__ import default_payments_listen
from tools.cgroups import Cgroup, ResourceLimit, compose_limits, parse_cpuset, parse_memory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def nginx() -> Directive:
    return nginx_config.load(REPO / "nginx.conf")


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

    cgroup = Cgroup("t", ResourceLimit(0.5, 1 << 20, cpuset=frozenset({0})))
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


def upstream_servers(http: Directive) -> dict[str, list[str]]:
    """Each upstream block's name, to the addresses of its servers."""
    return {upstream.args[0]: [server.args[0] for server in upstream.all("server")]
            for upstream in http.all("upstream")}


def proxied_locations(nginx: Directive) -> dict[tuple[str, ...], tuple[list[Directive], str]]:
    """Each location that proxies to an upstream (``proxy_pass http://NAME``), to
    the blocks it sits in (outermost first, itself last) and the upstream's name."""
    found = {}
    for path, location in nginx.walk():
        proxy_pass = location.value("proxy_pass") if location.name == "location" else None
        if proxy_pass:
            (target,) = proxy_pass
            assert target.startswith("http://"), target
            found[location.args] = ([*path, location], target.removeprefix("http://").rstrip("/"))
    return found


def test_two_api_instances_behind_nginx(compose: dict, nginx: Directive) -> None:
    """POST /payments goes to every api's payments lane, everything else to
    every api's aiohttp server, each over kept-alive connections; nothing is
    logged per request."""
    apis = [s for s in compose["services"].values() if "services.api" in " ".join(s.get("command", []))]
    assert len(apis) >= 2
    listens = [api["environment"]["API_LISTEN"] for api in apis]
    upstreams = upstream_servers(nginx.one("http"))
    routes = proxied_locations(nginx)
    _, lanes = routes[("=", "/payments")]
    _, aiohttp = routes[("/",)]
    assert sorted(upstreams[lanes]) == sorted(default_payments_listen(listen) for listen in listens)
    assert sorted(upstreams[aiohttp]) == sorted(listens)
    assert {name for _, name in routes.values()} == set(upstreams)  # no upstream left unused
    for where, (blocks, name) in routes.items():
        # An upstream's keepalive is void unless nginx speaks HTTP/1.1 to it
        # and drops the client's "Connection" header (nginx sends "close").
        keepalive = nginx.one("http").one("upstream", name).value("keepalive")
        assert keepalive and int(keepalive[0]) >= (256 if name == lanes else 1), (name, keepalive)
        assert nginx_config.effective(blocks, "proxy_http_version") == [("1.1",)], where
        headers = dict(nginx_config.effective(blocks, "proxy_set_header"))
        assert headers.get("Connection") == "", where
    for path, location in nginx.walk():
        if location.name == "location":
            assert nginx_config.effective([*path, location], "access_log") == [("off",)], location.args


def test_consumer_reaches_processors_on_the_external_network(compose: dict) -> None:
    consumer = compose["services"]["consumer"]
    assert "payment-processor" in consumer["networks"]
    assert compose["networks"]["payment-processor"]["external"] is True
    env = consumer["environment"]
    assert env["PROCESSOR_DEFAULT_URL"] == "http://payment-processor-default:8080"
    assert env["PROCESSOR_FALLBACK_URL"] == "http://payment-processor-fallback:8080"


def pip_install_targets(argv: list[str]) -> list[str] | None:
    """What a ``pip install`` (or ``python -m pip install``) command installs; None for any other command."""
    if argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        argv = argv[2:]
    if not argv or PurePosixPath(argv[0]).name not in ("pip", "pip3") or argv[1:2] != ["install"]:
        return None
    return [word for word in argv[2:] if not word.startswith("-")]


def test_services_run_from_the_built_image(compose: dict) -> None:
    """The image pip-installs this project: a RUN installs the directory that
    the COPYs before it filled with pyproject.toml and every package the
    project declares; the services are built from that image."""
    found = dockerfile_reader.instructions((REPO / "Dockerfile").read_text())
    installs = [(index, PurePosixPath(target)) for index, instruction in enumerate(found)
                if instruction.keyword == "RUN"
                for argv, _ in dockerfile_reader.shell_commands(instruction.value)
                for target in pip_install_targets(argv) or []]
    assert installs, "no RUN pip-installs anything"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {path.name for path in REPO.iterdir() if (path / "__init__.py").is_file()
                and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)}
    assert packages >= {"services"}, packages
    installed = []
    for index, target in installs:
        directory = dockerfile_reader.workdir_at(found, index) / target
        copied = dockerfile_reader.copied_before(found, index, REPO)
        if copied.get(directory / "pyproject.toml") == REPO / "pyproject.toml":
            installed.append(directory)
            for package in packages:
                assert copied.get(directory / package) == REPO / package, f"{package} is not in the image"
    assert installed, f"pip installs {[str(target) for _, target in installs]}, none of them this project"
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


# ---- health, start order and stopping (issue 18) --------------------------------

ROLES = {"nginx": "nginx", "api1": "api", "api2": "api", "cache": "cache", "consumer": "consumer"}


def test_every_service_has_a_healthcheck_and_waits_for_what_it_needs(compose: dict) -> None:
    """The cache first, then the apis and the consumer once it is healthy,
    then nginx once both apis are: compose starts them in that order (and
    stops them in the reverse)."""
    services = compose["services"]
    assert set(services) == set(ROLES)
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and not check.get("disable"), name
        assert "start_interval" not in check, f"{name}: docker-compose 1.29 (make compose-test) rejects it"
    wanted = {"nginx": {"api1", "api2"}, "api1": {"cache"}, "api2": {"cache"}, "consumer": {"cache"}, "cache": set()}
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert set(depends) == wanted[name], name
        assert all(spec == {"condition": "service_healthy"} for spec in depends.values()), name


def test_the_checks_are_the_scaled_out_files_checks(compose: dict) -> None:
    """Same role, same healthcheck as docker-compose.redis.yml, whose tests run
    them against stand-in servers (test_compose_redis.py)."""
    scaled = yaml.safe_load((REPO / "docker-compose.redis.yml").read_text())["services"]
    for name, service in compose["services"].items():
        twin = scaled[f"node1-{name}"]
        assert service["healthcheck"] == twin["healthcheck"], name
        if ROLES[name] == "consumer":
            assert service["environment"]["CONSUMER_HEALTH_LISTEN"] == twin["environment"]["CONSUMER_HEALTH_LISTEN"]


def test_grace_periods_match_the_drain_times(compose: dict) -> None:
    """SIGTERM to SIGKILL: an api ships its spool to the cache, the cache
    flushes its journal, the consumer ends or hands back its jobs (each within
    its 30 s job timeout), nginx closes its connections."""
    grace = {name: service["stop_grace_period"] for name, service in compose["services"].items()}
    assert grace == {"nginx": "5s", "api1": "15s", "api2": "15s", "cache": "10s", "consumer": "40s"}


# ---- what make compose-test brings up (tools/compose_check.py) ----------------------

def test_every_public_image_has_a_local_stand_in_for_make_compose_test() -> None:
    """No registry is reachable in CI: each image the Dockerfile or a compose
    file names is built from tools/images/ by the compose test."""
    from tools.compose_check import IMAGES, STAND_IN_IMAGES, compose_files, needed_images

    assert {path.name for path in compose_files()} >= {"docker-compose.yml", "docker-compose.redis.yml"}
    assert needed_images(compose_files()) <= set(STAND_IN_IMAGES)
    for directory in STAND_IN_IMAGES.values():
        assert (IMAGES / directory / "Dockerfile").is_file(), directory


def test_the_test_override_touches_only_the_build_network_and_nofile(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The production files are brought up as they are; the generated override
    only builds on the host's network and lowers nginx's nofile limit to what
    the machine's dockerd may grant."""
    from tools import compose_check

    monkeypatch.setattr(compose_check, "WORK", tmp_path)
    monkeypatch.setattr(compose_check, "nofile_hard_limit", lambda: 20000)
    for path in compose_check.compose_files():
        stack = compose_check.Stack(path)
        stack.write_override()
        override = yaml.safe_load(stack.override.read_text())["services"]
        for name, service in override.items():
            assert set(service) <= {"build", "ulimits"}, name
            if "build" in service:
                assert service["build"] == {"context": str(REPO), "network": "host"}, name
            if "ulimits" in service:
                assert service["ulimits"] == {"nofile": {"soft": 20000, "hard": 20000}}, name
                assert stack.services[name]["image"].startswith("nginx:"), name
        built = {name for name, service in stack.services.items() if "build" in service}
        assert {name for name, service in override.items() if "build" in service} == built


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.redis.yml"])
def test_every_api_and_consumer_has_a_name_of_its_own_in_metrics(name: str) -> None:
    """Reports are kept per instance name (in Redis for a cluster): two apis
    under one name would overwrite each other's counters, which Prometheus
    would read as restarts."""
    services = yaml.safe_load((REPO / name).read_text())["services"]
    names = [service["environment"][variable] for service in services.values()
             for variable in ("API_INSTANCE", "CONSUMER_INSTANCE") if variable in service.get("environment", {})]
    expected = [key for key, service in services.items()
                if service.get("command", [""])[-1] in ("services.api", "services.consumer")]
    assert len(names) == len(expected) and len(set(names)) == len(names), names
