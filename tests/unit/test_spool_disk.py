"""The spool on a disk that fills up (a real tmpfs): a payment that cannot be
stored is refused (``SpoolUnavailable``), never a SIGBUS, nothing stored
before is lost, and appends work again once there is room.

The spool runs in a child process: a SIGBUS there fails the test with its
signal instead of killing pytest."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.api.spool import Spool

if TYPE_CHECKING:
    from conftest import SmallDisk  # tests/conftest.py

REPO = Path(__file__).resolve().parents[2]

# Appends until the disk refuses, frees it, appends again; no close(): the
# process "dies" with its spool open, as a killed api would.
FILL_THEN_FREE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from services.api.spool import Spool, SpoolUnavailable
    sys.path.insert(0, sys.argv[3])
    from conftest import SmallDisk

    disk, spool_dir = SmallDisk(Path(sys.argv[1])), Path(sys.argv[2])
    spool = Spool(spool_dir, max_pending=10**6, initial_bytes=1 << 14)
    disk.fill()
    stored, refusals = [], []
    for i in range(100_000):
        try:
            spool.append(f"before-{i:08d}", i + 1)
            stored.append(i)
        except SpoolUnavailable as exc:
            refusals.append(exc.reason)
            if len(refusals) == 3:  # and again: still refused, still alive
                break
    disk.free()
    for i in range(2_000):  # well past the room reserved before the disk filled
        spool.append(f"after-{i:08d}", i + 1)
    print(json.dumps({"stored": len(stored), "refusals": refusals}))
""")


def run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, *args, str(REPO / "tests")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def assert_survived(child: subprocess.CompletedProcess[str]) -> dict[str, object]:
    if child.returncode < 0:
        raise AssertionError(f"the spool's process died of {signal.Signals(-child.returncode).name}: "
                             f"{child.stderr[-2000:]}")
    assert child.returncode == 0, child.stderr[-2000:]
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_a_full_disk_refuses_payments_and_keeps_every_one_stored(
        small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("1m")
    spool_dir = disk.path / "spool"
    outcome = assert_survived(run_child(FILL_THEN_FREE, str(disk.path), str(spool_dir)))
    stored = outcome["stored"]
    assert isinstance(stored, int) and stored > 0  # the reserved room was used up first
    assert outcome["refusals"] == ["No space left on device"] * 3
    replayed = Spool(spool_dir, max_pending=10**6, initial_bytes=1 << 12).take_unsent(10**6)
    expected = ([(f"before-{i:08d}", i + 1) for i in range(stored)]
                + [(f"after-{i:08d}", i + 1) for i in range(2_000)])
    assert [(p.correlation_id, p.amount_cents) for p in replayed] == expected


# Starts on a disk already full, with an older spool's lines to replay.
START_FULL = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from services.api.spool import Spool, SpoolUnavailable
    sys.path.insert(0, sys.argv[3])
    from conftest import SmallDisk

    disk, spool_dir = SmallDisk(Path(sys.argv[1])), Path(sys.argv[2])
    spool = Spool(spool_dir, max_pending=1000)  # the default initial room: more than is left
    replayed = [p.correlation_id for p in spool.take_unsent(1000)]
    try:
        spool.append("refused", 1)
        refused = False
    except SpoolUnavailable:
        refused = True
    spool.acknowledge(spool.pending)  # the cache took the replayed lines: their segment goes
    spool.append("after", 2)  # the room the old segment gave back is enough
    print(json.dumps({"replayed": replayed, "refused": refused}))
""")


def test_an_api_starting_on_a_full_disk_starts_and_takes_payments_once_there_is_room(
        small_disk: Callable[..., SmallDisk]) -> None:
    disk = small_disk("1m")
    spool_dir = disk.path / "spool"
    old = Spool(spool_dir, max_pending=1000, initial_bytes=1 << 16)
    for i in range(3):
        old.append(f"old-{i}", i + 1)
    old.close()
    disk.fill()
    outcome = assert_survived(run_child(START_FULL, str(disk.path), str(spool_dir)))
    assert outcome == {"replayed": ["old-0", "old-1", "old-2"], "refused": True}
    again = Spool(spool_dir, max_pending=1000, initial_bytes=1 << 12)
    assert [p.correlation_id for p in again.take_unsent(10)] == ["after"]
