"""The scaled-out deployment, docker-compose.redis.yml: nodes (nginx, two apis,
a cache front, a consumer) over one shared Redis. Checked as the structure
compose acts on, read with the services' own settings parsers, and with the
healthchecks (the probe CLI) run against stand-in servers (no Docker engine runs
here; make compose-test brings the file up for real)."""

from __future__ import annotations

import os
import re
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import dockerfile_reader
import grpc
import nginx_config
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.api.__main__ import ApiSettings, default_payments_listen
from services.cache.__main__ import CacheSettings
from services.cache.health import READINESS
from services.consumer.__main__ import ConsumerSettings
from services.orch import OrchestratorLimits
from tools.cgroups import compose_limits

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.redis.yml"
NODE_SERVICE = re.compile(r"(node\d+)-(nginx|api\d+|cache|consumer)")
SOCKETS = "/run/rinha"
REDIS_DATA_DIR = "/data"  # the redis image's working directory, where its AOF goes
SETTINGS: dict[str, type[ApiSettings] | type[CacheSettings] | type[ConsumerSettings]] = {
    "api": ApiSettings, "cache": CacheSettings, "consumer": ConsumerSettings}


# ---- reading the file as compose does ----------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    """Each dependency and its condition (the short list form waits for start only)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found.append((volume.get("source", ""), volume["target"], bool(volume.get("read_only"))))
            continue
        parts = volume.split(":")
        if len(parts) == 1:  # an anonymous volume
            found.append(("", parts[0], False))
        else:
            found.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return found


def is_named(source: str) -> bool:
    return bool(source) and not source.startswith((".", "/", "~"))


def mounted_at(service: dict, target: str) -> list[str]:
    return [source for source, where, _ in mounts(service) if where.rstrip("/") == target.rstrip("/")]


def role(service: dict) -> str:
    """redis, nginx, or the module a built-image service runs (api, cache, consumer)."""
    image = service.get("image", "")
    if image.startswith("redis:"):
        return "redis"
    if image.startswith("nginx:"):
        return "nginx"
    command = service.get("command", [])
    if isinstance(command, str):
        command = command.split()
    match = re.fullmatch(r"python -m services\.(\w+)", " ".join(command))
    assert match, f"unrecognised service: {service}"
    return match.group(1)


def nodes(services: dict[str, dict]) -> dict[str, dict[str, str]]:
    """node -> {service name: role}."""
    grouped: dict[str, dict[str, str]] = {}
    for name, service in services.items():
        match = NODE_SERVICE.fullmatch(name)
        if match:
            grouped.setdefault(match.group(1), {})[name] = role(service)
    return grouped


def of_role(services: dict[str, dict], wanted: str) -> dict[str, dict]:
    return {name: s for name, s in services.items() if role(s) == wanted}


def seconds(duration: str) -> float:
    """Compose durations: 1m30s, 40s, 500ms, 1h."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(duration))
    assert parts and "".join(n + u for n, u in parts) == str(duration), duration
    return sum(float(n) * units[u] for n, u in parts)


_SUBSTITUTION = re.compile(r"\$(?:(?P<escaped>\$)"
                           r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                           r"|(?P<named>[A-Za-z_]\w*)|(?P<invalid>))")


def interpolate(text: str, env: dict[str, str], *, strict: bool = False) -> str:
    """Compose's variable substitution (${VAR}, ${VAR:-default}, $$, ...);
    ValueError where compose would refuse the file, and with ``strict`` where
    it would warn that a variable without a default is not set."""
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("invalid") is not None:
            raise ValueError(f"invalid '$' in {text!r} (write $$ for a literal one)")
        name = match.group("braced") or match.group("named")
        op, arg, value = match.group("op"), match.group("arg"), env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset or value is None else value
        if op in ("?", ":?"):
            if unset or value is None:
                raise ValueError(f"{name} is required: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if unset else arg
        if value is None and strict:
            raise ValueError(f"{name} in {text!r} is not set and has no default")
        return value or ""
    return _SUBSTITUTION.sub(substitute, text)


def strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


@contextmanager
def service_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[None]:
    """Exactly the service's environment, as the settings parsers read it."""
    with monkeypatch.context() as patch:
        for key in list(os.environ):
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        yield


# ---- what every service declares ---------------------------------------------

def test_every_service_declares_limits_a_healthcheck_and_a_grace_period(services: dict) -> None:
    limits = compose_limits(COMPOSE_FILE)
    assert set(limits) == set(services)
    for name, service in services.items():
        assert limits[name].cpus > 0 and limits[name].memory_bytes > 0, name
        check = service.get("healthcheck") or {}
        assert not check.get("disable"), name
        test = check.get("test")
        assert test and test != ["NONE"], name
        assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL"), name
        assert seconds(check["timeout"]) < seconds(check["interval"]), name
        assert seconds(service["stop_grace_period"]) > 0, name


def test_the_stated_per_node_limits_are_the_real_ones(services: dict) -> None:
    """Every node is a copy (same limits per role), and the top comment's sum
    is what a node declares."""
    limits = compose_limits(COMPOSE_FILE)
    sums = {node: (sum(limits[name].cpus for name in members),
                   sum(limits[name].memory_bytes for name in members))
            for node, members in nodes(services).items()}
    assert len(set(sums.values())) == 1, sums
    cpus, memory = next(iter(sums.values()))
    stated = re.search(r"a node sums to ([\d.]+) CPU and (\d+) MB", COMPOSE_FILE.read_text())
    assert stated, "the top comment states what a node sums to"
    assert float(stated.group(1)) == pytest.approx(cpus)
    assert int(stated.group(2)) * 1024**2 == memory


def test_one_redis_and_complete_nodes(services: dict) -> None:
    assert len(of_role(services, "redis")) == 1
    grouped = nodes(services)
    assert len(grouped) >= 2
    for node, members in grouped.items():
        roles = sorted(members.values())
        assert roles == ["api", "api", "cache", "consumer", "nginx"], (node, roles)
    in_a_node = {name for members in grouped.values() for name in members}
    assert in_a_node | set(of_role(services, "redis")) == set(services)


def test_the_services_accept_their_configuration(services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each built-image service's environment passes its own start-up
    validation (a bad value would stop it with exit status 2)."""
    for name, service in services.items():
        if role(service) in SETTINGS:
            assert service["build"] == ".", name
            with service_env(monkeypatch, environment(service)):
                SETTINGS[role(service)].from_env()


# ---- the shared Redis --------------------------------------------------------

def test_cache_fronts_use_the_shared_redis_once_it_is_healthy(services: dict,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (redis_name,) = of_role(services, "redis")
    fronts = of_role(services, "cache")
    assert len(fronts) == len(nodes(services))
    for name, front in fronts.items():
        with service_env(monkeypatch, environment(front)):
            settings = CacheSettings.from_env()
        assert settings.store == "redis", name
        url = urlsplit(settings.redis_url)
        assert url.scheme == "redis" and url.hostname == redis_name, (name, settings.redis_url)
        assert (url.port or 6379) == 6379, name
        assert depends_on(front).get(redis_name) == "service_healthy", name
        assert "backend" in front["networks"] and "backend" in services[redis_name]["networks"]


def test_redis_keeps_an_append_only_file_on_a_named_volume(compose: dict, services: dict) -> None:
    (redis,) = of_role(services, "redis").values()
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--save"] == ""  # no RDB snapshots: the AOF is the durability
    assert options["--appendfsync"] == "${REDIS_APPENDFSYNC:-everysec}"
    assert interpolate(options["--appendfsync"], {}) == "everysec"
    assert interpolate(options["--appendfsync"], {"REDIS_APPENDFSYNC": "always"}) == "always"
    (data,) = mounted_at(redis, options.get("--dir", REDIS_DATA_DIR))
    assert is_named(data) and data in compose["volumes"]
    kind, check = redis["healthcheck"]["test"]  # healthy on PONG only: "-LOADING" while the AOF replays
    assert kind == "CMD-SHELL"
    assert dockerfile_reader.shell_commands(interpolate(check, {})) == [(["redis-cli", "ping"], "|"),
                                                                        (["grep", "-q", "PONG"], "")]


# ---- node-local hops ---------------------------------------------------------

def test_each_node_has_a_sockets_volume_of_its_own(compose: dict, services: dict) -> None:
    owners: dict[str, str] = {}
    for node, members in nodes(services).items():
        volumes = {name: mounted_at(services[name], SOCKETS) for name in members}
        assert all(len(found) == 1 for found in volumes.values()), volumes
        (volume,) = {found[0] for found in volumes.values()}
        assert is_named(volume) and volume in compose["volumes"], volume
        assert owners.setdefault(volume, node) == node, f"{volume} shared by {owners[volume]} and {node}"
        for name in members:  # every unix address a node's service uses is on that volume
            for key in ("CACHE_ADDRESS", "API_LISTEN", "API_PAYMENTS_LISTEN", "CONSUMER_HEALTH_LISTEN"):
                address = environment(services[name]).get(key)
                if address is not None:
                    assert address.startswith(f"unix:{SOCKETS}/"), (name, key, address)
    for name, service in of_role(services, "redis").items():
        assert not set(owners) & {source for source, _, _ in mounts(service)}, name


def test_no_two_apis_share_a_spool_volume(compose: dict, services: dict,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spools: dict[str, str] = {}
    for name, api in of_role(services, "api").items():
        with service_env(monkeypatch, environment(api)):
            spool_dir = str(ApiSettings.from_env().spool_dir)
        (volume,) = mounted_at(api, spool_dir)
        assert is_named(volume) and volume in compose["volumes"], name
        assert volume not in spools, f"{name} and {spools.get(volume)} share {volume}"
        spools[volume] = name
    for name, service in services.items():  # nor does any other service mount one
        for source, _, _ in mounts(service):
            assert spools.get(source, name) == name, f"{name} mounts {spools[source]}'s spool"


def test_every_nginx_fronts_its_own_node_on_a_distinct_port(services: dict) -> None:
    http = nginx_config.load(REPO / "nginx.conf").one("http")
    (server,) = http.all("server")
    listen = (server.value("listen") or ("",))[0].rpartition(":")[2]  # "9999" or "address:9999"
    assert listen.isdigit(), server.value("listen")
    upstreams = {address.args[0] for upstream in http.all("upstream") for address in upstream.all("server")}
    host_ports = []
    for node, members in nodes(services).items():
        (nginx_name,) = [name for name, r in members.items() if r == "nginx"]
        nginx = services[nginx_name]
        (published,) = nginx["ports"]
        host, _, container = str(published).rpartition(":")
        assert container == listen, nginx_name
        host_ports.append(host)
        conf_mounts = [(s, ro) for s, target, ro in mounts(nginx) if target == "/etc/nginx/nginx.conf"]
        assert len(conf_mounts) == 1, nginx_name
        source, read_only = conf_mounts[0]
        assert (COMPOSE_FILE.parent / source).resolve() == REPO / "nginx.conf" and read_only
        listens = {environment(services[name])["API_LISTEN"] for name, r in members.items() if r == "api"}
        assert upstreams == listens | {default_payments_listen(address) for address in listens}, node
        assert set(depends_on(nginx)) == {name for name, r in members.items() if r == "api"}
        kind, *argv = nginx["healthcheck"]["test"]  # through this nginx's own port to an api
        assert kind == "CMD" and argv[0] == "wget", nginx_name
        (url,) = [urlsplit(word) for word in argv if word.startswith("http://")]
        assert (url.hostname, url.port, url.path) == ("127.0.0.1", int(listen), "/health"), nginx_name
    assert len(host_ports) == len(set(host_ports))
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {name for name, s in services.items() if role(s) == "nginx"}


# ---- start order and compose-level validity -----------------------------------

def test_dependents_wait_for_what_they_need_to_be_healthy(services: dict) -> None:
    (redis_name,) = of_role(services, "redis")
    for node, members in nodes(services).items():
        cache = f"{node}-cache"
        assert members[cache] == "cache"
        for name, r in members.items():
            deps = depends_on(services[name])
            if r in ("api", "consumer"):
                assert deps == {cache: "service_healthy"}, name
            elif r == "nginx":
                assert deps and set(deps.values()) == {"service_healthy"}, name
            assert set(deps) <= set(members) | {redis_name}, f"{name} depends on another node"
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            assert target in services, f"{name} depends on undefined {target}"
            assert condition in ("service_started", "service_healthy", "service_completed_successfully")
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), target
    remaining = {name: set(depends_on(s)) for name, s in services.items()}
    while remaining:  # no cycle: something can always start
        ready = {name for name, deps in remaining.items() if not deps}
        assert ready, f"dependency cycle among {sorted(remaining)}"
        remaining = {name: deps - ready for name, deps in remaining.items() if name not in ready}


def test_volumes_and_networks_are_declared_and_used(compose: dict, services: dict) -> None:
    used = {source for s in services.values() for source, _, _ in mounts(s) if is_named(source)}
    assert used == set(compose["volumes"])
    for name, service in services.items():
        for network in service.get("networks", []):
            assert network in compose["networks"], (name, network)
    for name, consumer in of_role(services, "consumer").items():
        assert "payment-processor" in consumer["networks"], name
    assert compose["networks"]["payment-processor"]["external"] is True


def test_every_dollar_is_escaped_or_has_a_default(compose: dict) -> None:
    """The file works with an empty environment: compose neither refuses it
    nor substitutes an unset variable with nothing."""
    for text in strings(compose):
        interpolate(text, {}, strict=True)


def test_no_host_network_privileged_or_replicas(services: dict) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        assert not service.get("privileged"), name
        assert "replicas" not in service.get("deploy", {}), name


def test_the_consumer_has_time_to_drain(services: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM: running jobs end within the job timeout, stragglers are asked to
    hand back within the abandon timeout, then results are reported; all of
    that before compose's SIGKILL."""
    for name, consumer in of_role(services, "consumer").items():
        with service_env(monkeypatch, environment(consumer)):
            limits = ConsumerSettings.from_env().limits
        drain = limits.job_timeout_seconds + OrchestratorLimits().abandon_timeout_seconds
        assert seconds(consumer["stop_grace_period"]) > drain, name


# ---- the healthchecks, run -----------------------------------------------------

@pytest.fixture
def sockets_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rh", dir="/tmp") as directory:  # short: sun_path is 108 bytes
        yield Path(directory)


def run_check(service: dict, sockets_dir: Path) -> int:
    """The service's CMD-SHELL healthcheck, run by sh as Docker runs it (after
    compose's ``$$`` -> ``$``), with the service's environment, /run/rinha
    moved to ``sockets_dir`` and this interpreter's ``python`` first on PATH."""
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and command.startswith("python -m services.common.probe "), command
    env = {key: value.replace(SOCKETS, str(sockets_dir)) for key, value in environment(service).items()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["sh", "-c", interpolate(command, {})], env=env, cwd=REPO,
                          capture_output=True, timeout=30).returncode


@contextmanager
def http_on_unix_socket(path: Path, status: int, paths: list[str] | None = None) -> Iterator[None]:
    """Answers every request with ``status``; ``paths`` collects what was asked."""
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request_line = self.rfile.readline().decode()
            if paths is not None:
                paths.append(request_line.split()[1])
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.wfile.write(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}" % status)

    server = socketserver.UnixStreamServer(str(path), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        path.unlink(missing_ok=True)


@contextmanager
def health_service_on_unix_socket(path: Path, statuses: dict[str, int]) -> Iterator[None]:
    """grpc.health.v1 as the cache serves it, with the given statuses."""
    servicer = health.HealthServicer()
    for service, status in statuses.items():
        servicer.set(service, status)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield
    finally:
        server.stop(0)
        path.unlink(missing_ok=True)


def check_http_readiness(service: dict, name: str, listen_key: str, sockets_dir: Path) -> None:
    """Unhealthy with nothing listening, healthy on a 200 to GET
    /health/ready at the service's own socket, unhealthy on a 503."""
    socket_path = sockets_dir / Path(environment(service)[listen_key].removeprefix("unix:")).name
    assert run_check(service, sockets_dir) != 0, f"{name}: healthy with nothing listening"
    asked: list[str] = []
    with http_on_unix_socket(socket_path, 200, asked):
        assert run_check(service, sockets_dir) == 0, name
    assert asked == ["/health/ready"], (name, asked)
    with http_on_unix_socket(socket_path, 503):
        assert run_check(service, sockets_dir) != 0, f"{name}: healthy on a 503"


def test_the_api_check_is_its_readiness(services: dict, sockets_dir: Path) -> None:
    for name, api in of_role(services, "api").items():
        check_http_readiness(api, name, "API_LISTEN", sockets_dir)


def test_the_consumer_check_is_its_readiness_on_its_health_socket(services: dict, sockets_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, consumer in of_role(services, "consumer").items():
        with service_env(monkeypatch, environment(consumer)):
            listen = ConsumerSettings.from_env().health_listen
        assert listen == environment(consumer)["CONSUMER_HEALTH_LISTEN"], name  # where it really serves
        check_http_readiness(consumer, name, "CONSUMER_HEALTH_LISTEN", sockets_dir)


def test_the_cache_check_is_its_grpc_readiness(services: dict, sockets_dir: Path) -> None:
    """SERVING for "pipeline.v1.Cache" (the store answers), not merely for
    the server as a whole: a front whose Redis is unreachable is unhealthy."""
    name, front = next(iter(of_role(services, "cache").items()))
    assert all(f["healthcheck"]["test"] == front["healthcheck"]["test"]
               for f in of_role(services, "cache").values())
    socket_path = sockets_dir / Path(environment(front)["CACHE_ADDRESS"].removeprefix("unix:")).name
    assert run_check(front, sockets_dir) != 0, f"{name}: healthy with nothing listening"
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    with health_service_on_unix_socket(socket_path, {"": serving, READINESS: serving}):
        assert run_check(front, sockets_dir) == 0, name
    with health_service_on_unix_socket(socket_path, {"": serving, READINESS: not_serving}):
        assert run_check(front, sockets_dir) != 0, f"{name}: healthy while its store does not answer"


def test_every_service_restarts_unless_stopped(services: dict[str, dict]) -> None:
    """Redis and every node's services come back by themselves, as ``make run``'s
    Supervisor restarts them locally; read after YAML merges (the x-* anchors)."""
    assert "redis" in services and any(NODE_SERVICE.fullmatch(name) for name in services)
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
