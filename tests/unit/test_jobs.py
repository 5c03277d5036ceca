"""PaymentJob's decisions, with a scripted processor client standing in for HTTP."""

import asyncio
from dataclasses import dataclass, field

from services.common.rpc import pipeline_pb2 as pb
from services.consumer.jobs import JobContext, PaymentJob, RetryPolicy
from services.consumer.processors import Answer, Found, LookupFailed, Outcome, Timeouts
from services.consumer.routing import ProcessorState, Router


@dataclass
class ScriptedClient:
    pay_outcomes: list[Outcome | Answer] = field(default_factory=list)
    holdings: dict[str, Found | None | Exception] = field(default_factory=dict)
    timeouts: Timeouts = Timeouts(payment_seconds=2.0)
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def pay(self, processor: str, correlation_id: str, amount_cents: int, requested_at: str) -> Answer:
        self.sent.append((processor, requested_at))
        scripted = self.pay_outcomes.pop(0)
        return scripted if isinstance(scripted, Answer) else Answer(scripted)

    async def find(self, processor: str, correlation_id: str) -> Found | None:
        held = self.holdings.get(processor)
        if isinstance(held, Exception):
            raise held
        return held


@dataclass
class RecordingReporter:
    completions: list[tuple[str, str, int, int]] = field(default_factory=list)
    retries: list[tuple[str, tuple[str, ...], float]] = field(default_factory=list)
    rejections: list[tuple[str, str, str]] = field(default_factory=list)

    def rejected(self, payment: pb.Payment, processor: str, reason: str) -> None:
        self.rejections.append((payment.correlation_id, processor, reason))

    def completed(self, correlation_id: str, processor: str, amount_cents: int, requested_at_ms: int) -> None:
        self.completions.append((correlation_id, processor, amount_cents, requested_at_ms))

    def retry(self, payment: pb.Payment, check: tuple[str, ...], delay_seconds: float) -> None:
        self.retries.append((payment.correlation_id, check, delay_seconds))


def run_job(client: ScriptedClient, check: tuple[str, ...] = (), strategy: str = "patient",
            min_response_ms: int = 0) -> tuple[RecordingReporter, JobContext, PaymentJob]:
    router = Router(strategy, {n: ProcessorState(n) for n in ("default", "fallback")})
    router.states["default"].min_response_time_ms = min_response_ms
    reporter = RecordingReporter()
    ctx = JobContext(client, router, reporter, RetryPolicy(settle_margin_seconds=1.0))
    (permit,) = router.grant(1)
    job = PaymentJob(pb.Payment(correlation_id="c1", amount_cents=1990, check=check), permit, ctx)
    asyncio.run(job.run())
    assert router.outstanding == 0  # the job gave its permit back
    return reporter, ctx, job


def test_success_records_the_requested_at_that_was_sent() -> None:
    client = ScriptedClient([Outcome.OK])
    reporter, _, _ = run_job(client)
    ((cid, processor, cents, requested_at_ms),) = reporter.completions
    assert (cid, processor, cents) == ("c1", "default", 1990)
    assert client.sent[0][1].endswith("Z") and len(client.sent[0][1]) == 24  # ms precision
    assert reporter.retries == []


def test_definite_failure_retries_and_marks_the_processor_down() -> None:
    reporter, ctx, _ = run_job(ScriptedClient([Outcome.FAILED]))
    assert reporter.retries == [("c1", (), 0.0)]
    assert ctx.router.states["default"].down


def test_unknown_outcome_not_found_yet_waits_to_settle_at_the_same_processor() -> None:
    for absent in (None, LookupFailed("down")):
        client = ScriptedClient([Outcome.UNKNOWN], holdings={"default": absent})
        reporter, ctx, _ = run_job(client, min_response_ms=5000)
        assert reporter.retries == [("c1", ("default",), 6.0)]  # advertised delay 5 s > timeout 2 s, + 1 s
        assert reporter.completions == []
        assert ctx.counters.unknown_outcomes == 1


def test_unknown_outcome_that_landed_is_recorded_at_once_as_the_processor_has_it() -> None:
    client = ScriptedClient([Outcome.UNKNOWN], holdings={"default": Found(requested_at_ms=123, amount_cents=1990)})
    reporter, ctx, _ = run_job(client, min_response_ms=5000)
    assert reporter.completions == [("c1", "default", 1990, 123)]
    assert reporter.retries == []
    assert len(client.sent) == 1


def test_duplicate_is_recorded_from_the_processor_copy_in_the_same_job() -> None:
    client = ScriptedClient([Outcome.DUPLICATE], holdings={"default": Found(requested_at_ms=77, amount_cents=1990)})
    reporter, _, _ = run_job(client)
    assert reporter.completions == [("c1", "default", 1990, 77)]
    assert reporter.retries == []


def test_duplicate_that_cannot_be_shown_is_checked_again_later() -> None:
    for answer in (LookupFailed("down"), None):
        reporter, _, _ = run_job(ScriptedClient([Outcome.DUPLICATE], holdings={"default": answer}))
        assert reporter.retries == [("c1", ("default",), 1.0)]  # the lookup-failed delay
        assert reporter.completions == []


def test_a_payment_found_while_checking_is_recorded_not_sent() -> None:
    client = ScriptedClient(holdings={"default": None, "fallback": Found(requested_at_ms=123, amount_cents=1990)})
    reporter, ctx, _ = run_job(client, check=("default", "fallback"))
    assert reporter.completions == [("c1", "fallback", 1990, 123)]
    assert client.sent == []


def test_checked_and_absent_everywhere_is_sent() -> None:
    client = ScriptedClient([Outcome.OK], holdings={"default": None})
    reporter, _, _ = run_job(client, check=("default",))
    assert len(reporter.completions) == 1 and client.sent


def test_a_failed_check_never_sends() -> None:
    client = ScriptedClient([Outcome.OK], holdings={"default": LookupFailed("down")})
    reporter, _, _ = run_job(client, check=("default",))
    assert client.sent == []
    assert reporter.retries == [("c1", ("default",), 1.0)]


def test_abandon_after_sending_asks_for_a_check() -> None:
    client = ScriptedClient()
    router = Router("patient", {n: ProcessorState(n) for n in ("default", "fallback")})
    reporter = RecordingReporter()
    ctx = JobContext(client, router, reporter, RetryPolicy())
    job = PaymentJob(pb.Payment(correlation_id="c1", amount_cents=1), router.grant(1)[0], ctx)
    job._sent_to = "default"
    asyncio.run(job.abandon(TimeoutError()))
    assert reporter.retries == [("c1", ("default",), 3.0)]


def test_a_refused_payment_is_parked_with_the_reason_and_the_processor_stays_up() -> None:
    refused = Answer(Outcome.REFUSED, 400, 'default answered 400: {"error": "bad card"}')
    reporter, ctx, _ = run_job(ScriptedClient([refused]))
    assert reporter.rejections == [("c1", "default", refused.reason)]
    assert reporter.retries == [] and reporter.completions == []
    assert not ctx.router.states["default"].down and ctx.counters.rejected == 1


def test_a_proxys_bad_gateway_is_settled_by_lookup_and_marks_the_way_down() -> None:
    client = ScriptedClient([Answer(Outcome.UNKNOWN, 502, "default answered 502")],
                            holdings={"default": None})
    reporter, ctx, _ = run_job(client)
    # "not found" this early proves nothing: checked again once the attempt can no longer land
    assert reporter.retries == [("c1", ("default",), 3.0)]
    assert ctx.router.states["default"].down and ctx.counters.unknown_outcomes == 1


def test_a_proxys_answer_found_at_the_processor_is_recorded_once() -> None:
    client = ScriptedClient([Answer(Outcome.UNKNOWN, 504, "default answered 504")],
                            holdings={"default": Found(requested_at_ms=55, amount_cents=1990)})
    reporter, _, _ = run_job(client)
    assert reporter.completions == [("c1", "default", 1990, 55)] and reporter.retries == []
