"""The consumer's liveness and readiness over HTTP, on a socket of its own
(CONSUMER_HEALTH_LISTEN): the consumer serves nothing else, so this is the one
way in for a compose healthcheck or a Kubernetes probe
(``python -m services.common.probe http <listen> /health/ready``).

- ``GET /health/live``: 200 while the event loop answers.
- ``GET /health/ready``: 200 once the cache has accepted a heartbeat (the
  consumer's leases are safe) and every processor's health is known (from its
  own poll or the system's, by heartbeat); 503 with why, until then.

A bare asyncio protocol, one request per connection, rather than aiohttp's
server: the consumer imports no aiohttp otherwise, and aiohttp's server cost
it RSS (BENCHMARKS.md, "Decisions in force": bare-protocol probes). A probe
is one short GET from a local client; anything else gets a 4XX and the
connection closed, and a request that does not arrive whole within
``REQUEST_TIMEOUT_S`` is cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import orjson

from services.common.listen import open_to_all, start_server
from services.consumer.routing import Router

MAX_HEAD_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def answer(status: int, body: dict[str, object]) -> bytes:
    payload = orjson.dumps(body)
    return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload


class Probes:
    def __init__(self, router: Router, heartbeat_accepted: Callable[[], bool]) -> None:
        self._router = router
        self._accepted = heartbeat_accepted
        self._server: asyncio.AbstractServer | None = None

    def not_ready(self) -> str:
        """Why the consumer is not ready, or "" if it is."""
        if not self._accepted():
            return "no heartbeat accepted by the cache yet"
        unknown = sorted(name for name, state in self._router.states.items() if not state.health_checked_at_ms)
        if unknown:
            return f"no health known yet for {', '.join(unknown)}"
        return ""

    def respond(self, head: bytes) -> bytes:
        """The answer to one request head (without its final blank line)."""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return answer(400, {"error": "malformed HTTP request"})
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        if method != b"GET":
            return answer(405, {"error": f"{method.decode(errors='replace')} is not allowed here"})
        if path == b"/health/live":
            return answer(200, {"status": "live"})
        if path == b"/health/ready":
            why = self.not_ready()
            return answer(503, {"status": "not ready", "why": why}) if why else answer(200, {"status": "ready"})
        return answer(404, {"error": f"no such endpoint: {path.decode(errors='replace')}"})

    async def start(self, listen: str) -> None:
        self._server = await start_server(listen, lambda: _ProbeConnection(self))
        open_to_all(listen)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class _ProbeConnection(asyncio.Protocol):
    """Reads one request head, answers it, closes."""

    def __init__(self, probes: Probes) -> None:
        self._probes = probes
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._cutoff: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._cutoff = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S, self._finish, answer(
            408, {"error": "request not received in time"}))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._cutoff is not None:
            self._cutoff.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            self._finish(self._probes.respond(bytes(self._buffer[:end])))
        elif len(self._buffer) > MAX_HEAD_BYTES:
            self._finish(answer(431, {"error": "request head too large"}))

    def _finish(self, response: bytes) -> None:
        if self._transport is not None:
            self._transport.write(response)
            self._transport.close()
            self._transport = None
