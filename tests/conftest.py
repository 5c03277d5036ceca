"""Fixtures shared by the unit and the integration tests: small real
filesystems that fill up (``small_disk``)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class SmallDisk:
    """A tmpfs of a few pages: a real filesystem whose ``write``, ``fallocate``
    and page faults fail for want of space, as a full disk's do."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Take every byte left (with a file of its own); returns how many.

        Chunks shrink down to one byte so that nothing is left over, whatever
        else is writing to the disk at the same time."""
        taken = 0
        chunk = 1 << 16
        with self.filler.open("ab", buffering=0) as filler:
            while chunk:
                try:
                    taken += filler.write(b"\0" * chunk) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        return taken

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def available(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize


@contextlib.contextmanager
def _mounting(base: Path) -> Iterator[Callable[..., SmallDisk]]:
    """``mount(size="1m")`` mounts a tmpfs of that size under ``base`` and
    returns it; every one is unmounted on the way out. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    mounted: list[Path] = []

    def mount(size: str = "1m") -> SmallDisk:
        point = base / f"disk-{len(mounted)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                       check=True, capture_output=True)
        mounted.append(point)
        return SmallDisk(point)

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            # A process that still holds a file there (a test that failed half-way)
            # would make a plain umount fail: detach it lazily then.
            if subprocess.run(["umount", str(point)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    """Small real disks (tmpfs) for one test: ``small_disk("1m")``."""
    with _mounting(tmp_path) as mount:
        yield mount


@pytest.fixture(scope="module")
def module_small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SmallDisk]]:
    """The same for a whole module (a stack started once with its disks)."""
    with _mounting(tmp_path_factory.mktemp("disks")) as mount:
        yield mount
