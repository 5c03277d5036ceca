"""Small real disks that fill up, for ``make chaos``'s disk class and the
tests: a tmpfs mounted on a directory (root only), and a filler file that takes
every free byte of it until it is deleted. A full tmpfs fails ``write``,
``fallocate`` and page faults exactly as a full disk does."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def cannot_mount() -> str | None:
    """Why a tmpfs cannot be mounted here, or None when it can."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs the tests as root)"
    return None


def mount_tmpfs(directory: Path, size: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                   check=True, capture_output=True, text=True)


def unmount(directory: Path) -> None:
    """umount; if something still holds a file there (a test that failed
    half-way), detach it now and let it go when released."""
    if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


@contextlib.contextmanager
def tmpfs_mounts(directories: list[Path], size: str) -> Iterator[list[Path]]:
    """Each directory a fresh tmpfs of ``size`` for as long as the block runs
    (whatever runs on them must stop before it ends)."""
    mounted: list[Path] = []
    try:
        for directory in directories:
            mount_tmpfs(directory, size)
            mounted.append(directory)
        yield mounted
    finally:
        for directory in reversed(mounted):
            unmount(directory)


def fill(filler: Path) -> int:
    """Append to ``filler`` until its filesystem has no byte left; returns how
    many it took. Writes halve down to one byte, so nothing is left over
    whatever else writes there meanwhile; call again to take what was freed,
    delete the file to give the room back."""
    taken = 0
    chunk = 1 << 20
    with filler.open("ab", buffering=0) as file:
        while chunk:
            try:
                taken += file.write(bytes(chunk)) or 0
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                chunk //= 2
    return taken
