"""The soak benchmark at a tiny size, so that it cannot rot: it runs, its rows
add up, and the index stops growing once the retention has passed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loadtest import soak


def test_the_memory_soak_runs_and_its_index_is_flat_past_the_retention(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    # 1,000 payments per simulated hour and a one-hour retention: about 1,000 in the index.
    rows = soak.run(soak.parse_args(["--millions", "0.006", "--batch", "250", "--report-every", "1500",
                                     "--per-hour", "1000", "--retention-hours", "1", "--compact-mb", "1",
                                     "--json", str(out)]))
    assert [row.payments for row in rows] == [1500, 3000, 4500, 6000]
    assert all(row.ledger_buckets == row.payments for row in rows)  # one millisecond each
    assert all(row.index_ids <= 1000 + 250 for row in rows[1:])
    assert all(row.restart_s > 0 and row.restart_rss_mb > 0 and row.journal_mb > 0 for row in rows)
    assert all(row.snapshot_mb > 0 and row.snapshot_restart_s > 0 for row in rows)
    assert json.loads(out.read_text())["rows"][-1]["payments"] == 6000


@pytest.mark.skipif(shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists(),
                    reason="redis-server is not installed")
def test_the_redis_soak_runs(tmp_path: Path) -> None:
    rows = soak.run(soak.parse_args(["--store", "redis", "--millions", "0.002", "--batch", "500",
                                     "--report-every", "1000", "--redis-retention-s", "60"]))
    assert [row.payments for row in rows] == [1000, 2000]
    assert rows[-1].index_ids == 2000 and rows[-1].rss_mb > 0


def test_report_every_must_be_whole_batches() -> None:
    with pytest.raises(SystemExit):
        soak.parse_args(["--batch", "300", "--report-every", "1000"])
