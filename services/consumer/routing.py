"""Which processor a payment goes to, and how many may start now.

The strategy is named and configurable (``ROUTING_STRATEGY``):

- ``patient`` (default): only ever use the default processor. When it is down,
  hold the queue and send a single probe at a time until it answers again; the
  backlog then drains at full speed. Every payment pays the 5% fee, never 15%.
- ``failover``: default while it works; when it is down and fallback is up, use
  fallback (faster to clear, 10 points more fee on what goes there).

A processor is believed down after a definite failure or a failing health
report, and up again after a success or a healthy report, whichever is newest.

How many payments may start is counted in ``Permit``s: the consumer's loop
asks for them before it dequeues (``Router.grant``), gives back those it has
no payment for, and hands each payment's permit to its job, which gives it
back when it ends. A permit is given back once, by whoever holds it last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

STRATEGIES = ("patient", "failover")


@dataclass(slots=True)
class ProcessorState:
    name: str
    down: bool = False
    min_response_time_ms: int = 0
    health_failing: bool = False
    health_checked_at_ms: int = 0
    last_outcome_at: float = 0.0

    def record_success(self) -> None:
        self.down = False
        self.last_outcome_at = time.monotonic()

    def record_failure(self) -> None:
        self.down = True
        self.last_outcome_at = time.monotonic()

    def record_health(self, failing: bool, min_response_time_ms: int, checked_at_ms: int) -> None:
        self.health_failing = failing
        self.min_response_time_ms = min_response_time_ms
        self.health_checked_at_ms = checked_at_ms
        self.down = failing


class Permit:
    """Leave for one payment to start, granted by ``Router.grant``."""

    __slots__ = ("_router",)

    def __init__(self, router: Router) -> None:
        self._router: Router | None = router

    def release(self) -> None:
        """Give the permit back (once; later calls do nothing)."""
        router, self._router = self._router, None
        if router is not None:
            router._returned()


class Router:
    def __init__(self, strategy: str, states: dict[str, ProcessorState], *,
                 probe_interval_seconds: float = 0.1) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown routing strategy {strategy!r}")
        self.strategy = strategy
        self.states = states
        self.probe_interval = probe_interval_seconds
        self._outstanding = 0
        self._changed = asyncio.Event()

    def target(self) -> str:
        """The processor the next payment should go to."""
        default, fallback = self.states["default"], self.states["fallback"]
        if self.strategy == "failover" and default.down and not fallback.down:
            return "fallback"
        return "default"

    def usable(self) -> bool:
        return not self.states[self.target()].down

    def grant(self, wanted: int) -> list[Permit]:
        """Permits for the payments that may be taken now: all ``wanted`` when
        a usable processor is up, otherwise one probe at a time, spaced by
        ``probe_interval``."""
        if wanted <= 0:
            return []
        if self.usable():
            granted = wanted
        else:
            state = self.states[self.target()]
            idle = time.monotonic() - state.last_outcome_at >= self.probe_interval
            granted = 1 if self._outstanding == 0 and idle else 0
        self._outstanding += granted
        return [Permit(self) for _ in range(granted)]

    @property
    def outstanding(self) -> int:
        """Permits granted and not given back."""
        return self._outstanding

    def _returned(self) -> None:
        self._outstanding -= 1
        self._changed.set()

    def outcome(self, processor: str, ok: bool) -> None:
        state = self.states[processor]
        was_down = state.down
        if ok:
            state.record_success()
        else:
            state.record_failure()
        if was_down != state.down:
            self._changed.set()

    def health(self, processor: str, failing: bool, min_response_time_ms: int,
               checked_at_ms: int) -> None:
        self.states[processor].record_health(failing, min_response_time_ms, checked_at_ms)
        self._changed.set()

    async def wait_for_change(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
