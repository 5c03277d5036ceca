"""Process-level tuning shared by every service."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import os
import platform
import struct
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from services.common import logs
from services.common.config import env_choice, env_int, load_or_exit

LOOPS = ("uvloop", "asyncio")
POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH}
_SYS_SCHED_SETATTR = 314  # x86_64


def set_cpu_policy(name: str) -> None:
    """``batch``: this process never preempts another when it wakes up; it
    waits for the running one's time slice. For work that can wait a few
    milliseconds (the consumer, the cache) so that it never delays the request
    path; its share of the CPU is unchanged. No privilege is needed to lower a
    policy. Applied to every thread already running; later ones inherit it.
    Where a sandbox forbids the call (a strict seccomp profile) the service
    runs under the default policy rather than not at all."""
    policy = POLICIES[name]
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setscheduler(int(task), policy, os.sched_param(0))


def set_cpu_slice(microseconds: int) -> bool:
    """Ask the scheduler for a shorter time slice for this thread.

    With EEVDF (Linux 6.12 and later) a task's slice sets its virtual deadline:
    a short slice lets a task that wakes for a few microseconds of work run
    before a CPU hog's slice ends, instead of waiting it out. No privilege is
    needed; the CPU share is unchanged. Returns False where the kernel does not
    support it (the service then runs with the default slice)."""
    if microseconds <= 0 or sys.platform != "linux" or platform.machine() != "x86_64":
        return False
    attr = ctypes.create_string_buffer(struct.pack(
        "IIQiIQQQII", 56, os.SCHED_OTHER, 0, 0, 0, microseconds * 1000, 0, 0, 0, 0))
    return int(_libc().syscall(_SYS_SCHED_SETATTR, 0, attr, 0)) == 0


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Tuning:
    """How a service's process runs: event loop, CPU policy and slice, GC, log level.

    Read and checked with the service's own settings, before anything starts,
    so that a bad value stops start-up with the same one-line message. The GC
    threshold and the log level are only checked here: they are applied later,
    where they belong (``settle_after_startup``, ``logs.setup``), by the same
    readers."""

    loop: str
    policy: str
    slice_us: int

    @classmethod
    def from_env(cls, *, default_loop: str, default_policy: str = "normal",
                 default_slice_us: int = 0) -> Tuning:
        gc_gen0_threshold()
        logs.level()
        return cls(loop=env_choice("EVENT_LOOP", default_loop, LOOPS),
                   policy=env_choice("CPU_POLICY", default_policy, tuple(POLICIES)),
                   slice_us=env_int("CPU_SLICE_US", default_slice_us, minimum=0, maximum=100_000))


def run(main: Callable[[], Coroutine[Any, Any, None]], service: str, *, default_loop: str,
        default_policy: str = "normal", default_slice_us: int = 0) -> None:
    """Run ``main()`` on the event loop ``EVENT_LOOP`` names (uvloop or asyncio),
    under the CPU scheduling policy ``CPU_POLICY`` names, with the time slice
    ``CPU_SLICE_US`` asks for (0: the kernel's default)."""
    tuning = load_or_exit(lambda: Tuning.from_env(default_loop=default_loop, default_policy=default_policy,
                                                  default_slice_us=default_slice_us), service)
    set_cpu_policy(tuning.policy)
    if tuning.policy == "normal":
        set_cpu_slice(tuning.slice_us)
    if tuning.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def gc_gen0_threshold() -> int:
    return env_int("GC_GEN0_THRESHOLD", 700, minimum=100, maximum=10_000_000)


def settle_after_startup() -> None:
    """Freeze what start-up allocated (modules, stubs, config) into the
    permanent generation, so later collections never walk it, and apply
    ``GC_GEN0_THRESHOLD`` (Python's default is 700 allocations)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gc_gen0_threshold(), gen1, gen2)
