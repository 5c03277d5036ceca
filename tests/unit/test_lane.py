"""The payments lane as a protocol: bytes from nginx in, HTTP answers out.

A recording transport stands in for the socket; the admission rules and the
spool are the real ones (the cache is never reached: nothing ships).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.api import lane as lane_module
from services.api.admission import Admission
from services.api.lane import PaymentsLane
from services.api.spool import Spool


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "wrote to a closed connection"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class NoCache:
    """Nothing ships in these tests: the cache never holds anything."""

    cache_backlog = 0

    async def wait_acked(self, seq: int) -> None:
        await asyncio.Event().wait()


def make_admission(tmp_path: Path, max_backlog: int = 1000, ack_mode: str = "spool") -> Admission:
    spool = Spool(tmp_path, max_pending=max_backlog)
    return Admission(spool, NoCache(), waits_for_cache=ack_mode == "cache", ack_timeout_seconds=0.05)


def connect(admission: Admission) -> tuple[PaymentsLane, RecordingTransport]:
    lane, transport = PaymentsLane(admission), RecordingTransport()
    lane.connection_made(transport)
    return lane, transport


def post(body: bytes, *, path: bytes = b"/payments", method: bytes = b"POST",
         version: bytes = b"HTTP/1.1", extra: bytes = b"") -> bytes:
    return (method + b" " + path + b" " + version + b"\r\nHost: payments\r\n"
            b"Content-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def from_nginx(body: bytes) -> bytes:
    """The exact head nginx sends with ``proxy_pass_request_headers off`` (the lane's fast path)."""
    return b"POST /payments HTTP/1.1\r\nHost: payments\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def slip(correlation_id: str | None = None, amount: float = 19.9) -> bytes:
    return orjson.dumps({"correlationId": correlation_id or str(uuid.uuid4()), "amount": amount})


def answers(raw: bytes | bytearray) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP responses into (status, headers, body)."""
    found = []
    rest = bytes(raw)
    while rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        found.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        rest = rest[length:]
    return found


def test_a_valid_payment_is_spooled_and_accepted(tmp_path: Path) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    correlation_id = str(uuid.uuid4())
    lane.data_received(post(slip(correlation_id)))
    assert answers(transport.out) == [(202, {"content-length": "0"}, b"")]
    assert admission.spool.holds(correlation_id) and admission.accepted == 1
    assert not transport.closed


@pytest.mark.parametrize("frame", [post, from_nginx])
def test_requests_split_anywhere_or_sent_together_are_answered_in_order(tmp_path: Path, frame) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    stream = frame(slip()) + frame(b"{not json") + frame(slip())
    for i in range(len(stream)):
        lane.data_received(stream[i:i + 1])
    lane.data_received(frame(slip()) + post(slip()))
    assert [status for status, _, _ in answers(transport.out)] == [202, 400, 202, 202, 202]
    assert admission.accepted == 4 and admission.spool.pending == 4


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"{not json", 400, "body is not valid JSON"),
    (b"[]", 400, "body must be a JSON object"),
    (orjson.dumps({"amount": 1}), 422, "correlationId is required"),
    (orjson.dumps({"correlationId": "nope", "amount": 1}), 422, "correlationId must be a UUID in 8-4-4-4-12 form"),
    (slip(amount=0), 422, "amount must be greater than zero"),
    (slip(amount=1.005), 422, "amount must have at most 2 decimal places"),
])
@pytest.mark.parametrize("frame", [post, from_nginx])
def test_bad_slips_get_a_json_error_and_keep_the_connection(tmp_path: Path, body: bytes, status: int,
                                                            message: str, frame) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    lane.data_received(frame(body))
    [(got, headers, payload)] = answers(transport.out)
    assert (got, orjson.loads(payload)) == (status, {"error": message})
    assert headers["content-type"] == "application/json"
    assert admission.spool.pending == 0 and admission.rejected == 1 and not transport.closed


def test_other_methods_and_paths_are_refused_in_json(tmp_path: Path) -> None:
    lane, transport = connect(make_admission(tmp_path))
    lane.data_received(post(b"", method=b"GET") + post(slip(), path=b"/elsewhere"))
    (status, headers, body), (status2, _, body2) = answers(transport.out)
    assert (status, headers["allow"], orjson.loads(body)) == (405, "POST", {"error": "GET is not allowed here"})
    assert (status2, orjson.loads(body2)) == (404, {"error": "no such endpoint: /elsewhere"})


def test_a_query_string_does_not_change_the_endpoint(tmp_path: Path) -> None:
    lane, transport = connect(make_admission(tmp_path))
    lane.data_received(post(slip(), path=b"/payments?x=1"))
    assert answers(transport.out)[0][0] == 202


@pytest.mark.parametrize(("request_bytes", "status"), [
    (post(b"x" * 20_000), 413),
    (b"POST /payments HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
    (b"POST /payments HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
    (b"POST /payments\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nX: " + b"y" * 9_000, 431),
    # Two framings for one message: whichever one we chose, another parser may choose the other.
    (b"POST /payments HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nContent-Length: 9\r\nContent-Length: 5\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nContent-Length : 5\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\n Content-Length: 5\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n", 400),
    (b"POST /payments HTTP/1.1\r\nX-Lf: a\nContent-Length: 5\r\n\r\n", 400),
    (b"POST /payments HTTP/2.0\r\n\r\n", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    (b"PO(ST /payments HTTP/1.1\r\n\r\n", 400),
    # int() refuses over 4300 digits with a ValueError: must be a 413, not a dropped connection.
    (b"POST /payments HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", 413),
    (b"POST /payments HTTP/1.1\r\nContent-Length: 00000000000000000001\r\n\r\n", 413),
    # A head over the limit is refused even when it arrives whole, in one piece.
    (post(slip(), extra=b"X-Pad: " + b"p" * 9_000 + b"\r\n"), 431),
    (post(slip(), path=b"/payments?" + b"q" * 9_000), 431),
])
def test_unframeable_requests_are_answered_then_closed(tmp_path: Path, request_bytes: bytes,
                                                       status: int) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    lane.data_received(request_bytes)
    [(got, headers, body)] = answers(transport.out)
    assert got == status and "error" in orjson.loads(body)
    assert headers["connection"] == "close" and transport.closed
    assert admission.spool.pending == 0
    lane.data_received(post(slip()))  # late bytes on a closed connection are ignored
    assert admission.spool.pending == 0


def test_http_1_0_and_connection_close_end_the_connection(tmp_path: Path) -> None:
    for kind in ({"version": b"HTTP/1.0"}, {"extra": b"Connection: close\r\n"}):
        lane, transport = connect(make_admission(tmp_path / str(len(kind))))
        lane.data_received(post(slip(), **kind))
        [(status, headers, _)] = answers(transport.out)
        assert (status, headers["connection"], transport.closed) == (202, "close", True)


def test_a_full_backlog_answers_503_with_retry_after(tmp_path: Path) -> None:
    admission = make_admission(tmp_path, max_backlog=1)
    lane, transport = connect(admission)
    lane.data_received(post(slip()) + post(slip()))
    (first, _, _), (second, headers, body) = answers(transport.out)
    assert (first, second, headers["retry-after"]) == (202, 503, "1")
    assert admission.spool.pending == 1 and admission.refused == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_never_raise(tmp_path_factory: pytest.TempPathFactory,
                                     chunks: list[bytes]) -> None:
    admission = make_admission(tmp_path_factory.mktemp("lane"))
    lane, transport = connect(admission)
    for chunk in [b"POST /payments HTTP/1.1\r\n", *chunks]:
        lane.data_received(chunk)
    for status, _headers, body in answers(transport.out):
        assert status == 202 or "error" in orjson.loads(body)


class LoopClock:
    """The running asyncio loop's clock, frozen: it moves only by ``advance``, so
    the lane's timers (``call_later``, ``wait_for``) fire when the test says,
    however slowly a loaded machine runs it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, asyncio.BaseEventLoop), "asyncio's own loop: uvloop's clock cannot be replaced"
        self.now = loop.time()
        monkeypatch.setattr(loop, "time", lambda: self.now)

    async def advance(self, seconds: float) -> None:
        """Let the loop start what is ready (and so set its timers), move the
        clock on, then let it run what came due and what that set off."""
        await self.settle()
        self.now += seconds
        await self.settle()

    @staticmethod
    async def settle() -> None:
        for _ in range(50):  # loop iterations, not time: a few are enough for any chain here
            await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_cache_ack_mode_answers_in_order_once_acknowledged_or_timed_out(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = LoopClock(monkeypatch)
    admission = make_admission(tmp_path, ack_mode="cache")  # nothing ships here: every wait times out
    lane, transport = connect(admission)
    lane.data_received(post(slip()) + post(b"{bad"))
    assert transport.out == b"" and admission.spool.pending == 1  # spooled, answer held
    await clock.advance(admission.ack_timeout_seconds * 0.75)
    assert transport.out == b""  # still held: the cache may yet acknowledge it
    await clock.advance(admission.ack_timeout_seconds * 0.5)
    assert [status for status, _, _ in answers(transport.out)] == [202, 400]


@pytest.mark.parametrize("whole", [True, False])
def test_a_body_too_large_in_nginx_form_is_refused(tmp_path: Path, whole: bool) -> None:
    """Whole, it is refused on a connection still usable; split, the head alone
    refuses it, and the connection closes because the body is not read."""
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    request = from_nginx(b" " * 20_000)
    for chunk in [request] if whole else [request[:100], request[100:]]:
        if not transport.closed:
            lane.data_received(chunk)
    [(status, _, body)] = answers(transport.out)
    assert status == 413 and "body larger than" in orjson.loads(body)["error"]
    assert transport.closed is not whole and admission.spool.pending == 0


@pytest.mark.parametrize("extra", [
    b"Content-Length: %d\r\n",  # a duplicate that agrees: one framing
    b"X-Odd: \t tab and obs-text \xe9\r\n",
    b"Connection: keep-alive, Upgrade\r\n",
])
def test_heads_that_are_odd_but_unambiguous_are_served(tmp_path: Path, extra: bytes) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    body = slip()
    lane.data_received(post(body, extra=extra.replace(b"%d", str(len(body)).encode())))
    assert [status for status, _, _ in answers(transport.out)] == [202]
    assert admission.spool.pending == 1 and not transport.closed


def test_an_absolute_uri_is_the_same_endpoint(tmp_path: Path) -> None:
    lane, transport = connect(make_admission(tmp_path))
    lane.data_received(post(slip(), path=b"http://api/payments") + post(slip(), path=b"HTTPS://api/payments?x")
                       + post(slip(), path=b"http://api/elsewhere"))
    assert [status for status, _, _ in answers(transport.out)] == [202, 202, 404]


def test_blank_lines_before_a_request_are_ignored(tmp_path: Path) -> None:
    lane, transport = connect(make_admission(tmp_path))
    lane.data_received(post(slip()) + b"\r\n" + post(slip()))
    assert [status for status, _, _ in answers(transport.out)] == [202, 202]


def test_expect_100_continue_is_answered_once_before_the_body(tmp_path: Path) -> None:
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    request = post(slip(), extra=b"Expect: 100-Continue\r\n")
    head_end = request.index(b"\r\n\r\n") + 4
    lane.data_received(request[:head_end])
    assert transport.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    lane.data_received(request[head_end:head_end + 5])  # more of the body: no second 100
    lane.data_received(request[head_end + 5:])
    assert transport.out.count(b"100 Continue") == 1
    assert answers(transport.out.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))[0][0] == 202
    lane.data_received(request)  # the next request on the connection gets its own 100
    assert transport.out.count(b"100 Continue") == 1 and admission.spool.pending == 2  # whole at once: none needed


@pytest.mark.parametrize("request_bytes", [
    post(slip(), version=b"HTTP/1.0", extra=b"Expect: 100-continue\r\n"),  # 1.0 knows no 1XX
    post(b"x" * 20_000, extra=b"Expect: 100-continue\r\n"),  # refused on its head: the final answer instead
])
def test_no_100_continue_where_it_has_no_place(tmp_path: Path, request_bytes: bytes) -> None:
    lane, transport = connect(make_admission(tmp_path))
    lane.data_received(request_bytes[:request_bytes.index(b"\r\n\r\n") + 4])
    assert b"100 Continue" not in transport.out


@pytest.mark.asyncio
async def test_a_request_that_stops_arriving_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane_module, "PARTIAL_REQUEST_TIMEOUT_S", 1.0)
    clock = LoopClock(monkeypatch)
    admission = make_admission(tmp_path)
    lane, transport = connect(admission)
    lane.data_received(post(slip())[:-3])
    await clock.advance(0.75)
    assert transport.out == b"" and not transport.closed  # still within its time
    await clock.advance(0.5)
    [(status, headers, body)] = answers(transport.out)
    assert (status, headers["connection"], transport.closed) == (408, "close", True)
    assert "error" in orjson.loads(body) and admission.spool.pending == 0


@pytest.mark.asyncio
async def test_the_clock_runs_per_request_and_not_on_an_idle_connection(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane_module, "PARTIAL_REQUEST_TIMEOUT_S", 1.0)
    clock = LoopClock(monkeypatch)
    lane, transport = connect(make_admission(tmp_path))
    request = post(slip())
    for _ in range(3):  # each request completes within its time, though all three take longer
        lane.data_received(request[:10])
        await clock.advance(0.75)
        lane.data_received(request[10:])
    await clock.advance(2.0)  # idle between requests: no clock
    assert [status for status, _, _ in answers(transport.out)] == [202, 202, 202] and not transport.closed
