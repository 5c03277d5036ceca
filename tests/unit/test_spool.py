from pathlib import Path

import pytest

from services.api.spool import Spool, SpoolFull, SpoolUnavailable


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


def content(spool: Spool) -> bytes:
    """What a restart would read: the file up to its first NUL."""
    return spool._path.read_bytes().partition(b"\0")[0]


def test_file_is_emptied_once_everything_is_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=1000)
    for i in range(10):
        spool.append(f"{i:036d}", 1)
    assert content(spool).count(b"\n") == 10
    spool.acknowledge(spool.take_unsent(100)[-1].seq)
    assert content(spool) == b""
    assert spool.pending == 0
    spool.append("after", 7)
    assert content(spool) == b"after 7\n"


def test_the_map_grows_past_its_first_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_pending=1000, initial_bytes=64)
    for i in range(100):
        spool.append(f"id-{i}", i + 1)
    again = Spool(tmp_path, max_pending=1000)
    assert [(p.correlation_id, p.amount_cents) for p in again.take_unsent(1000)] == \
        [(f"id-{i}", i + 1) for i in range(100)]


class Killed(Exception):
    pass


class DiesAfter:
    """The spool's map, with the process killed after ``stores`` more stores."""

    def __init__(self, real: object, stores: int) -> None:
        self.real, self.stores = real, stores

    def __len__(self) -> int:
        return len(self.real)  # type: ignore[arg-type]

    def __setitem__(self, key: int | slice, value: object) -> None:
        if self.stores == 0:
            raise Killed
        self.stores -= 1
        self.real[key] = value  # type: ignore[index]


@pytest.mark.parametrize("stores", [0, 1, 2])
def test_a_crash_in_the_middle_of_a_line_never_replays_it_torn(tmp_path: Path, stores: int) -> None:
    """Over the stale bytes of an older, longer line, a line cut short by a crash
    after any of its stores is absent after a restart, and the ones before it whole."""
    spool = Spool(tmp_path, max_pending=100)
    spool.append("an-old-and-long-acknowledged-line", 123456)
    spool.acknowledge(spool.take_unsent(10)[-1].seq)
    spool.append("kept", 1)
    spool._map = DiesAfter(spool._map, stores)  # type: ignore[assignment]
    with pytest.raises(Killed):
        spool.append("new", 4)
    again = Spool(tmp_path, max_pending=100)
    assert [(p.correlation_id, p.amount_cents) for p in again.take_unsent(10)] == [("kept", 1)]


def test_an_append_after_close_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    """A request still arriving while the api shuts down gets a 503, not a
    crashed connection, and the spool's file is left as it was."""
    spool = Spool(tmp_path, max_pending=10)
    spool.append("kept", 1)
    spool.close()
    with pytest.raises(SpoolUnavailable):
        spool.append("late", 2)
    again = Spool(tmp_path, max_pending=10)
    assert [p.correlation_id for p in again.take_unsent(10)] == ["kept"]
