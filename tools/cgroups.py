"""Run local services inside the CPU and memory limits docker-compose.yml
declares, with cgroup v1 (no Docker engine needed), and read back what they used.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "memory")
PERIOD_US = 100_000
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


@dataclass(frozen=True, slots=True)
class ResourceLimit:
    """The CPU and memory one service may use (its compose ``deploy.resources.limits``)."""

    cpus: float
    memory_bytes: int
    shares: int = 1024  # relative CPU weight under contention (compose: cpu_shares)
    cpuset: frozenset[int] | None = None  # CPUs it may run on (compose: cpuset); None: any


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_seconds: float
    periods: int
    throttled_periods: int
    throttled_seconds: float
    peak_memory_bytes: int

    def since(self, earlier: Usage) -> Usage:
        """What was used after ``earlier`` (the peak stays absolute)."""
        return Usage(cpu_seconds=self.cpu_seconds - earlier.cpu_seconds,
                     periods=self.periods - earlier.periods,
                     throttled_periods=self.throttled_periods - earlier.throttled_periods,
                     throttled_seconds=self.throttled_seconds - earlier.throttled_seconds,
                     peak_memory_bytes=self.peak_memory_bytes)

    @property
    def throttled_share(self) -> float:
        return self.throttled_periods / self.periods if self.periods else 0.0


def parse_memory(text: str | int) -> int:
    """Docker's units: b, k, m, g are powers of 1024."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_cpuset(text: str | int) -> frozenset[int]:
    """Docker's cpuset syntax: "0", "0,1", "0-3"."""
    cpus: set[int] = set()
    for part in str(text).split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"not a cpuset: {text!r}")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def compose_limits(compose_file: Path) -> dict[str, ResourceLimit]:
    import yaml  # a dev dependency: only the benchmark and the tests read compose

    services = yaml.safe_load(compose_file.read_text())["services"]
    limits: dict[str, ResourceLimit] = {}
    for name, service in services.items():
        declared = service["deploy"]["resources"]["limits"]
        cpuset = service.get("cpuset")
        limits[name] = ResourceLimit(float(declared["cpus"]), parse_memory(declared["memory"]),
                             int(service.get("cpu_shares", 1024)),
                             parse_cpuset(cpuset) if cpuset is not None else None)
    return limits


def available() -> bool:
    return all(os.access(ROOT / c, os.W_OK) for c in CONTROLLERS)


class Cgroup:
    def __init__(self, name: str, limit: ResourceLimit, parent: str = "rinha") -> None:
        self.name = name
        self.limit = limit
        self.dirs = {c: ROOT / c / parent / name for c in CONTROLLERS}

    def create(self) -> Cgroup:
        for directory in self.dirs.values():
            directory.mkdir(parents=True, exist_ok=True)
        (self.dirs["cpu"] / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(int(self.limit.cpus * PERIOD_US)))
        (self.dirs["cpu"] / "cpu.shares").write_text(str(self.limit.shares))
        (self.dirs["memory"] / "memory.limit_in_bytes").write_text(str(self.limit.memory_bytes))
        return self

    def enter(self) -> None:
        """Move the calling process in (use as a Popen ``preexec_fn``). A
        cpuset is applied as CPU affinity, which threads and children inherit:
        the effect of docker's cpuset without the cpuset controller."""
        pid = str(os.getpid())
        for directory in self.dirs.values():
            (directory / "cgroup.procs").write_text(pid)
        if self.limit.cpuset is not None:
            os.sched_setaffinity(0, self.limit.cpuset)

    def usage(self) -> Usage:
        stat = dict(line.split() for line in (self.dirs["cpu"] / "cpu.stat").read_text().splitlines())
        return Usage(
            cpu_seconds=int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9,
            periods=int(stat.get("nr_periods", 0)),
            throttled_periods=int(stat.get("nr_throttled", 0)),
            throttled_seconds=int(stat.get("throttled_time", 0)) / 1e9,
            peak_memory_bytes=int((self.dirs["memory"] / "memory.max_usage_in_bytes").read_text()),
        )

    def remove(self) -> None:
        for directory in self.dirs.values():
            try:
                directory.rmdir()
            except OSError:
                pass  # still has a process in it (or already gone)
