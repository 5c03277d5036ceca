"""tools.stack.Supervisor (``make run``'s restart: unless-stopped) on a fake
stack and a fake clock, one real process, and the reader the api's /stats uses
(services/common/supervision.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common import supervision
from tools.stack import StackError, Supervisor, describe_exit


class FakeProc:
    """A Popen as the supervisor sees it: ``poll()`` and ``pid``."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.pid = 0

    def poll(self) -> int | None:
        return self.returncode


class FakeStack:
    def __init__(self, *names: str) -> None:
        self.procs = {name: FakeProc() for name in names}
        self.fail_starts: dict[str, int] = {}  # name -> how many starts still fail
        self.started: list[str] = []
        self.killed: list[str] = []

    def restart(self, name: str) -> None:
        self.started.append(name)
        self.procs[name] = FakeProc()
        if self.fail_starts.get(name):
            self.fail_starts[name] -= 1
            self.procs[name].returncode = 1
            raise StackError(f"{name} did not come up within 15s\nlog tail")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.killed.append(name)

    def die(self, name: str, code: int = -9) -> None:
        self.procs[name].returncode = code


def make(stack: FakeStack, tmp_path: Path | None = None) -> tuple[Supervisor, list[str]]:
    lines: list[str] = []
    status = tmp_path / "supervisor.json" if tmp_path else None
    return Supervisor(stack, status, log=lines.append, now=0.0), lines


def test_a_dead_service_restarts_after_the_first_delay_and_is_counted(tmp_path: Path) -> None:
    stack = FakeStack("cache", "api1", "consumer")
    supervisor, lines = make(stack, tmp_path)
    assert json.loads((tmp_path / "supervisor.json").read_text())["restarts"] == {"api1": 0, "cache": 0, "consumer": 0}
    stack.die("consumer")
    assert supervisor.poll_once(10.0) == []  # noticed, not yet due
    assert lines == ["supervisor: consumer exited (signal SIGKILL); restarts so far 0, failures in a row 1; "
                     "restarting in 0.5s"]
    assert supervisor.poll_once(10.4) == []
    assert supervisor.poll_once(10.5) == ["consumer"]
    assert stack.started == ["consumer"] and stack.procs["consumer"].poll() is None
    status = json.loads((tmp_path / "supervisor.json").read_text())
    assert status["restarts"] == {"api1": 0, "cache": 0, "consumer": 1}
    assert isinstance(status["updatedAt"], int)
    assert supervisor.exits["consumer"] == 1
    assert supervision.restarts(str(tmp_path / "supervisor.json")) == {"api1": 0, "cache": 0, "consumer": 1}


def test_the_backoff_doubles_to_the_cap_and_resets_once_the_service_stayed_up() -> None:
    stack = FakeStack("cache")
    supervisor, _ = make(stack)
    now, waits = 0.0, []
    for _ in range(9):  # crashes right after every start
        stack.die("cache", 3)
        supervisor.poll_once(now)
        due = supervisor.due["cache"]
        waits.append(due - now)
        now = due
        assert supervisor.poll_once(now) == ["cache"]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    now += 30  # up 30 s: stable
    supervisor.poll_once(now)
    stack.die("cache")
    supervisor.poll_once(now + 1)
    assert supervisor.due["cache"] - (now + 1) == 0.5
    assert supervisor.restarts["cache"] == 9


def test_a_stable_service_is_forgiven_even_if_its_exit_is_first_seen_late() -> None:
    """No poll between the start and the exit 40 s later: still a first failure."""
    stack = FakeStack("api1")
    supervisor, _ = make(stack)
    supervisor.failures["api1"] = 5
    stack.die("api1")
    supervisor.poll_once(40.0)
    assert supervisor.due["api1"] == 40.5


def test_a_failed_start_is_one_more_failure_with_a_longer_delay_never_the_supervisors_end() -> None:
    stack = FakeStack("cache", "api1")
    stack.fail_starts["cache"] = 2
    supervisor, lines = make(stack)
    stack.die("cache", 1)
    supervisor.poll_once(0.0)
    assert supervisor.poll_once(0.5) == []  # start failed
    assert supervisor.due["cache"] == 0.5 + 1.0 and "failed to start (cache did not come up within 15s)" in lines[-1]
    assert stack.killed == ["cache"]  # whatever the failed start left running is ended
    assert supervisor.poll_once(1.5) == []
    assert supervisor.due["cache"] == 1.5 + 2.0
    assert supervisor.poll_once(3.5) == ["cache"]
    assert supervisor.restarts == {"cache": 1, "api1": 0}
    assert supervisor.exits == {"cache": 1, "api1": 0}  # failed starts are not exits


def test_a_process_replaced_by_someone_else_is_watched_not_counted() -> None:
    """Chaos kills and restarts services itself; the supervisor only counts its own restarts."""
    stack = FakeStack("nginx")
    supervisor, _ = make(stack)
    stack.procs["nginx"] = FakeProc()
    assert supervisor.poll_once(1.0) == []
    assert supervisor.restarts == {"nginx": 0} and supervisor.exits == {"nginx": 0}
    stack.die("nginx", 0)
    supervisor.poll_once(2.0)
    assert supervisor.poll_once(2.5) == ["nginx"]


def test_exits_are_described_as_codes_or_signals() -> None:
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-15) == "signal SIGTERM"
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-200) == "signal 200"


def test_a_real_process_killed_is_restarted(tmp_path: Path) -> None:
    class OneProcess:
        def __init__(self) -> None:
            self.procs: dict[str, subprocess.Popen[bytes]] = {"sleeper": self.spawn()}

        @staticmethod
        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

        def restart(self, name: str) -> None:
            self.procs[name] = self.spawn()

        def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
            self.procs[name].send_signal(sig)

    stack = OneProcess()
    first = stack.procs["sleeper"]
    supervisor = Supervisor(stack, tmp_path / "s.json", first_delay=0.05, log=lambda _: None)
    try:
        first.kill()
        first.wait()
        supervisor.run(interval=0.02, until=lambda: supervisor.restarts["sleeper"] >= 1)
        assert stack.procs["sleeper"] is not first and stack.procs["sleeper"].poll() is None
        assert supervision.restarts(str(tmp_path / "s.json")) == {"sleeper": 1}
    finally:
        stack.procs["sleeper"].kill()
        stack.procs["sleeper"].wait()


@pytest.mark.parametrize("content", [None, b"", b"not json", b"[]", b'{"restarts": 3}', b'{"other": {}}'])
def test_the_reader_never_raises(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "supervisor.json"
    if content is not None:
        path.write_bytes(content)
    assert supervision.restarts(str(path)) == {}


def test_the_reader_without_a_path_and_with_odd_counts(tmp_path: Path) -> None:
    assert supervision.restarts(None) == {} and supervision.restarts("") == {}
    assert supervision.restarts(str(tmp_path)) == {}  # a directory
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"restarts": {"cache": 2, "api1": "x", "api2": True, "nginx": -1}}))
    assert supervision.restarts(str(path)) == {"cache": 2}
