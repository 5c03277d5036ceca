"""The whole stack as local processes: ``make run``, the integration tests and
the load test all start it through here.

``python -m tools.stack run`` starts the processor stand-ins (unless
PROCESSOR_DEFAULT_URL and PROCESSOR_FALLBACK_URL are set), the cache, two apis,
the consumer and the real nginx from the repo's nginx.conf rendered for local
paths, then waits; Ctrl-C or SIGTERM stops everything it started.
``python -m tools.stack stop`` stops a stack started elsewhere, by its pidfiles.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc import pipeline_pb2_grpc
from tools import nginx_conf
from tools.cgroups import Cgroup, Limit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = Path(os.environ.get("RUN_DIR", "/tmp/rinha-run"))
STOP_ORDER = ("nginx", "api1", "api2", "consumer", "cache", "processor-default", "processor-fallback")


class StackError(RuntimeError):
    """A service did not come up; the message names it and its log file."""


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
    # Per-service CPU/memory limits (cgroup v1), keyed like docker-compose.yml.
    limits: dict[str, Limit] = field(default_factory=dict)
    # nginx alone with static answers (and the stand-ins): the latency floor.
    floor: bool = False
    # Which of our services to start (the stand-ins start whenever they are used).
    services: tuple[str, ...] = ("cache", "api1", "api2", "consumer", "nginx")

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

    @classmethod
    def from_env(cls) -> StackConfig:
        return cls(
            run_dir=DEFAULT_RUN_DIR,
            port=int(os.environ.get("PORT", "9999")),
            default_url=os.environ.get("PROCESSOR_DEFAULT_URL") or None,
            fallback_url=os.environ.get("PROCESSOR_FALLBACK_URL") or None,
        )


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)
    if found is None:
        raise StackError("nginx is not installed (make install gets it with apt-get)")
    return found


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise StackError(f"{what} did not come up within {timeout:.0f}s{tail}")


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
        self.cgroups = {name: Cgroup(name, limit) for name, limit in config.limits.items()}

    # -- paths --------------------------------------------------------------
    def socket(self, name: str) -> Path:
        return self.run_dir / f"{name}.sock"

    @property
    def cache_address(self) -> str:
        return f"unix:{self.socket('cache')}"

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    # -- lifecycle ------------------------------------------------------------
    def ports(self) -> list[int]:
        """The TCP ports this stack will listen on."""
        ports = [self.config.port] if "nginx" in self.config.services else []
        if self.config.runs_standins:
            ports += [self.config.default_port, self.config.fallback_port]
        return ports

    def start(self) -> Stack:
        # A second stack on the same ports would not fail: nginx binds with
        # SO_REUSEPORT and shares the traffic, and a stand-in that cannot bind
        # looks up because the other stack's stand-in answers on its port.
        taken = [port for port in self.ports() if port_open(port)]
        if taken:
            raise StackError(f"port(s) {', '.join(map(str, taken))} already in use: another stack is running")
        for directory in (self.run_dir, self.pid_dir, self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.config.runs_standins:
                self.start_standin("default", self.config.default_port, 0.05)
                self.start_standin("fallback", self.config.fallback_port, 0.15)
            for name in self.config.services:
                if name == "nginx":
                    self.start_nginx()
                elif not self.config.floor:
                    self.start_service(name)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def service_env(self, name: str) -> dict[str, str]:
        default_url, fallback_url = self.config.processor_urls
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
               "CACHE_ADDRESS": self.cache_address,
               "PROCESSOR_DEFAULT_URL": default_url, "PROCESSOR_FALLBACK_URL": fallback_url}
        if name == "cache":
            env["CACHE_JOURNAL"] = str(self.run_dir / "cache" / "journal.log")
        if name.startswith("api"):
            env["API_LISTEN"] = f"unix:{self.socket(name)}"
            env["API_SPOOL_DIR"] = str(self.run_dir / "spool" / name)
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
        (self.pid_dir / f"{name}.pid").write_text(str(proc.pid))
        return proc

    def _check_alive(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.poll() is not None:
            raise StackError(f"{name} exited with {proc.returncode}; see {self.log(name)}:\n"
                             + "\n".join(self.log(name).read_text(errors="replace").splitlines()[-20:]))
        return True

    def start_standin(self, role: str, port: int, fee: float) -> None:
        name = f"processor-{role}"
        self._spawn(name, [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", str(port),
                           "--fee", str(fee), "--name", role])
        wait_until(lambda: self._check_alive(name) and port_open(port), 15, name, self.log(name))

    def start_service(self, name: str) -> None:
        module = "api" if name.startswith("api") else name
        sock = self.socket(name)
        if sock.exists() and name != "consumer":
            sock.unlink()
        self._spawn(name, [sys.executable, "-m", f"services.{module}"])
        if name == "consumer":
            since_ms = int(time.time() * 1000) - 1
            wait_until(lambda: self._check_alive(name) and self.consumer_published_since(since_ms),
                       15, name, self.log(name))
        else:
            wait_until(lambda: self._check_alive(name) and sock.exists(), 15, name, self.log(name))

    def consumer_published_since(self, since_ms: int) -> bool:
        """The consumer is up once it has published its stats to the cache."""
        with grpc.insecure_channel(self.cache_address) as channel:
            try:
                reply = pipeline_pb2_grpc.CacheStub(channel).Stats(pb.StatsRequest(), timeout=1)
            except grpc.RpcError:
                return False
        return reply.consumer.published_at_ms >= since_ms

    def start_nginx(self) -> None:
        conf = nginx_conf.write(self.run_dir, listen_port=self.config.port, floor=self.config.floor)
        self._spawn("nginx", [nginx_binary(), "-c", str(conf), "-p", str(self.run_dir),
                              "-g", "daemon off;"], env=dict(os.environ))
        wait_until(lambda: self._check_alive("nginx") and http_ok(f"{self.config.base_url}/health"),
                   15, "nginx", self.log("nginx"))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a service's whole process group (nginx's workers included)."""
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def restart(self, name: str) -> None:
        self.kill(name, signal.SIGTERM)
        if name == "nginx":
            self.start_nginx()
        elif name.startswith("processor-"):
            role = name.removeprefix("processor-")
            port = self.config.default_port if role == "default" else self.config.fallback_port
            self.start_standin(role, port, 0.05 if role == "default" else 0.15)
        else:
            self.start_service(name)

    def stop(self, timeout: float = 15.0) -> None:
        for name in sorted(self.procs, key=lambda n: STOP_ORDER.index(n) if n in STOP_ORDER else 99):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)
        self.procs.clear()
        for cgroup in self.cgroups.values():
            cgroup.remove()


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
        if pid and any(mark in cmdline for mark in (b"services.", b"standin", b"nginx")):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        pidfile.unlink()
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.stack")
    parser.add_argument("command", choices=("run", "stop"))
    args = parser.parse_args()
    config = StackConfig.from_env()
    if args.command == "stop":
        print(f"stopped {stop_by_pidfiles(config.run_dir)} processes")
        return
    stop_by_pidfiles(config.run_dir)
    stack = Stack(config)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        stack.start()
        print(f"stack up: {config.base_url}  (processors {', '.join(config.processor_urls)}; "
              f"logs in {stack.log_dir}; Ctrl-C stops it)", flush=True)
        while all(proc.poll() is None for proc in stack.procs.values()):
            time.sleep(0.5)
        dead = [name for name, proc in stack.procs.items() if proc.poll() is not None]
        print(f"stopping: {', '.join(dead)} exited; see {stack.log_dir}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
