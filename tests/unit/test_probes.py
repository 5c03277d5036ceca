"""The consumer's probe socket: what each request gets, on a real unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.consumer import probes
from services.consumer.probes import Probes
from services.consumer.routing import ProcessorState, Router


def _router(known: tuple[str, ...]) -> Router:
    states = {name: ProcessorState(name) for name in ("default", "fallback")}
    for name in known:
        states[name].health_checked_at_ms = 1
    return Router("patient", states, probe_interval_seconds=0.1)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_liveness_answers_whatever_the_readiness() -> None:
    answer = Probes(_router(()), lambda: False).respond(b"GET /health/live HTTP/1.1\r\nHost: x")
    assert _status(answer) == 200 and answer.endswith(b'{"status":"live"}')


@pytest.mark.parametrize(("accepted", "known", "why"), [
    (False, ("default", "fallback"), "no heartbeat accepted by the cache yet"),
    (True, ("default",), "no health known yet for fallback"),
    (True, (), "no health known yet for default, fallback"),
])
def test_not_ready_says_why(accepted: bool, known: tuple[str, ...], why: str) -> None:
    answer = Probes(_router(known), lambda: accepted).respond(b"GET /health/ready HTTP/1.1")
    assert _status(answer) == 503 and why.encode() in answer


def test_ready_once_the_heartbeat_is_accepted_and_every_health_known() -> None:
    answer = Probes(_router(("default", "fallback")), lambda: True).respond(b"GET /health/ready?x=1 HTTP/1.0")
    assert _status(answer) == 200 and b"Connection: close" in answer


@pytest.mark.parametrize(("head", "status"), [
    (b"POST /health/ready HTTP/1.1", 405), (b"GET /metrics HTTP/1.1", 404), (b"GET /health/ready", 400),
    (b"\x00\x01", 400), (b"GET /health/ready HTTP/2", 400),
])
def test_anything_else_is_a_json_4xx(head: bytes, status: int) -> None:
    answer = Probes(_router(()), lambda: True).respond(head)
    assert _status(answer) == status and answer.endswith(b"}")


async def _exchange(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # the server closes after one answer
    writer.close()
    return answer


@pytest.mark.asyncio
@pytest.mark.both_loops  # the service runs on uvloop, whose transports are not asyncio's classes
async def test_over_a_real_socket_one_answer_then_closed_and_stalls_cut_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "REQUEST_TIMEOUT_S", 0.3)
    socket = tmp_path / "health.sock"
    server = Probes(_router(("default", "fallback")), lambda: True)
    await server.start(f"unix:{socket}")
    try:
        assert _status(await _exchange(socket, b"GET /health/ready HTTP/1.1\r\n\r\n")) == 200
        # In pieces, as a slow client sends it.
        reader, writer = await asyncio.open_unix_connection(str(socket))
        for piece in (b"GET /health/li", b"ve HTTP/1.1\r\n", b"\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)
        assert _status(await asyncio.wait_for(reader.read(), 5)) == 200
        writer.close()
        assert _status(await _exchange(socket, b"GET /" + b"x" * probes.MAX_HEAD_BYTES)) == 431
        assert _status(await _exchange(socket, b"GET /health/live HTTP/1.1\r\n")) == 408  # never finished
    finally:
        await server.stop()
