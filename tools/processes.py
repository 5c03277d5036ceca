"""Child processes we start (servers for the tests and tools): waiting until
one is ready, and stopping it with SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tools.waiting import NotReached, wait_until


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


def log_tail(log: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, for an error message ("" without one)."""
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def wait_started(proc: subprocess.Popen[bytes], ready: Callable[[], bool], *, name: str, timeout: float,
                 log: Path | None = None, every: float = 0.05) -> None:
    """Return once ``ready()``; if ``proc`` exits first or ``timeout`` passes,
    stop it and raise ``DidNotStart`` with the end of its log."""
    def alive_and_ready() -> bool:
        if ready():
            return True
        if proc.poll() is not None:
            raise DidNotStart(f"{name} exited with {proc.returncode} before it was ready:\n{log_tail(log)}")
        return False

    try:
        wait_until(alive_and_ready, timeout=timeout, what=f"{name} to come up", interval=every,
                   on_timeout=lambda: log_tail(log))
    except NotReached as exc:
        stop(proc)
        raise DidNotStart(str(exc)) from exc
