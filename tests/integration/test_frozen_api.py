"""A frozen api (SIGSTOP, then SIGCONT) under load (issue 17): the other api
takes the traffic, a client pays at most one of nginx's read timeouts for it,
and nothing is lost or charged twice, the requests the frozen api read before
it froze and handles after it thaws included (nginx.conf: why a POST may be
replayed on the other instance)."""

from __future__ import annotations

import time

import pytest

from tools.clients import Backend, Load, Processors, verify
from tools.stack import Stack

pytestmark = pytest.mark.integration

FROZEN_SECONDS = 4.0
# nginx.conf's proxy_read_timeout for /payments (1.5 s), plus the answer of the
# other instance and a loaded machine's scheduling.
SLOWEST_ANSWER_MS = 2000


@pytest.mark.parametrize("name", ["api1", "api2"])
def test_a_frozen_api_costs_a_client_one_read_timeout_at_most(clean: None, stack: Stack, backend: Backend,
                                                              processors: Processors, name: str) -> None:
    load = Load(stack.config.base_url)
    load.start()
    time.sleep(1.0)
    frozen_at = time.monotonic()
    stack.freeze(name)
    try:
        time.sleep(FROZEN_SECONDS)
    finally:
        thawed_at = time.monotonic()
        stack.thaw(name)
    time.sleep(1.5)  # the thawed instance handles what it read before it froze
    load.stop()

    frozen = load.window(frozen_at, thawed_at)
    assert frozen.statuses == {"202": frozen.posts}, frozen  # no 5XX, none unanswered
    assert frozen.max_latency_ms < SLOWEST_ANSWER_MS, frozen
    # The other instance took the traffic. The load is one client posting in
    # turn, so each stall (the first, then one probe of the frozen instance per
    # fail_timeout) holds everything behind it: far fewer than 100 a second,
    # but far more than the one or two an unbounded wait lets through.
    assert frozen.posts > FROZEN_SECONDS * 100 / 8, frozen
    assert load.statuses() == {"202": len(load.outcomes)}, load.statuses()

    verdict = verify(load, backend, processors)
    assert not verdict.problems(), verdict.problems()
    assert verdict.accepted == len(load.outcomes)
