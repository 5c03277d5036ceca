"""Process-level tuning shared by every service."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Coroutine
from typing import Any

from services.common.config import env_choice, env_int

LOOPS = ("uvloop", "asyncio")
POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH}


def set_cpu_policy(name: str) -> None:
    """``batch``: this process never preempts another when it wakes up; it
    waits for the running one's time slice. For work that can wait a few
    milliseconds (the consumer, the cache) so that it never delays the request
    path; its share of the CPU is unchanged. No privilege is needed to lower a
    policy. Applied to every thread already running; later ones inherit it."""
    policy = POLICIES[name]
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setscheduler(int(task), policy, os.sched_param(0))


def run(main: Coroutine[Any, Any, None], *, default_loop: str, default_policy: str = "normal") -> None:
    """Run a service on the event loop ``EVENT_LOOP`` names (uvloop or asyncio),
    under the CPU scheduling policy ``CPU_POLICY`` names."""
    set_cpu_policy(env_choice("CPU_POLICY", default_policy, tuple(POLICIES)))
    loop = env_choice("EVENT_LOOP", default_loop, LOOPS)
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def settle_after_startup() -> None:
    """Freeze what start-up allocated (modules, stubs, config) into the
    permanent generation, so later collections never walk it, and apply
    ``GC_GEN0_THRESHOLD`` (Python's default is 700 allocations)."""
    gc.collect()
    gc.freeze()
    threshold = env_int("GC_GEN0_THRESHOLD", 700, minimum=100, maximum=10_000_000)
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
