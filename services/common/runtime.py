"""Process-level tuning shared by every service."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any

from services.common.config import env_choice, env_int

LOOPS = ("uvloop", "asyncio")


def run(main: Coroutine[Any, Any, None], *, default_loop: str) -> None:
    """Run a service on the event loop ``EVENT_LOOP`` names (uvloop or asyncio)."""
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
