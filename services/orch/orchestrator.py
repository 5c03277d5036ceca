"""Run Jobs on a fixed number of workers, each with a deadline.

A Job is anything with ``run()`` and ``abandon(reason)``. ``abandon`` is how a
job that timed out or raised hands its work back: the orchestrator cannot know
what "handing back" means, so it asks. Nothing a job does can stop a worker or
the pool.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("orch")


class Job(Protocol):
    async def run(self) -> None: ...

    async def abandon(self, reason: BaseException) -> None: ...


@dataclass(frozen=True, slots=True)
class OrchestratorLimits:
    workers: int = 100
    job_timeout_seconds: float = 30.0
    abandon_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.job_timeout_seconds <= 0 or self.abandon_timeout_seconds <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    running: int
    waiting: int
    done: int
    failed: int
    timed_out: int


class Orchestrator:
    def __init__(self, limits: OrchestratorLimits) -> None:
        self.limits = limits
        # Room for one job per worker: ``submit`` blocks once every worker is
        # busy and one more is waiting, which is the caller's backpressure.
        self._inbox: asyncio.Queue[Job] = asyncio.Queue(maxsize=limits.workers)
        self._workers: list[asyncio.Task[None]] = []
        self._running = 0
        self._done = 0
        self._failed = 0
        self._timed_out = 0
        self._slot_freed = asyncio.Event()

    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work(), name=f"worker-{i}")
                             for i in range(self.limits.workers)]

    async def submit(self, job: Job) -> None:
        await self._inbox.put(job)

    def free_slots(self) -> int:
        return max(0, self.limits.workers - self._running - self._inbox.qsize())

    async def wait_for_free_slot(self) -> None:
        while self.free_slots() == 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def drain(self) -> None:
        """Wait until every submitted job has finished."""
        await self._inbox.join()

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def stats(self) -> PoolStats:
        return PoolStats(size=self.limits.workers, running=self._running,
                         waiting=self._inbox.qsize(), done=self._done,
                         failed=self._failed, timed_out=self._timed_out)

    async def _work(self) -> None:
        while True:
            job = await self._inbox.get()
            self._running += 1
            try:
                await self._run_one(job)
            finally:
                self._running -= 1
                self._inbox.task_done()
                self._slot_freed.set()

    async def _run_one(self, job: Job) -> None:
        try:
            async with asyncio.timeout(self.limits.job_timeout_seconds):
                await job.run()
            self._done += 1
            return
        except TimeoutError as exc:
            self._timed_out += 1
            reason: BaseException = exc
        except asyncio.CancelledError:
            await self._abandon(job, asyncio.CancelledError("orchestrator stopped"))
            raise
        except Exception as exc:
            self._failed += 1
            log.exception("job failed", extra={"fields": {"job": repr(job)}})
            reason = exc
        await self._abandon(job, reason)

    async def _abandon(self, job: Job, reason: BaseException) -> None:
        try:
            async with asyncio.timeout(self.limits.abandon_timeout_seconds):
                await job.abandon(reason)
        except Exception:
            log.exception("job could not be abandoned cleanly", extra={"fields": {"job": repr(job)}})
