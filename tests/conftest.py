"""Fixtures shared by the unit and the integration tests: small real
filesystems that fill up (``small_disk``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tools import disks


@dataclass(frozen=True)
class SmallDisk:
    """A tmpfs of a few pages: a real filesystem whose ``write``, ``fallocate``
    and page faults fail for want of space, as a full disk's do."""

    path: Path

    @property
    def filler(self) -> Path:
        return self.path / "filler"

    def fill(self) -> int:
        """Take every byte left (with a file of its own); returns how many."""
        return disks.fill(self.filler)

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
    why_not = disks.cannot_mount()
    if why_not:
        pytest.skip(why_not)
    mounted: list[Path] = []

    def mount(size: str = "1m") -> SmallDisk:
        point = base / f"disk-{len(mounted)}"
        disks.mount_tmpfs(point, size)
        mounted.append(point)
        return SmallDisk(point)

    try:
        yield mount
    finally:
        for point in reversed(mounted):
            disks.unmount(point)


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
