"""Disks that fill up under load, on the real stack: the apis' spools and the
cache's journal each on a small tmpfs of its own.

A payment that cannot be stored is never acknowledged (503 with JSON and
Retry-After), no process dies, nothing acknowledged is lost or charged twice,
and intake resumes by itself once the filler file is deleted."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tools.clients import Backend, Load, Processors, Verdict, verify
from tools.stack import Stack, StackConfig
from tools.waiting import wait_until

if TYPE_CHECKING:
    from conftest import SmallDisk  # tests/conftest.py

pytestmark = pytest.mark.integration
APIS = ("api1", "api2")


class KeptFull(threading.Thread):
    """Keeps ``disks`` full while it runs: whatever a service frees (a spool
    segment deleted once shipped) is taken again at once, as by another
    program writing to the same disk."""

    def __init__(self, *disks: SmallDisk) -> None:
        super().__init__(daemon=True)
        self.disks = disks
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            for disk in self.disks:
                disk.fill()
            self.halt.wait(0.005)

    def __enter__(self) -> KeptFull:
        self.start()
        for disk in self.disks:  # full before the caller goes on
            disk.fill()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.join()
        for disk in self.disks:
            disk.free()


@pytest.fixture(scope="module")
def disks(module_small_disk: Callable[..., SmallDisk]) -> dict[str, SmallDisk]:
    # The spool reserves 1 MiB at start: room for it and little else.
    return {"api1": module_small_disk("4m"), "api2": module_small_disk("4m"),
            "cache": module_small_disk("4m")}


@pytest.fixture(scope="module")
def stack(disks: dict[str, SmallDisk]) -> Iterator[Stack]:
    run_dir = Path(tempfile.mkdtemp(prefix="rinha-disk-", dir="/tmp"))
    config = StackConfig(
        run_dir=run_dir, port=9992, default_port=8009, fallback_port=8010,
        env={"LOG_LEVEL": "INFO", "CACHE_LEASE_MS": "3000", "CONSUMER_PAYMENT_TIMEOUT_MS": "2000",
             "CONSUMER_LOOKUP_TIMEOUT_MS": "1000", "CONSUMER_JOB_TIMEOUT_MS": "4000"},
        service_env={**{api: {"API_SPOOL_DIR": str(disks[api].path / "spool")} for api in APIS},
                     "cache": {"CACHE_JOURNAL": str(disks["cache"].path / "journal.log")}},
    )
    with Stack(config) as running:
        yield running
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture()
def processors(stack: Stack) -> Processors:
    processors = Processors(*stack.config.processor_urls)
    processors.reset()
    return processors


@pytest.fixture()
def backend(stack: Stack, processors: Processors) -> Backend:
    backend = Backend(stack.config.base_url)
    backend.http.post("/purge-payments").raise_for_status()
    return backend


def all_alive(stack: Stack) -> list[str]:
    """The services that died (none may)."""
    return [name for name, proc in stack.procs.items() if proc.poll() is not None]


def check_invariants(load: Load, backend: Backend, processors: Processors) -> Verdict:
    verdict = verify(load, backend, processors, drain_timeout=30)
    assert not verdict.problems(), verdict.problems()
    return verdict


def test_full_spool_disks_refuse_with_503_and_intake_resumes(
        stack: Stack, disks: dict[str, SmallDisk], backend: Backend, processors: Processors) -> None:
    load = Load(stack.config.base_url, per_second=100)
    load.start()
    time.sleep(1.0)
    with KeptFull(disks["api1"], disks["api2"]):
        # Running apis keep the room they reserved; one that starts now, or
        # must grow its spool, finds none.
        for api in APIS:
            stack.restart(api)
        # nginx takes an instance it could not connect to (restarting) out for
        # its fail_timeout (2 s): until then it answers 502 itself.
        time.sleep(2.5)
        full_from = time.monotonic()
        time.sleep(1.5)
        full_until = time.monotonic()
        assert all_alive(stack) == []
    resumed_from = time.monotonic()
    time.sleep(1.5)
    load.stop()

    during = load.window(full_from, full_until)
    assert during.statuses.get("503", 0) > 50, during
    assert during.bad_503s == 0, during  # each with a JSON body and Retry-After
    after = load.window(resumed_from + 0.5, time.monotonic())
    assert after.posts > 50 and after.statuses == {"202": after.posts}, after
    health = [backend.http.get("/health").json() for _ in range(4)]
    assert sum(h["unstorable"] for h in {h["instance"]: h for h in health}.values()) > 0
    assert all_alive(stack) == []
    figures = check_invariants(load, backend, processors)
    assert figures.accepted > 100


def test_a_full_journal_disk_leaves_intake_to_the_spools(
        stack: Stack, disks: dict[str, SmallDisk], backend: Backend, processors: Processors) -> None:
    cache_log = stack.log("cache")
    logged_before = cache_log.read_text(errors="replace").count("journal write failed")
    load = Load(stack.config.base_url, per_second=100)
    load.start()
    time.sleep(1.0)
    with KeptFull(disks["cache"]):
        full_from = time.monotonic()
        wait_until(lambda: cache_log.read_text(errors="replace").count("journal write failed") > logged_before,
                   timeout=10, what="the cache to find its journal's disk full")
        time.sleep(2.0)
        spooled = backend.http.get("/health").json()["spoolPending"]
        full_until = time.monotonic()
        assert all_alive(stack) == []
    load.stop()

    during = load.window(full_from, full_until)
    assert during.posts > 100 and during.statuses == {"202": during.posts}, during  # spooled meanwhile
    assert spooled > 0  # the cache took nothing: it answered UNAVAILABLE
    assert all_alive(stack) == []
    figures = check_invariants(load, backend, processors)  # drained once there was room again
    assert figures.accepted > 200
