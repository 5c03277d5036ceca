"""``make chaos``'s classes of fault in short form (a few seconds of each),
driven through tools.chaos on a stack of this module's own: every class must
end with nothing lost, nothing charged twice, summaries equal to the
processors' and no process dead without chaos killing it.

The stack is this module's (the disk class needs the spools and the journal
on tmpfs mounts from before the start), on ports of its own (9994; stand-ins
8007/8008), so it runs beside the session stack in any order.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.chaos import CHAOS_ENV, Chaos, ChaosOptions
from tools.stack import StackConfig

pytestmark = pytest.mark.integration

SHORT = ChaosOptions(rate=100, concurrency=4, rounds=1, down=0.5, settle=1.0,
                     services=["cache", "consumer", "api1", "nginx"],
                     freeze_cache=3.0, freeze_consumer=7.0,  # past the 5 s lease all the same
                     freeze_api=2.0, disk_seconds=2.0, poison_every=5, proxy_every=4, trickle_every=5,
                     trickle_seconds=3.0, switch_seconds=3.0, drain_timeout=60.0)


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-chaos-"))
    config = StackConfig(run_dir=run_dir, port=9994, default_port=8007, fallback_port=8008,
                         env=dict(CHAOS_ENV))
    with Chaos(config, SHORT, disk=True) as running:
        yield running
    shutil.rmtree(run_dir, ignore_errors=True)


def assert_exactly_once(figures: dict[str, Any]) -> None:
    assert "error" not in figures, figures.get("error")
    assert figures["accepted"] > 100, figures
    assert (figures["lost"], figures["chargedTwice"], figures["inconsistencies"], figures["ledgerMismatches"],
            figures["died"]) == (0, 0, 0, 0, 0), figures
    assert figures["problems"] == [] and figures["ok"], figures


def window(figures: dict[str, Any], starts_with: str) -> dict[str, Any]:
    return next(one for one in figures["faults"] if one["fault"].startswith(starts_with))


def test_kill_each_service(chaos: Chaos) -> None:
    figures = chaos.run("kill")
    assert_exactly_once(figures)
    assert [one["fault"] for one in figures["faults"]] == [f"kill {name} 0.5s" for name in SHORT.services or []]


def test_freeze_cache_consumer_past_its_lease_and_an_api(chaos: Chaos) -> None:
    figures = chaos.run("freeze")
    assert_exactly_once(figures)
    assert figures["unanswered"] == 0
    # No RPC on the request path: a frozen cache or consumer does not slow intake.
    for name in ("cache", "consumer"):
        frozen = window(figures, f"freeze {name}")
        assert set(frozen["statuses"]) == {"202"} and frozen["max_latency_ms"] < 1000, frozen


def test_full_disks(chaos: Chaos) -> None:
    if chaos.disk_skipped is not None:
        pytest.skip(f"disk class cannot run here: {chaos.disk_skipped}")
    figures = chaos.run("disk")
    assert_exactly_once(figures)
    # An api restarted onto a full spool disk has no room reserved: it refuses
    # with 503, a JSON body and Retry-After, until the room comes back.
    restarted = window(figures, "spool disks full, api1 restarted")
    assert restarted["statuses"].get("503", 0) > 0 and restarted["bad_503s"] == 0, restarted
    assert figures["refused503"] > 0 and figures["refusedOther"] == 0


def test_poison_payments_end_rejected_and_uncharged(chaos: Chaos) -> None:
    figures = chaos.run("poison")
    assert_exactly_once(figures)
    verdict = figures["verdict"]
    assert verdict["poison"] > 10 and figures["rejected"] == verdict["poison"], verdict
    assert verdict["poison_charged"] == 0 and verdict["wrongly_rejected"] == 0


def test_answers_lost_by_a_proxy_still_charge_once(chaos: Chaos) -> None:
    assert_exactly_once(chaos.run("proxy"))


def test_answers_trickling_past_the_timeout_still_charge_once(chaos: Chaos) -> None:
    assert_exactly_once(chaos.run("trickle"))
