"""``python -m tools.compose_check``: `docker compose up`, for real, for every
compose file in the repo (``make compose-test``; CI runs it after ``make test``).

For each docker-compose*.yml: build, ``up -d``, the processor stand-ins as
containers on the external ``payment-processor`` network under their official
names, every service ``healthy``, a short load through each published nginx
with the exactly-once check (tools/clients.verify), one container SIGKILLed
and brought back by its restart policy, no OOM kill, memory under each limit,
then ``down -v``. It prints the figures per file at the end and exits 1 if any
check failed.

What the machine lacks is made here, and only here: Debian's docker.io,
docker-compose (1.29, run with ``--compatibility`` so ``deploy.resources.limits``
apply) and debootstrap are installed with apt when missing; a dockerd of our
own is started (vfs storage, no iptables: what works on these VMs) and stopped
by its PID at the end; no registry is reachable, so the public base images the
Dockerfile and the compose files name are built from a debootstrapped bookworm
(tools/images/). The production files stay standard: the only test-specific
compose settings are in an override file generated per run (build network,
nginx's nofile limit).

Needs root (dockerd, debootstrap, apt); re-runs itself with sudo otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import yaml

from tools.cgroups import compose_limits
from tools.clients import Backend, Load, Processors, Verdict, verify
from tools.processes import wait_started
from tools.waiting import wait_until

log = logging.getLogger("compose-check")

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "tools" / "images"
SUITE = "bookworm"
BASE_IMAGE = f"rinha-test/{SUITE}:minbase"
# Public image -> the tools/images/ directory that stands in for it.
STAND_IN_IMAGES = {"python:3.11-slim": "python", "nginx:1.27-alpine": "nginx", "redis:7.0-bookworm": "redis"}
PACKAGES = {"dockerd": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"}

DATA_ROOT = Path(os.environ.get("COMPOSE_CHECK_DATA_ROOT", "/var/lib/rinha-docker"))
EXEC_DIR = Path("/run/rinha-docker")
SOCKET = EXEC_DIR / "docker.sock"
PIDFILE = EXEC_DIR / "dockerd.pid"
CACHE = Path(os.environ.get("COMPOSE_CHECK_CACHE", "/var/cache/rinha-compose"))
WORK = Path(tempfile.gettempdir()) / "rinha-compose-check"

PROCESSOR_NETWORK = "payment-processor"
PROCESSOR_PORT = 8080
PROCESSOR_FEES = {"default": 0.05, "fallback": 0.15}

# The container each file's check SIGKILLs: the consumer (jobs in flight when
# it dies must be charged once, by the next lease) in the single box; an api
# (payments in its spool must be shipped once it is back, and nginx must route
# around it meanwhile) in the scaled-out file.
KILL_TARGETS = {"docker-compose.yml": "consumer", "docker-compose.redis.yml": "node1-api1"}

HEALTHY_TIMEOUT = 240.0
RESTART_TIMEOUT = 120.0
LOAD_RATE = 40.0  # POSTs per second, over LOAD_WORKERS connections
LOAD_WORKERS = 4
LOAD_BEFORE_KILL = 4.0
LOAD_AFTER_RESTART = 3.0


# ---- running commands ----------------------------------------------------------

def run(*argv: str | Path, capture: bool = False, check: bool = True, timeout: float | None = 900,
        quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """One command, logged; its output goes to our log unless captured."""
    args = [str(a) for a in argv]
    if not quiet:
        log.debug("$ %s", " ".join(args))
    result = subprocess.run(args, text=True, timeout=timeout, check=False,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if capture else ""
        raise CheckError(f"`{' '.join(args)}` exited with {result.returncode}" + (f":\n{detail}" if detail else ""))
    return result


def docker_bin() -> str:
    """Debian's docker client (the daemon's own version): the one in
    /usr/local/bin may be newer and expect buildx for ``docker build``."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


def docker(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run(docker_bin(), *argv, **kwargs)


def inspect(container: str) -> dict:
    return json.loads(docker("inspect", container, capture=True, quiet=True).stdout)[0]


class CheckError(Exception):
    """A step failed: the message says which and why."""


# What asking a service that is not listening yet raises: "not yet" while the check waits for it.
UNANSWERED = (httpx.HTTPError, OSError)


@contextmanager
def timed(what: str) -> Iterator[dict[str, float]]:
    """Logs how long ``what`` took; the dict holds it as ``seconds``."""
    took: dict[str, float] = {}
    start = time.monotonic()
    log.info("%s ...", what)
    yield took
    took["seconds"] = time.monotonic() - start
    log.info("%s: %.1f s", what, took["seconds"])


# ---- the machine ---------------------------------------------------------------

def installed(command: str) -> bool:
    return shutil.which(command) is not None or any(Path(d, command).exists() for d in ("/usr/sbin", "/usr/bin"))


def ensure_packages() -> None:
    """Debian's docker.io, docker-compose and debootstrap, installed only when
    missing, as the Makefile's apt_install does (waiting for a dpkg lock
    another apt holds, instead of failing on it)."""
    missing = [package for command, package in PACKAGES.items() if not installed(command)]
    if not missing:
        return
    with timed(f"apt-get install {' '.join(missing)}"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        lock = ["-o", "DPkg::Lock::Timeout=600"]
        subprocess.run(["apt-get", *lock, "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", *lock, "install", "-y", "-qq", *missing], check=True, env=env,
                       stdout=subprocess.DEVNULL)


def nofile_hard_limit() -> int:
    """The open-files hard limit dockerd (our child) inherits, so the most a
    container may ask for: 20000 on these VMs, below nginx's 65536."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def apt_mirror(suite: str = SUITE) -> str:
    """The Debian mirror apt already uses for ``suite`` (deb822 .sources or
    one-line .list entries), so debootstrap fetches from where apt can."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):  # deb822
            fields = dict(re.findall(r"(?m)^(\w[\w-]*):\s*(.+)$", stanza))
            if suite in fields.get("Suites", "").split() and "deb" in fields.get("Types", "").split():
                return fields["URIs"].split()[0]
        for line in text.splitlines():  # one-line format
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s", line)
            if match and match.group(2) == suite:
                return match.group(1)
    return "http://deb.debian.org/debian"


class Daemon:
    """A dockerd of our own: its own socket, pidfile and data root, the vfs
    storage driver (no overlayfs here) and no iptables rules (none can be
    set here; published ports go through docker-proxy instead). Stopped by
    its PID at the end, only if this run started it."""

    def __init__(self, data_root: Path = DATA_ROOT) -> None:
        self.data_root = data_root
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = WORK / "dockerd.log"

    def answers(self) -> bool:
        return docker("version", capture=True, check=False, quiet=True, timeout=30).returncode == 0

    def start(self) -> None:
        os.environ["DOCKER_HOST"] = f"unix://{SOCKET}"
        # compose 1.29 builds through the daemon's API, not through whichever
        # docker CLI comes first on PATH (a newer one wants buildx).
        os.environ["COMPOSE_DOCKER_CLI_BUILD"] = "0"
        os.environ["DOCKER_BUILDKIT"] = "0"
        if self.answers():
            log.info("reusing the dockerd already on %s (left running)", SOCKET)
            return
        if PIDFILE.exists():  # a stale pidfile makes dockerd refuse to start
            pid = PIDFILE.read_text().strip()
            if pid.isdigit() and Path(f"/proc/{pid}").exists():
                raise CheckError(f"dockerd {pid} holds {PIDFILE} but does not answer on {SOCKET}")
            PIDFILE.unlink()
        EXEC_DIR.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        argv = ["dockerd", "--host", f"unix://{SOCKET}", "--pidfile", str(PIDFILE),
                "--data-root", str(self.data_root), "--exec-root", str(EXEC_DIR / "exec"),
                "--storage-driver", "vfs", "--iptables=false", "--bridge=none"]
        log.info("starting %s (log: %s)", " ".join(argv), self.log_path)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_started(self.process, self.answers, name="dockerd", timeout=60, log=self.log_path, every=0.5)

    def stop(self, keep_data: bool) -> None:
        """SIGTERM to our dockerd, by its PID; then its data root goes too
        unless ``keep_data``: with vfs every image layer is a full copy of
        the filesystem, gigabytes after a run (kept, a second run reuses the
        images; the debootstrap tarball in CACHE is kept either way)."""
        if self.process is None:
            return
        log.info("stopping dockerd (pid %d)", self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        netns = EXEC_DIR / "exec" / "netns" / "default"  # dockerd leaves this handle mounted
        if netns.exists():
            run("umount", netns, check=False, capture=True)
        if not keep_data:
            log.info("removing %s (--keep-images keeps it)", self.data_root)
            shutil.rmtree(self.data_root, ignore_errors=True)


# ---- the base images ------------------------------------------------------------

def needed_images(compose_files: Sequence[Path]) -> set[str]:
    """Every public image the Dockerfile builds FROM or a compose file runs."""
    images = set(re.findall(r"(?m)^FROM\s+(\S+)", (REPO / "Dockerfile").read_text()))
    for path in compose_files:
        for service in yaml.safe_load(path.read_text())["services"].values():
            if "build" not in service and "image" in service:
                images.add(service["image"])
    return images


def slim_rootfs(rootfs: Path) -> None:
    """What Debian's own container images do to a debootstrap: no daemons
    started by package scripts, no docs, man pages or locales, no apt cache."""
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(
        "path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n"
        "path-exclude /usr/share/info/*\n")
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Install-Recommends "false";\n')
    for directory in ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/share/info",
                      "var/cache/apt/archives", "var/lib/apt/lists"):
        for child in (rootfs / directory).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name not in ("lock", "partial"):
                child.unlink()
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        cache.unlink()


def rootfs_tarball(mirror: str) -> Path:
    """A minbase bookworm from ``mirror``, as a tar for ``docker import``;
    kept in CACHE so that a second run on the same machine skips debootstrap
    (CI, on a fresh machine, always makes it)."""
    tarball = CACHE / f"{SUITE}-minbase.tar"
    if tarball.exists():
        log.info("debootstrap: reusing %s", tarball)
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp, timed(f"debootstrap {SUITE} from {mirror}"):
        rootfs = Path(tmp) / "rootfs"
        run("debootstrap", "--variant=minbase", SUITE, rootfs, mirror, capture=True)
        slim_rootfs(rootfs)
        partial = tarball.with_suffix(".partial")
        run("tar", "--numeric-owner", "-C", rootfs, "-cf", partial, ".")
        partial.rename(tarball)
    return tarball


def image_exists(name: str) -> bool:
    return docker("image", "inspect", name, capture=True, check=False, quiet=True).returncode == 0


def build_base_images(images: set[str], mirror: str) -> None:
    """Every public image needed, built from tools/images/ on the imported
    rootfs with the host's network (apt and pip reach their mirrors)."""
    unknown = images - set(STAND_IN_IMAGES)
    if unknown:
        raise CheckError(f"no test stand-in for {sorted(unknown)}: add a directory to {IMAGES}")
    if not image_exists(BASE_IMAGE):
        tarball = rootfs_tarball(mirror)
        with timed(f"docker import {BASE_IMAGE}"):
            docker("import", "--change", 'CMD ["bash"]', tarball, BASE_IMAGE, capture=True)
    # In parallel: each mostly waits on the mirror and on vfs copying layers.
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        for done in [pool.submit(build_stand_in, image) for image in sorted(images)]:
            done.result()


def build_stand_in(image: str) -> None:
    source = IMAGES / STAND_IN_IMAGES[image]
    with tempfile.TemporaryDirectory(dir=WORK) as context, timed(f"build {image} from {source.relative_to(REPO)}"):
        shutil.copytree(source, context, dirs_exist_ok=True)
        shutil.copy(host_ca_bundle(), Path(context) / "host-ca-bundle.crt")
        docker("build", "--network", "host", "--build-arg", f"BASE={BASE_IMAGE}", "-q", "-t", image, context,
               capture=True)


def host_ca_bundle() -> Path:
    """What the host trusts (an intercepting egress proxy's CA included)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise CheckError("no CA bundle on the host (install ca-certificates)")


# ---- one compose file -------------------------------------------------------------

@dataclass
class Peak:
    """The most a container's cgroup held: the working set (what ``docker
    stats`` shows: usage less inactive file pages, sampled) and the kernel's
    high-water mark of everything charged, page cache included."""

    working_set: int = 0
    charged: int = 0


@dataclass
class FileResult:
    file: str
    healthy_seconds: float = 0.0
    build_seconds: float = 0.0
    down_seconds: float = 0.0
    total_seconds: float = 0.0
    verdict: Verdict | None = None
    killed: str = ""
    restart_seconds: float = 0.0  # SIGKILL to running again
    healthy_again_seconds: float = 0.0  # SIGKILL to healthy again
    limits: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, Peak] = field(default_factory=dict)
    oom_killed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Stack:
    """One compose file brought up under its own project name, with the
    generated override; every command goes through docker-compose 1.29."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.spec = yaml.safe_load(path.read_text())
        self.services: dict[str, dict] = self.spec["services"]
        self.project = "rinha" + re.sub(r"^docker-compose|\.ya?ml$", "", path.name).replace(".", "-")
        self.override = WORK / f"{self.project}.override.yml"

    def write_override(self) -> None:
        """Only what this machine needs, in a file made per run: the builds on
        the host's network (the daemon's bridge has no NAT without iptables)
        and nginx's nofile limit lowered to what dockerd may grant."""
        nofile = min(65536, nofile_hard_limit())
        services: dict[str, dict] = {}
        for name, service in self.services.items():
            if "build" in service:
                context = service["build"] if isinstance(service["build"], str) else service["build"]["context"]
                services[name] = {"build": {"context": str((self.path.parent / context).resolve()),
                                            "network": "host"}}
            if "nofile" in (service.get("ulimits") or {}):
                services.setdefault(name, {})["ulimits"] = {"nofile": {"soft": nofile, "hard": nofile}}
        self.override.write_text(yaml.safe_dump({"services": services}, sort_keys=False))

    def compose(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run("docker-compose", "--compatibility", "--project-name", self.project,
                   "--file", self.path, "--file", self.override, *argv, **kwargs)

    def build(self) -> None:
        """``compose build`` of one service per image: compose 1.29 builds
        every service with a ``build:`` section, so the four (or eight)
        sharing the app image would each send the context and build again."""
        first_per_image = {s["image"]: name for name, s in reversed(self.services.items()) if "build" in s}
        self.compose("build", *sorted(first_per_image.values()), capture=True)

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service, capture=True, quiet=True).stdout.split()
        if len(ids) != 1:
            raise CheckError(f"{service}: {len(ids)} containers")
        return ids[0]

    def containers(self) -> dict[str, str]:
        return {name: self.container(name) for name in self.services}

    @property
    def app_image(self) -> str:
        (image,) = {s["image"] for s in self.services.values() if "build" in s}
        return str(image)

    def published_ports(self) -> list[int]:
        ports = []
        for service in self.services.values():
            for port in service.get("ports", []):
                ports.append(int(str(port).split(":")[-2]) if ":" in str(port) else int(port["published"]))
        return sorted(ports)


def health_states(containers: dict[str, str]) -> dict[str, str]:
    states = {}
    for name, cid in containers.items():
        state = inspect(cid)["State"]
        states[name] = (state.get("Health") or {}).get("Status", "none") if state["Running"] else state["Status"]
    return states


def wait_healthy(containers: dict[str, str], timeout: float = HEALTHY_TIMEOUT) -> None:
    """Until every service's healthcheck passes (a service without one fails)."""
    last: dict[str, str] = {}

    def all_healthy() -> bool:
        nonlocal last
        states = health_states(containers)
        if states != last:
            log.info("health: %s", ", ".join(f"{n}={s}" for n, s in sorted(states.items())))
            last = states
        return all(state == "healthy" for state in states.values())

    wait_until(all_healthy, timeout=timeout, what="every service healthy", interval=0.5,
               on_timeout=lambda: f"last states: {last}")


@contextmanager
def processor_stand_ins(image: str) -> Iterator[Processors]:
    """The two processors as the official test runs them: containers named
    payment-processor-default/-fallback on the external network, port 8080,
    here the stand-in (standin/) from the app image. The check reaches their
    admin API at their container addresses."""
    if docker("network", "inspect", PROCESSOR_NETWORK, capture=True, check=False, quiet=True).returncode:
        docker("network", "create", PROCESSOR_NETWORK, capture=True)
    urls = {}
    try:
        for role, fee in PROCESSOR_FEES.items():
            name = f"payment-processor-{role}"
            docker("rm", "-f", name, capture=True, check=False)
            docker("run", "-d", "--name", name, "--network", PROCESSOR_NETWORK, image, "python", "-m", "standin",
                   "--host", "0.0.0.0", "--port", str(PROCESSOR_PORT), "--fee", str(fee), "--name", role,
                   capture=True)
            address = inspect(name)["NetworkSettings"]["Networks"][PROCESSOR_NETWORK]["IPAddress"]
            urls[role] = f"http://{address}:{PROCESSOR_PORT}"
        processors = Processors(urls["default"], urls["fallback"])
        wait_until(lambda: all(processors.summary(role) is not None for role in PROCESSOR_FEES), timeout=60,
                   what="the processor stand-ins", interval=0.3, ignoring=UNANSWERED)
        log.info("processor stand-ins: %s", urls)
        yield processors
    finally:
        for role in PROCESSOR_FEES:
            docker("rm", "-f", f"payment-processor-{role}", capture=True, check=False)
        docker("network", "rm", PROCESSOR_NETWORK, capture=True, check=False)


class MemorySampler(threading.Thread):
    """Every container's memory, once a second, from its cgroup (v1 here; v2
    read alike), keeping the peaks per service across restarts."""

    def __init__(self, stack: Stack, containers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.containers = dict(containers)
        self.peaks: dict[str, Peak] = {name: Peak() for name in containers}
        self.oom_kills: dict[str, int] = {name: 0 for name in containers}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(1.0):
            self.sample()

    def sample(self) -> None:
        for name, cid in list(self.containers.items()):
            with suppress(OSError, ValueError):
                working_set, charged, oom_kills = read_memory(cid)
                peak = self.peaks[name]
                peak.working_set = max(peak.working_set, working_set)
                peak.charged = max(peak.charged, charged)
                self.oom_kills[name] = max(self.oom_kills[name], oom_kills)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()


def read_memory(cid: str) -> tuple[int, int, int]:
    """(working set, charged high-water mark, OOM kills) of a container."""
    v1 = Path("/sys/fs/cgroup/memory/docker") / cid
    if v1.is_dir():
        stat = dict(line.split() for line in (v1 / "memory.stat").read_text().splitlines())
        usage = int((v1 / "memory.usage_in_bytes").read_text())
        oom = dict(line.split() for line in (v1 / "memory.oom_control").read_text().splitlines())
        return (usage - int(stat.get("total_inactive_file", 0)), int((v1 / "memory.max_usage_in_bytes").read_text()),
                int(oom.get("oom_kill", 0)))
    v2 = Path("/sys/fs/cgroup/system.slice") / f"docker-{cid}.scope"
    stat = dict(line.split() for line in (v2 / "memory.stat").read_text().splitlines())
    usage = int((v2 / "memory.current").read_text())
    peak_file = v2 / "memory.peak"
    events = dict(line.split() for line in (v2 / "memory.events").read_text().splitlines())
    return (usage - int(stat.get("inactive_file", 0)), int(peak_file.read_text()) if peak_file.exists() else usage,
            int(events.get("oom_kill", 0)))


def check_limits_applied(stack: Stack, containers: dict[str, str], result: FileResult) -> None:
    """--compatibility turned deploy.resources.limits into the containers'
    own limits (without it compose 1.29 silently ignores them)."""
    for name, limit in compose_limits(stack.path).items():
        host = inspect(containers[name])["HostConfig"]
        result.limits[name] = limit.memory_bytes
        if host["Memory"] != limit.memory_bytes or host["NanoCpus"] != round(limit.cpus * 1e9):
            result.problems.append(f"{name}: limits not applied (memory {host['Memory']}, NanoCpus {host['NanoCpus']})")


def kill_and_wait_back(stack: Stack, service: str, result: FileResult) -> str:
    """SIGKILL, as a crash: the restart policy must start it again and its
    healthcheck pass again. Returns the (same) container id.

    The signal goes to the container's main process from the host, by its
    PID: ``docker kill -s KILL`` would not test the policy, because Docker
    counts a kill through its API as a manual stop, and ``unless-stopped``
    then leaves the container down (as after ``docker stop``)."""
    cid = stack.container(service)
    before = inspect(cid)
    os.kill(before["State"]["Pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    log.info("SIGKILLed %s's PID 1 (host pid %d; restarts so far: %d)", service, before["State"]["Pid"],
             before["RestartCount"])
    state = before

    def back_and_healthy() -> bool:
        nonlocal state
        state = inspect(cid)
        running = state["State"]["Running"] and state["State"]["StartedAt"] != before["State"]["StartedAt"]
        if running and not result.restart_seconds:
            result.restart_seconds = time.monotonic() - killed_at
            log.info("%s running again after %.1f s (restart count %d)", service, result.restart_seconds,
                     state["RestartCount"])
        return bool(running and (state["State"].get("Health") or {}).get("Status") == "healthy")

    wait_until(back_and_healthy, timeout=RESTART_TIMEOUT, what=f"{service} back and healthy after SIGKILL",
               interval=0.25, on_timeout=lambda: f"last state: {state['State']}")
    result.healthy_again_seconds = time.monotonic() - killed_at
    log.info("%s healthy again after %.1f s", service, result.healthy_again_seconds)
    return cid


def answers(backend: Backend) -> bool:
    return backend.http.get("/payments-summary").status_code == 200


def load_and_kill(stack: Stack, processors: Processors, containers: dict[str, str], result: FileResult) -> None:
    """A few hundred payments through every published nginx while one
    container is SIGKILLed and comes back; then every invariant."""
    backends = [Backend(f"http://127.0.0.1:{port}") for port in stack.published_ports()]
    for backend in backends:
        wait_until(partial(answers, backend), timeout=60, what=f"{backend.http.base_url} to answer", interval=0.3,
                   ignoring=UNANSWERED)
    processors.reset()
    target = KILL_TARGETS.get(stack.path.name) or next(
        n for n, s in stack.services.items() if "services.consumer" in " ".join(s.get("command", [])))
    result.killed = target
    load = Load([str(b.http.base_url).rstrip("/") for b in backends], per_second=LOAD_RATE, concurrency=LOAD_WORKERS)
    load.start()
    try:
        time.sleep(LOAD_BEFORE_KILL)
        kill_and_wait_back(stack, target, result)
        time.sleep(LOAD_AFTER_RESTART)
    finally:
        load.stop()
    log.info("load: %d accepted, %d refused, %d unanswered; statuses %s", len(load.accepted), len(load.refused),
             len(load.unanswered), dict(load.statuses()))
    with timed("verify (exactly-once, summaries)"):
        result.verdict = verify(load, backends, processors, drain_timeout=120)
    result.problems.extend(result.verdict.problems())


def check_file(path: Path) -> FileResult:
    """Everything for one compose file; ``down -v`` whatever happens (before
    the stand-ins go: the consumer holds their network)."""
    result = FileResult(file=path.name)
    started = time.monotonic()
    stack = Stack(path)
    stack.write_override()
    stack.compose("config", "--quiet", capture=True)
    with timed(f"{path.name}: build") as took:
        stack.build()
    result.build_seconds = took["seconds"]
    with processor_stand_ins(stack.app_image) as processors:
        try:
            exercise(stack, processors, result)
        except Exception as exc:  # reported, and the stack still goes down
            log.exception("%s failed", path.name)
            result.problems.append(f"{type(exc).__name__}: {exc}")
            dump_diagnostics(stack)
        finally:
            with timed(f"{path.name}: down -v") as took:
                stack.compose("down", "-v", "--remove-orphans", check=False, capture=True)
            result.down_seconds = took["seconds"]
    result.total_seconds = time.monotonic() - started
    return result


def exercise(stack: Stack, processors: Processors, result: FileResult) -> None:
    """Up, healthy, limits applied, load with one SIGKILL, memory and OOM."""
    with timed(f"{stack.path.name}: up -d, every service healthy") as took:
        stack.compose("up", "-d", "--no-build", capture=True)
        containers = stack.containers()
        wait_healthy(containers)
    result.healthy_seconds = took["seconds"]
    check_limits_applied(stack, containers, result)
    sampler = MemorySampler(stack, containers)
    sampler.start()
    try:
        load_and_kill(stack, processors, containers, result)
        wait_healthy(containers, 60)
    finally:
        sampler.stop()
    result.peaks = sampler.peaks
    for name, cid in containers.items():
        if inspect(cid)["State"]["OOMKilled"] or sampler.oom_kills[name]:
            result.oom_killed.append(name)
        if sampler.peaks[name].working_set >= result.limits.get(name, 1 << 62):
            result.problems.append(f"{name}: working set reached its limit")
    if result.oom_killed:
        result.problems.append(f"OOM kills in {result.oom_killed}")


def dump_diagnostics(stack: Stack) -> None:
    """The last lines of every service's log and its last health probes."""
    with suppress(Exception):
        stack.compose("ps", check=False)
        stack.compose("logs", "--no-color", "--tail", "30", check=False)
        for name, cid in stack.containers().items():
            health = inspect(cid)["State"].get("Health") or {}
            for probe in health.get("Log", [])[-2:]:
                log.error("%s probe exit %s: %s", name, probe.get("ExitCode"), probe.get("Output", "").strip()[:300])


# ---- the report -------------------------------------------------------------------

def mb(value: int) -> str:
    return f"{value / 1024**2:.1f}"


def report(results: Sequence[FileResult], total_seconds: float) -> str:
    lines = []
    for r in results:
        v = r.verdict
        lines.append(f"== {r.file}: {'OK' if not r.problems else 'FAILED'}")
        lines.append(f"   build {r.build_seconds:.1f} s, up -d to every service healthy {r.healthy_seconds:.1f} s, "
                     f"down -v {r.down_seconds:.1f} s, whole file {r.total_seconds:.1f} s")
        if v is not None:
            lines.append(f"   payments: {v.accepted} accepted ({v.refused} refused, {v.unanswered} unanswered), "
                         f"{v.processed} processed, lost {v.lost}, duplicates {v.double}, "
                         f"ledger mismatches {v.ledger_mismatches}, summary inconsistencies {v.inconsistencies} "
                         f"({v.summaries_compared} compared)")
        lines.append(f"   SIGKILL {r.killed}: running again after {r.restart_seconds:.1f} s, "
                     f"healthy after {r.healthy_again_seconds:.1f} s")
        lines.append(f"   OOM kills: {len(r.oom_killed)}")
        lines.append(f"   {'service':<16}{'peak MB':>9}{'charged MB':>12}{'limit MB':>10}")
        for name, peak in sorted(r.peaks.items()):
            lines.append(f"   {name:<16}{mb(peak.working_set):>9}{mb(peak.charged):>12}{mb(r.limits.get(name, 0)):>10}")
        lines.extend(f"   PROBLEM: {p}" for p in r.problems)
    lines.append(f"total {total_seconds:.0f} s")
    return "\n".join(lines)


def compose_files() -> list[Path]:
    return sorted(REPO.glob("docker-compose*.yml"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compose_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="compose files (default: every docker-compose*.yml)")
    parser.add_argument("--keep-images", action="store_true",
                        help=f"keep the daemon's data root ({DATA_ROOT}) for a faster next run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if os.geteuid() != 0:
        os.execvp("sudo", ["sudo", "-E", sys.executable, "-m", "tools.compose_check", *(argv or sys.argv[1:])])
    started = time.monotonic()
    files = [f.resolve() for f in args.files] or compose_files()
    WORK.mkdir(parents=True, exist_ok=True)
    ensure_packages()
    daemon = Daemon()
    results: list[FileResult] = []
    try:
        daemon.start()
        build_base_images(needed_images(files), apt_mirror())
        for path in files:
            results.append(check_file(path))
    finally:
        daemon.stop(keep_data=args.keep_images)
    text = report(results, time.monotonic() - started)
    print(text, flush=True)
    return 0 if results and not any(r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
