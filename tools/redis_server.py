"""A real ``redis-server`` (Debian's) for tests, the local stack and benchmarks:
on a unix socket in a directory of its own, with AOF on, no TCP port.

    with RedisServer(Path(tmp)) as redis:
        redis.url   # unix:///tmp/.../redis.sock
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from tools import processes

APPENDFSYNC_POLICIES = ("everysec", "always", "no")


class RedisNotInstalled(RuntimeError):
    """redis-server is missing; ``make install`` gets it with apt-get."""


def redis_binary() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                             if os.path.exists("/usr/bin/redis-server") else None)
    if found is None:
        raise RedisNotInstalled("redis-server is not installed (make install gets it with apt-get)")
    return found


class RedisServer:
    def __init__(self, directory: Path, *, appendfsync: str = "everysec", port: int = 0) -> None:
        if appendfsync not in APPENDFSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC_POLICIES}")
        self.directory = directory
        self.appendfsync = appendfsync
        self.port = port  # 0: unix socket only
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    def argv(self) -> list[str]:
        return [redis_binary(), "--dir", str(self.directory), "--port", str(self.port),
                "--bind", "127.0.0.1", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                "--appendonly", "yes", "--appendfsync", self.appendfsync,
                # The AOF is the durability; no RDB snapshots on top of it.
                "--save", "", "--logfile", str(self.log), "--daemonize", "no",
                "--pidfile", str(self.directory / "redis.pid")]

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            processes.wait_started(self.proc, self.ready, name="redis-server", timeout=timeout, log=self.log,
                                   every=0.02)
        except processes.DidNotStart:
            self.proc = None
            raise
        return self

    def ready(self) -> bool:
        """Answering PING (after loading its AOF)."""
        if not self.socket.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(0.5)
                sock.connect(str(self.socket))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        processes.stop(self.proc, grace_seconds=10)
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
