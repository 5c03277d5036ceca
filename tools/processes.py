"""Child processes we start (servers for the tests and tools): waiting until
one is ready, and stopping it with SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def stop(proc: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """Ask ``proc`` to stop (SIGTERM); kill it if it has not within the grace
    period. Returns once it is gone (reaped)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DidNotStart(RuntimeError):
    """A server we started exited, or did not become ready in time."""


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, name: str, timeout: float,
                 log: Path | None = None, every: float = 0.05) -> None:
    """Return once ``ready()``; if ``proc`` exits first or ``timeout`` passes,
    stop it and raise ``DidNotStart`` with the end of its log."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            stop(proc)
            raise DidNotStart(f"{name} did not come up:\n{tail}")
        time.sleep(every)
