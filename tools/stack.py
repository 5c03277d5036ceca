"""The whole stack as local processes: ``make run``, the integration tests and
the load test all start it through here.

``python -m tools.stack run`` starts the processor stand-ins (unless
PROCESSOR_DEFAULT_URL and PROCESSOR_FALLBACK_URL are set), the cache, two apis,
the consumer and the real nginx from the repo's nginx.conf rendered for local
paths, then waits; Ctrl-C or SIGTERM stops everything it started.
``python -m tools.stack stop`` stops a stack started elsewhere, by its pidfiles.

Supervision (``run``): like compose's ``restart: unless-stopped``, a service
whose process exits is started again (``Supervisor``): after a backoff that
doubles from 0.5 s to 30 s and resets once the service has stayed up 30 s,
never giving up; each restart is logged on stderr and counted in
RUN_DIR/supervisor.json, which every service finds through SUPERVISOR_STATUS
(the api shows it in /stats). Only Ctrl-C or SIGTERM stops the stack.

``STORE=redis NODES=2`` (or ``--store redis --nodes 2``) starts the scaled-out
form of docker-compose.redis.yml instead: one redis-server (AOF on, a unix
socket in RUN_DIR/redis) and N *nodes*, each its own nginx, two apis, a cache
front (CACHE_STORE=redis, all on that one Redis) and a consumer; one pair of
stand-ins serves every node.

Names and places. Node 1 is the single-node stack, unchanged: its services are
"cache", "api1", "api2", "consumer", "nginx", its files directly in RUN_DIR,
its nginx on PORT, so every test and tool written for one node works on
node 1 of a cluster. Node i > 1 prefixes its names ("n2.consumer"), keeps its
sockets, spools and nginx files in RUN_DIR/n<i> and listens on PORT - (i - 1):
9999, 9998, ... as docker-compose.redis.yml publishes them. Counting down keeps
the nodes away from the stand-ins' 8001/8002 on the default ports; a stack
whose ports would collide anyway (PORT=8003 with two nodes) refuses to start.
Logs and pidfiles of every node go to RUN_DIR/logs and RUN_DIR/pids under
those names (nginx's error log stays in its node's directory); Redis' own log
is RUN_DIR/redis/redis.log, its AOF RUN_DIR/redis/appendonlydir. "node2"
names a whole node to kill (all its processes at once) or restart; "redis"
the store (a restart replays the AOF).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import grpc

from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from tools import nginx_conf
from tools.cgroups import Cgroup, ResourceLimit
from tools.processes import log_tail
from tools.redis_server import RedisServer
from tools.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = Path(os.environ.get("RUN_DIR", "/tmp/rinha-run"))
# By service, whatever the node: every node's nginx first, Redis after the
# last cache front that writes to it.
STOP_ORDER = ("nginx", "api1", "api2", "consumer", "cache", "redis", "processor-default", "processor-fallback")
STORES = ("memory", "redis")
SUPERVISOR_STATUS_FILE = "supervisor.json"
NODE_NAME = re.compile(r"n(\d+)\.(.+)")
WHOLE_NODE = re.compile(r"node(\d+)")


def node_name(node: int, service: str) -> str:
    """"cache" on node 1 (the names the single-node stack always had), "n2.cache" on node 2."""
    return service if node == 1 else f"n{node}.{service}"


def split_name(name: str) -> tuple[int, str]:
    """("n2.cache" | "n1.cache" | "cache") -> (node, service); "redis" and the stand-ins are node 1's."""
    match = NODE_NAME.fullmatch(name)
    return (int(match[1]), match[2]) if match else (1, name)


class StackError(RuntimeError):
    """The stack cannot start as configured, or a service exited while it was
    starting (the message names it and its log file). A service that stays up
    but not ready past its time raises ``tools.waiting.NotReached``."""


@dataclass
class StackConfig:
    run_dir: Path = DEFAULT_RUN_DIR
    port: int = 9999
    default_port: int = 8001
    fallback_port: int = 8002
    default_url: str | None = None
    fallback_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Per-service CPU/memory limits (cgroup v1), keyed like docker-compose.yml
    # ("cache"), or by node-prefixed name ("n2.consumer") and "redis".
    limits: dict[str, ResourceLimit] = field(default_factory=dict)
    # The cgroups go under <controller>/<cgroup_parent>/<name>: two stacks
    # with limits at once need different parents, or they share the groups.
    cgroup_parent: str = "rinha"
    # nginx alone with static answers (and the stand-ins): the latency floor.
    floor: bool = False
    # Which of our services to start on each node (the stand-ins start whenever they are used).
    services: tuple[str, ...] = ("cache", "api1", "api2", "consumer", "nginx")
    # "memory": the cache holds the state (journal on disk), one node only.
    # "redis": every node's cache is a front over one redis-server the stack runs.
    store: str = "memory"
    nodes: int = 1
    # Redis' appendfsync (everysec, always, no).
    redis_appendfsync: str = field(default_factory=lambda: os.environ.get("REDIS_APPENDFSYNC", "everysec"))

    def __post_init__(self) -> None:
        if self.store not in STORES:
            raise StackError(f"store must be one of {STORES}, not {self.store!r}")
        if self.nodes < 1 or (self.store == "memory" and self.nodes != 1):
            raise StackError(f"nodes={self.nodes}: memory mode runs exactly one node, redis mode one or more")

    @property
    def runs_standins(self) -> bool:
        return not (self.default_url and self.fallback_url)

    @property
    def processor_urls(self) -> tuple[str, str]:
        if self.runs_standins:
            return (f"http://127.0.0.1:{self.default_port}", f"http://127.0.0.1:{self.fallback_port}")
        assert self.default_url and self.fallback_url
        return self.default_url, self.fallback_url

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def node_port(self, node: int) -> int:
        """Counting down from ``port`` (module docstring: why)."""
        return self.port - (node - 1)

    def node_url(self, node: int) -> str:
        return f"http://127.0.0.1:{self.node_port(node)}"

    @property
    def base_urls(self) -> list[str]:
        """Every node's nginx, node 1 first."""
        return [self.node_url(node) for node in range(1, self.nodes + 1)]

    @classmethod
    def from_env(cls) -> StackConfig:
        return cls(
            run_dir=DEFAULT_RUN_DIR,
            port=int(os.environ.get("PORT", "9999")),
            default_url=os.environ.get("PROCESSOR_DEFAULT_URL") or None,
            fallback_url=os.environ.get("PROCESSOR_FALLBACK_URL") or None,
            store=os.environ.get("STORE") or "memory",
            nodes=int(os.environ.get("NODES") or "1"),
        )


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if found is None:
        raise StackError("nginx is not installed (make install gets it with apt-get)")
    return found


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.run_dir = config.run_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pid_dir = self.run_dir / "pids"
        self.log_dir = self.run_dir / "logs"
        self.cgroups = {name: Cgroup(name, limit, config.cgroup_parent) for name, limit in config.limits.items()}
        # Redis mode only: its command line, socket and readiness; the process
        # itself is self.procs["redis"], like any other service's.
        self.redis = (RedisServer(self.run_dir / "redis", appendfsync=config.redis_appendfsync)
                      if config.store == "redis" else None)
        # Services stopped with SIGSTOP and not continued since.
        self.frozen: set[str] = set()

    @property
    def supervisor_status(self) -> Path:
        """Where a ``Supervisor`` of this stack writes its restart counts."""
        return self.run_dir / SUPERVISOR_STATUS_FILE

    # -- paths --------------------------------------------------------------
    def node_dir(self, node: int) -> Path:
        return self.run_dir if node == 1 else self.run_dir / f"n{node}"

    def socket(self, name: str) -> Path:
        node, service = split_name(name)
        return self.node_dir(node) / f"{service}.sock"

    @property
    def cache_address(self) -> str:
        return self.cache_address_of(1)

    def cache_address_of(self, node: int) -> str:
        return f"unix:{self.socket(node_name(node, 'cache'))}"

    def log(self, name: str) -> Path:
        if name == "redis" and self.redis is not None:
            return self.redis.log  # redis-server writes its own (--logfile); stdout is appended to it
        return self.log_dir / f"{name}.log"

    def node_services(self, node: int) -> list[str]:
        """Node ``node``'s service names, in start order."""
        return [node_name(node, service) for service in self.config.services]

    # -- lifecycle ------------------------------------------------------------
    def ports(self) -> list[int]:
        """The TCP ports this stack will listen on."""
        nodes = range(1, self.config.nodes + 1)
        ports = [self.config.node_port(node) for node in nodes] if "nginx" in self.config.services else []
        if self.config.runs_standins:
            ports += [self.config.default_port, self.config.fallback_port]
        return ports

    def start(self) -> Stack:
        ports = self.ports()
        clashing = sorted({port for port in ports if ports.count(port) > 1})
        if clashing:
            raise StackError(f"port(s) {', '.join(map(str, clashing))} would be used twice by this stack "
                             f"(node i listens on PORT - (i - 1)): choose another PORT")
        # A second stack on the same ports would not fail: nginx binds with
        # SO_REUSEPORT and shares the traffic, and a stand-in that cannot bind
        # looks up because the other stack's stand-in answers on its port.
        taken = [port for port in ports if port_open(port)]
        if taken:
            raise StackError(f"port(s) {', '.join(map(str, taken))} already in use: another stack is running")
        for directory in (self.run_dir, self.pid_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.config.runs_standins:
                self.start_standin("default", self.config.default_port, 0.05)
                self.start_standin("fallback", self.config.fallback_port, 0.15)
            if self.redis is not None and not self.config.floor:
                self.start_redis()
            for node in range(1, self.config.nodes + 1):
                self.start_node(node)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: int) -> None:
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        for name in self.node_services(node):
            if split_name(name)[1] == "nginx":
                self.start_nginx(node)
            elif not self.config.floor:
                self.start_service(name)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def service_env(self, name: str) -> dict[str, str]:
        node, service = split_name(name)
        default_url, fallback_url = self.config.processor_urls
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
               "CACHE_ADDRESS": self.cache_address_of(node),
               "PROCESSOR_DEFAULT_URL": default_url, "PROCESSOR_FALLBACK_URL": fallback_url,
               # Every service may report the restarts (services/common/supervision.py);
               # the file exists only while a Supervisor watches this stack.
               "SUPERVISOR_STATUS": str(self.supervisor_status)}
        if service == "cache":
            env["CACHE_STORE"] = self.config.store
            env["CACHE_JOURNAL"] = str(self.node_dir(node) / "cache" / "journal.log")
            if self.redis is not None:
                env["REDIS_URL"] = self.redis.url
        if service.startswith("api"):
            env["API_INSTANCE"] = name  # "api1", "n2.api1": unique in /metrics
            env["API_LISTEN"] = f"unix:{self.socket(name)}"
            env["API_SPOOL_DIR"] = str(self.node_dir(node) / "spool" / service)
        if service == "consumer":
            env["CONSUMER_INSTANCE"] = name
        env.update(self.config.env)
        env.update(self.config.service_env.get(name, {}))
        env["PYTHONPATH"] = str(REPO)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        cgroup = self.cgroups.get(name)
        if cgroup is not None:
            cgroup.create()
        with open(self.log(name), "ab") as log:
            proc = subprocess.Popen(argv, cwd=REPO, env=env or self.service_env(name),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=cgroup.enter if cgroup else None)
        self.procs[name] = proc
        self.frozen.discard(name)
        (self.pid_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _check_alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; see {self.log(name)}:\n"
                             f"{log_tail(self.log(name))}")
        return True

    def _wait_up(self, name: str, ready: Callable[[], bool], timeout: float = 15, log: Path | None = None) -> None:
        """Until ``ready()``, while the process of ``name`` stays alive (its death
        ends the wait with StackError); the end of its log on a timeout."""
        wait_until(lambda: self._check_alive(name) and ready(), timeout=timeout, what=f"{name} to come up",
                   on_timeout=lambda: log_tail(log or self.log(name)))

    def start_standin(self, role: str, port: int, fee: float) -> None:
        name = f"processor-{role}"
        self._spawn(name, [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", str(port),
                           "--fee", str(fee), "--name", role])
        self._wait_up(name, lambda: port_open(port))

    def start_redis(self) -> None:
        """redis-server with RedisServer's command line, but spawned like every
        other service (pidfile, process group), so that kill, restart, stop
        and ``make stop`` treat it alike. A restart replays its AOF; it is up
        once it answers PING, i.e. once that replay is done."""
        assert self.redis is not None
        redis = self.redis
        redis.directory.mkdir(parents=True, exist_ok=True)
        redis.socket.unlink(missing_ok=True)
        self._spawn("redis", redis.argv(), env=dict(os.environ))
        self._wait_up("redis", redis.ready, timeout=30, log=redis.log)

    def start_service(self, name: str) -> None:
        node, service = split_name(name)
        module = "api" if service.startswith("api") else service
        sock = self.socket(name)
        if sock.exists() and service != "consumer":
            sock.unlink()
        self._spawn(name, [sys.executable, "-m", f"services.{module}"])
        if service == "consumer":
            since_ms = int(time.time() * 1000) - 1
            self._wait_up(name, lambda: self.consumer_published_since(since_ms, node))
        else:
            self._wait_up(name, sock.exists)

    def consumer_published_since(self, since_ms: int, node: int = 1) -> bool:
        """The consumer is up once it has published its stats to the cache.

        With several nodes the stats carry every consumer's, and nothing tells
        which is which; so: once as many consumers have published since
        ``since_ms`` as this stack runs unfrozen (the new one is among them;
        the others beat every ttl / 3 anyway, and a dead one cannot)."""
        with grpc.insecure_channel(self.cache_address_of(node)) as channel:
            try:
                reply = pipeline_pb2_grpc.CacheStub(channel).Stats(pb.StatsRequest(), timeout=1)
            except grpc.RpcError:
                return False
        if self.config.nodes == 1:
            return reply.consumer.published_at_ms >= since_ms
        publishing = sum(1 for one in reply.per_consumer if one.published_at_ms >= since_ms)
        return publishing >= self.live_consumers()

    def live_consumers(self) -> int:
        return sum(1 for name, proc in self.procs.items()
                   if split_name(name)[1] == "consumer" and proc.poll() is None and name not in self.frozen)

    def start_nginx(self, node: int = 1) -> None:
        name, directory = node_name(node, "nginx"), self.node_dir(node)
        conf = nginx_conf.write(directory, listen_port=self.config.node_port(node), floor=self.config.floor)
        self._spawn(name, [nginx_binary(), "-c", str(conf), "-p", str(directory),
                           "-g", "daemon off;"], env=dict(os.environ))
        self._wait_up(name, lambda: http_ok(f"{self.config.node_url(node)}/health"))

    def _targets(self, name: str) -> list[str]:
        """"node2" -> every service of node 2; "n1.cache" -> "cache"; anything else as it is."""
        whole = WHOLE_NODE.fullmatch(name)
        if whole:
            node = int(whole[1])
            if not 1 <= node <= self.config.nodes:
                raise KeyError(name)
            return [n for n in self.node_services(node) if n in self.procs]
        name = node_name(*split_name(name))
        if name not in self.procs:
            raise KeyError(name)
        return [name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a service's whole process group (nginx's workers included)
        and wait for it to exit; SIGSTOP and SIGCONT return at once (``freeze``,
        ``thaw``). "node2" signals every service of node 2 at once, as when a
        machine is lost, then waits for them all."""
        running = [n for n in self._targets(name) if self.procs[n].poll() is None]
        for target in running:
            pid = self.procs[target].pid
            os.killpg(pid, sig)
            if sig == signal.SIGSTOP:
                self.frozen.add(target)
            elif target in self.frozen:  # SIGCONT, or a stopped process must run to act on SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGCONT)
                self.frozen.discard(target)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            for target in running:
                self.procs[target].wait(timeout=30)

    def freeze(self, name: str) -> None:
        """SIGSTOP: alive to the kernel, silent to everyone else (a long GC
        pause, a VM stall)."""
        self.kill(name, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.kill(name, signal.SIGCONT)

    def restart(self, name: str) -> None:
        """SIGTERM (if it still runs), then start it again; "node2" restarts
        the whole node: stopped in stop order, started in start order."""
        whole = WHOLE_NODE.fullmatch(name)
        if whole:
            node = int(whole[1])
            for target in sorted(self._targets(name), key=_stop_rank):
                self.kill(target, signal.SIGTERM)
            self.start_node(node)
            return
        name = node_name(*split_name(name))
        self.kill(name, signal.SIGTERM)
        node, service = split_name(name)
        if service == "nginx":
            self.start_nginx(node)
        elif name.startswith("processor-"):
            role = name.removeprefix("processor-")
            port = self.config.default_port if role == "default" else self.config.fallback_port
            self.start_standin(role, port, 0.05 if role == "default" else 0.15)
        elif name == "redis":
            self.start_redis()
        else:
            self.start_service(name)

    def stop(self, timeout: float = 15.0) -> None:
        for name in sorted(self.procs, key=_stop_rank):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if name in self.frozen:
                    proc.send_signal(signal.SIGCONT)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
        self.procs.clear()
        self.frozen.clear()
        for cgroup in self.cgroups.values():
            cgroup.remove()


def _stop_rank(name: str) -> tuple[int, int]:
    """Every node's nginx first, then every node's apis, ...; Redis after the caches."""
    node, service = split_name(name)
    return (STOP_ORDER.index(service) if service in STOP_ORDER else 99, node)


class Watched(Protocol):
    """What a ``Supervisor`` needs of a process (a ``Popen``; a fake in unit tests)."""

    def poll(self) -> int | None: ...


class Supervised(Protocol):
    """What a ``Supervisor`` needs of a stack (a ``Stack``; a fake in unit tests)."""

    @property
    def procs(self) -> Mapping[str, Watched]: ...

    def restart(self, name: str) -> None: ...

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None: ...


def describe_exit(returncode: int | None) -> str:
    """"exit code 3" / "signal SIGKILL": Popen's negative codes are signals."""
    if returncode is None:
        return "no exit"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return f"exit code {returncode}"


def write_json_atomically(path: Path, document: object) -> None:
    """Readers (every api's /stats) see the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, sort_keys=True))
    os.replace(temporary, path)


class Supervisor:
    """``restart: unless-stopped`` for a local stack: every service whose
    process has exited is started again, after a backoff, forever.

    The work is ``poll_once(now)``, called from outside (``run`` loops over it
    twice a second for ``make run``; chaos calls it between its own faults,
    when no service is down on purpose; unit tests with a fake clock), so the
    supervisor owns no thread and reads no clock of its own. The backoff doubles from ``first_delay`` up to
    ``max_delay`` with each failure in a row (an exit, or a start that failed),
    and is forgotten once the service has stayed up ``stable_after`` seconds:
    a service that crashes once a day restarts at once, one that crashes at
    start-up does not spin. A restart that raises counts as one more failure
    (hence a longer delay), never as the supervisor's own end.

    ``restarts`` (successful restarts by name) goes to ``status_path`` as
    ``{"restarts": {...}, "updatedAt": <epoch ms>}`` whenever it changes;
    ``exits`` counts the exits it noticed (not failed starts), which chaos
    reports as processes that died.
    """

    def __init__(self, stack: Supervised, status_path: Path | None = None, *, first_delay: float = 0.5,
                 max_delay: float = 30.0, stable_after: float = 30.0,
                 log: Callable[[str], None] | None = None, now: float | None = None) -> None:
        self.stack = stack
        self.status_path = status_path
        self.first_delay, self.max_delay, self.stable_after = first_delay, max_delay, stable_after
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        started = time.monotonic() if now is None else now
        self.restarts: dict[str, int] = {name: 0 for name in stack.procs}
        self.exits: dict[str, int] = {name: 0 for name in stack.procs}
        # Failures in a row (exits and failed starts) since the service was last stable.
        self.failures: dict[str, int] = {}
        # Dead services and when to start them again.
        self.due: dict[str, float] = {}
        # Since when each running service has been up (its start, as far as we know).
        self.up_since: dict[str, float] = {name: started for name in stack.procs}
        # The Popen each exit was seen on: a process replaced behind our back
        # (chaos' own kill-and-restart) is a new one to watch, not a restart of ours.
        self._watched: dict[str, Watched | None] = dict(stack.procs)
        self.write_status()

    def delay(self, failures: int) -> float:
        """The backoff before the next start after ``failures`` failures in a row."""
        return min(self.max_delay, self.first_delay * 2 ** max(failures - 1, 0))

    def poll_once(self, now: float) -> list[str]:
        """Notice exits, start whatever is due; the names restarted this time."""
        for name, proc in list(self.stack.procs.items()):
            if name in self.due:
                continue
            if self._watched.get(name) is not proc:  # started by someone else: watch it from now
                self._watched[name] = proc
                self.up_since[name] = now
                self.restarts.setdefault(name, 0)
                self.exits.setdefault(name, 0)
            returncode = proc.poll()
            if returncode is None:
                continue
            self.exits[name] = self.exits.get(name, 0) + 1
            self._failed(name, now, f"exited ({describe_exit(returncode)})")
        restarted = [name for name, at in sorted(self.due.items(), key=lambda item: item[1]) if at <= now
                     and self._start(name, now)]
        if restarted:
            self.write_status()
        return restarted

    def _failed(self, name: str, now: float, what: str) -> None:
        if now - self.up_since.get(name, now) >= self.stable_after:
            self.failures.pop(name, None)  # it had stayed up: this exit restarts at once
        failures = self.failures[name] = self.failures.get(name, 0) + 1
        wait = self.delay(failures)
        self.due[name] = now + wait
        self.log(f"supervisor: {name} {what}; restarts so far {self.restarts.get(name, 0)}, "
                 f"failures in a row {failures}; restarting in {wait:.1f}s")

    def _start(self, name: str, now: float) -> bool:
        del self.due[name]
        try:
            self.stack.restart(name)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # whatever a start raises, the supervisor carries on
            # A start that timed out may have left the process running but
            # useless: end it, so that "dead, due at ..." is the whole state.
            with contextlib.suppress(Exception):
                self.stack.kill(name, signal.SIGKILL)
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._failed(name, now, f"failed to start ({first_line})")
            self._watched[name] = self.stack.procs.get(name)
            return False
        self._watched[name] = self.stack.procs[name]
        self.up_since[name] = now
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self.log(f"supervisor: {name} restarted (restart #{self.restarts[name]})")
        return True

    def write_status(self) -> None:
        """The counts for /stats; a failed write (disk full) is retried with the next change."""
        if self.status_path is None:
            return
        try:
            write_json_atomically(self.status_path, {"restarts": dict(sorted(self.restarts.items())),
                                                     "updatedAt": int(time.time() * 1000)})
        except OSError as exc:
            self.log(f"supervisor: cannot write {self.status_path}: {exc}")

    def run(self, interval: float = 0.5, until: Callable[[], bool] = lambda: False,
            clock: Callable[[], float] = time.monotonic) -> None:
        """Poll every ``interval`` seconds until ``until()`` (forever by default:
        Ctrl-C/SIGTERM, turned into KeyboardInterrupt by ``main``, ends it).
        A paced loop of work, not a wait for a condition: no deadline."""
        while not until():
            self.poll_once(clock())
            time.sleep(interval)


def add_isolation_options(parser: argparse.ArgumentParser, *, cgroups: bool = True) -> None:
    """``--standin-ports`` and (for a stack run inside limits) ``--cgroup-parent``:
    what a second stack on the same machine must not share with the first."""
    def port_pair(text: str) -> tuple[int, int]:
        try:
            default, fallback = (int(port) for port in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError("two ports: DEFAULT,FALLBACK") from None
        return default, fallback

    parser.add_argument("--standin-ports", type=port_pair, default=(8001, 8002), metavar="DEFAULT,FALLBACK",
                        help="the processor stand-ins' ports")
    if cgroups:
        parser.add_argument("--cgroup-parent", default="rinha",
                            help="cgroups go under <controller>/<this>/<service>: another name for a second "
                                 "stack with limits on the same machine")


def stop_by_pidfiles(run_dir: Path) -> int:
    """Stop processes a ``run`` elsewhere started, trusting only our pidfiles
    and only PIDs whose command line is one of ours."""
    stopped = 0
    pid_dir = run_dir / "pids"
    for pidfile in sorted(pid_dir.glob("*.pid")) if pid_dir.exists() else []:
        pid = int(pidfile.read_text().strip() or 0)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if pid and any(mark in cmdline for mark in (b"services.", b"standin", b"nginx", b"redis-server")):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        pidfile.unlink()
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    parser.add_argument("command", choices=("run", "stop"))
    parser.add_argument("--store", choices=STORES, help="memory (default) or redis; or STORE=")
    parser.add_argument("--nodes", type=int, help="nodes over one Redis (redis store only); or NODES=")
    args = parser.parse_args()
    try:
        config = StackConfig.from_env()
        if args.store or args.nodes:
            config = replace(config, store=args.store or config.store, nodes=args.nodes or config.nodes)
    except (StackError, ValueError) as exc:
        parser.error(str(exc))
    if args.command == "stop":
        print(f"stopped {stop_by_pidfiles(config.run_dir)} processes")
        return
    stop_by_pidfiles(config.run_dir)
    stack = Stack(config)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack.start()
        cluster = f"; {config.nodes} nodes over Redis at {stack.redis.url}" if stack.redis else ""
        print(f"stack up: {'  '.join(config.base_urls)}  (processors {', '.join(config.processor_urls)}"
              f"{cluster}; logs in {stack.log_dir}; Ctrl-C stops it)", flush=True)
        # A service that exits is restarted (with backoff), never the end of
        # the stack: only Ctrl-C or SIGTERM (KeyboardInterrupt here) is.
        Supervisor(stack, stack.supervisor_status).run()
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
