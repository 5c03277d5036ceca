from pathlib import Path

import pytest

from services.api.spool import Spool, SpoolFull


def test_unacknowledged_payments_are_replayed_after_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=100)
    for i in range(5):
        spool.append(f"id-{i}", 100 + i)
    sent = spool.take_unsent(3)
    spool.acknowledge(sent[-1].seq)
    # no close(): the process "dies" here
    again = Spool(tmp_path, max_pending=100)
    replayed = again.take_unsent(100)
    # everything still on disk comes back; the cache drops what it already has
    assert [p.correlation_id for p in replayed] == [f"id-{i}" for i in range(5)]
    again.acknowledge(replayed[-1].seq)
    assert list(tmp_path.glob("spool-*.log")) == [again._path]  # old segment removed
    third = Spool(tmp_path, max_pending=100)
    assert third.take_unsent(100) == []


def test_rewind_resends_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=100)
    for i in range(4):
        spool.append(f"id-{i}", 1)
    first = spool.take_unsent(2)
    spool.acknowledge(first[0].seq)
    spool.rewind()
    assert [p.correlation_id for p in spool.take_unsent(10)] == ["id-1", "id-2", "id-3"]


def test_bound_refuses_instead_of_growing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=2)
    spool.append("a", 1)
    spool.append("b", 1)
    with pytest.raises(SpoolFull):
        spool.append("c", 1)
    assert spool.holds("a") and not spool.holds("c")


def test_file_is_emptied_once_everything_is_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=1000, compact_bytes=100)
    for i in range(10):
        spool.append(f"{i:036d}", 1)
    spool.acknowledge(spool.take_unsent(100)[-1].seq)
    assert spool._path.stat().st_size == 0
    assert spool.pending == 0


def test_acknowledged_lines_are_not_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=100)
    spool.append("a", 1)
    spool.acknowledge(spool.take_unsent(10)[-1].seq)
    spool.append("b", 1)  # not acknowledged when the process dies
    again = Spool(tmp_path, max_pending=100)
    assert [p.correlation_id for p in again.take_unsent(10)] == ["b"]
