"""Stopping a child process we started: SIGTERM, a grace period, then SIGKILL."""

from __future__ import annotations

import subprocess


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
