"""The consumer's reporter keeps every result until the cache has taken it,
and the pause between attempts to reach the cache starts over after a success."""

import asyncio

import pytest

from services.common.rpc import pipeline_pb2 as pb
from services.common.rpc_client import Backoff
from services.consumer.reporting import Reporter


class CacheCalls:
    """The calls the reporter makes (``reporting.ResultCalls``), scripted:
    ``hang`` blocks a call (a cache that does not answer), anything else
    returns at once."""

    def __init__(self, hang: set[str]) -> None:
        self.hang = hang
        self.taken: dict[str, int] = {"Complete": 0, "Requeue": 0}  # Reject once called
        self.requeued: list[pb.Retry] = []
        self.rejected: list[pb.Rejection] = []
        self.entered = asyncio.Event()

    async def _call(self, name: str, count: int) -> None:
        self.entered.set()
        if name in self.hang:
            await asyncio.Event().wait()
        self.taken[name] = self.taken.get(name, 0) + count
        return None

    def Complete(self, request: pb.CompleteRequest, **_: object):
        return self._call("Complete", len(request.completions))

    def Requeue(self, request: pb.RequeueRequest, **_: object):
        self.requeued.extend(request.retries)
        return self._call("Requeue", len(request.retries))

    def Reject(self, request: pb.RejectRequest, **_: object):
        self.rejected.extend(request.rejections)
        return self._call("Reject", len(request.rejections))


def filled_reporter(stub: CacheCalls) -> Reporter:
    reporter = Reporter(stub, flush_seconds=0.01)
    reporter.completed("c1", "default", 1990, 123)
    reporter.retry(pb.Payment(correlation_id="c2", amount_cents=100), ("default",), 1.0)
    return reporter


@pytest.mark.parametrize("hang, kept", [({"Complete"}, 2), ({"Requeue"}, 1)])
def test_a_flush_cancelled_mid_call_keeps_what_the_cache_did_not_take(hang: set[str], kept: int) -> None:
    async def scenario() -> tuple[int, dict[str, int]]:
        stub = CacheCalls(hang)
        reporter = filled_reporter(stub)
        flushing = asyncio.create_task(reporter.flush())
        await asyncio.sleep(0.01)
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        pending = reporter.pending
        stub.hang.clear()
        assert await reporter.flush()  # the final flush of a stopping consumer
        return pending, stub.taken

    pending, taken = asyncio.run(scenario())
    assert pending == kept
    assert taken == {"Complete": 1, "Requeue": 1}


def test_backoff_doubles_up_to_its_ceiling_and_starts_over_after_a_reset() -> None:
    async def pauses() -> list[float]:
        backoff = Backoff(first=0.001, ceiling=0.004)
        seen = []
        for _ in range(4):
            seen.append(backoff.next)
            await backoff.wait()
        backoff.reset()
        seen.append(backoff.next)
        return seen

    assert asyncio.run(pauses()) == [0.001, 0.002, 0.004, 0.004, 0.001]


def test_a_hand_back_names_the_lease_it_returns() -> None:
    async def scenario() -> list[pb.Retry]:
        stub = CacheCalls(hang=set())
        reporter = Reporter(stub, flush_seconds=0.01)
        leased = pb.Payment(correlation_id="c3", amount_cents=100, check=["fallback"], lease=3)
        reporter.retry(leased, ("default",), 0.5)
        assert await reporter.flush()
        return stub.requeued

    (retry,) = asyncio.run(scenario())
    assert (retry.payment.correlation_id, list(retry.payment.check), retry.payment.lease) == ("c3", ["default"], 3)
    assert retry.delay_ms == 500


def test_reports_name_the_lease_not_the_attempts() -> None:
    """A hand-back and a rejection name Payment.lease; Payment.attempts is a
    count and is not what ends a lease."""
    async def scenario() -> tuple[list[pb.Retry], list[pb.Rejection]]:
        stub = CacheCalls(hang=set())
        reporter = Reporter(stub, flush_seconds=0.01)
        leased = pb.Payment(correlation_id="c4", amount_cents=100, lease=7, attempts=2)
        reporter.retry(leased, (), 0.0)
        reporter.rejected(leased, "fallback", "fallback answered 422")
        assert await reporter.flush()
        return stub.requeued, stub.rejected

    (retry,), (rejection,) = asyncio.run(scenario())
    assert retry.payment.lease == 7
    assert (rejection.correlation_id, rejection.processor, rejection.lease) == ("c4", "fallback", 7)
