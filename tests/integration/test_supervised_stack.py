"""``make run``'s supervision on the real stack: a consumer SIGKILLed behind
everyone's back is restarted by ``Supervisor`` (tools/stack.py), counted in
RUN_DIR/supervisor.json (the file every service reads through
SUPERVISOR_STATUS), and the stack then processes payments again.

It uses the session stack (tests/integration/conftest.py): one stack per port
set at a time, and this one is already up on the test ports."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from services.common import supervision
from tools.clients import Backend, Processors
from tools.stack import Stack, Supervisor
from tools.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_killed_consumer_is_restarted_counted_and_works(clean: None, stack: Stack, backend: Backend,
                                                          processors: Processors) -> None:
    lines: list[str] = []
    supervisor = Supervisor(stack, stack.supervisor_status, first_delay=0.2, log=lines.append)
    dead = stack.procs["consumer"]
    try:
        stack.kill("consumer", signal.SIGKILL)
        deadline = time.monotonic() + 30
        supervisor.run(interval=0.1, until=lambda: supervisor.restarts["consumer"] >= 1
                       or time.monotonic() > deadline)
        assert supervisor.restarts["consumer"] == 1, lines
        assert stack.procs["consumer"] is not dead and stack.procs["consumer"].poll() is None
        assert lines[0].startswith("supervisor: consumer exited (signal SIGKILL); restarts so far 0"), lines
        status = json.loads(stack.supervisor_status.read_text())
        assert status["restarts"]["consumer"] == 1
        assert {name: count for name, count in status["restarts"].items() if name != "consumer"} \
            == dict.fromkeys(set(stack.procs) - {"consumer"}, 0)
        assert supervision.restarts(stack.service_env("api1")["SUPERVISOR_STATUS"])["consumer"] == 1

        correlation_id, response = backend.pay(12.34)
        assert response.status_code == 202
        wait_until(lambda: backend.http.get(f"/payments/{correlation_id}").json().get("state") == "processed",
                   timeout=20, what="the payment processed by the restarted consumer", ignoring=httpx.HTTPError)
        assert processors.find("default", correlation_id) or processors.find("fallback", correlation_id)
        assert supervisor.poll_once(time.monotonic()) == []  # nothing else died meanwhile
    finally:
        if stack.procs["consumer"].poll() is not None:  # leave the session stack whole for the next tests
            stack.restart("consumer")
        stack.supervisor_status.unlink(missing_ok=True)
