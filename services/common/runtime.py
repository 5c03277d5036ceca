"""Process-level tuning shared by every service."""

from __future__ import annotations

import gc

from services.common.config import env_int


def settle_after_startup() -> None:
    """Freeze what start-up allocated (modules, stubs, config) into the
    permanent generation, so later collections never walk it, and apply
    ``GC_GEN0_THRESHOLD`` (Python's default is 700 allocations)."""
    gc.collect()
    gc.freeze()
    threshold = env_int("GC_GEN0_THRESHOLD", 700, minimum=100, maximum=10_000_000)
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(threshold, gen1, gen2)
