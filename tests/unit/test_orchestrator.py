import asyncio

import pytest

from services.orch import Orchestrator, OrchestratorLimits


class Recorder:
    def __init__(self, work: float = 0.0, boom: bool = False) -> None:
        self.work = work
        self.boom = boom
        self.ran = False
        self.abandoned: BaseException | None = None

    async def run(self) -> None:
        await asyncio.sleep(self.work)
        if self.boom:
            raise RuntimeError("boom")
        self.ran = True

    async def abandon(self, reason: BaseException) -> None:
        self.abandoned = reason


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        OrchestratorLimits(workers=0)
    with pytest.raises(ValueError):
        OrchestratorLimits(job_timeout_seconds=0)


def test_concurrency_never_exceeds_the_pool() -> None:
    peak = 0
    running = 0

    class Counted(Recorder):
        async def run(self) -> None:
            nonlocal peak, running
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    async def scenario() -> None:
        orch = Orchestrator(OrchestratorLimits(workers=4, job_timeout_seconds=1))
        orch.start()
        for _ in range(40):
            await orch.submit(Counted())
        await orch.drain()
        assert orch.stats().done == 40
        await orch.stop()

    asyncio.run(scenario())
    assert peak == 4


def test_timeout_and_exception_abandon_the_job_but_not_the_worker() -> None:
    async def scenario() -> tuple[Recorder, Recorder, Recorder, Orchestrator]:
        orch = Orchestrator(OrchestratorLimits(workers=1, job_timeout_seconds=0.05))
        orch.start()
        slow, bad, fine = Recorder(work=1.0), Recorder(boom=True), Recorder()
        for job in (slow, bad, fine):
            await orch.submit(job)
        await orch.drain()
        await orch.stop()
        return slow, bad, fine, orch

    slow, bad, fine, orch = asyncio.run(scenario())
    assert isinstance(slow.abandoned, TimeoutError) and not slow.ran
    assert isinstance(bad.abandoned, RuntimeError)
    assert fine.ran and fine.abandoned is None
    stats = orch.stats()
    assert (stats.done, stats.failed, stats.timed_out) == (1, 1, 1)


def test_free_slots_reflect_running_and_waiting_jobs() -> None:
    async def scenario() -> tuple[int, int]:
        orch = Orchestrator(OrchestratorLimits(workers=2, job_timeout_seconds=1))
        orch.start()
        before = orch.free_slots()
        await orch.submit(Recorder(work=0.1))
        await orch.submit(Recorder(work=0.1))
        await asyncio.sleep(0.01)
        during = orch.free_slots()
        await orch.drain()
        await orch.stop()
        return before, during

    assert asyncio.run(scenario()) == (2, 0)
