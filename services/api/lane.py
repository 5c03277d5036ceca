"""The payments lane: ``POST /payments`` as a bare asyncio protocol.

nginx sends exactly ``location = /payments`` to this socket and every other
endpoint to the aiohttp server beside it, in the same process and event loop.
The hot path is the only request the load cares about, and aiohttp's request
machinery (a task, a request object, header multidicts, a response object per
request) cost the two instances 351 µs of CPU per payment against 222 µs with
this lane, and 0.15 ms of median latency (BENCHMARKS.md, "What the CPU was
spent on"). Both paths admit payments through the one ``Api.admit``, so they
cannot disagree on what is accepted.

What a request costs here is its cost from cold caches: requests reach an
instance milliseconds apart, with k6 and the other services running in
between, so the lane's Python that takes 8 µs in a warm loop took 90 µs of CPU
per request under load. Hence the fast path for the exact request nginx sends:
one regular expression for the head, one for the slip (``parse_slip``), no
buffering (BENCHMARKS.md, session 4).

The only client is nginx over a private socket, with HTTP/1.1 keep-alive and
request buffering on: bodies arrive with a Content-Length, one request at a
time per connection. Anything else still gets a well-formed answer (a JSON 4XX)
and, where the framing can no longer be trusted, a closed connection.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus

import orjson

from services.api.handlers import MAX_BODY_BYTES, TOO_LARGE, Api, Refused

MAX_HEAD_BYTES = 8 * 1024
# What nginx sends for ``location = /payments`` with ``proxy_pass_request_headers
# off``: matched in one C call instead of buffering and splitting the head into lines.
_FROM_NGINX = re.compile(rb"POST /payments HTTP/1\.1\r\nHost: [!-~]*\r\nContent-Length: ([0-9]{1,5})\r\n\r\n")
ACCEPTED = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"
ACCEPTED_AND_CLOSE = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def http_error(status: int, message: str, headers: dict[str, str] | None = None,
               close: bool = False) -> bytes:
    body = orjson.dumps({"error": message})
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


class BadFraming(Exception):
    """The request cannot be delimited: answer, then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[bytes, bytes, int, bool]:
    """(method, path, content length, keep alive) of one request head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadFraming(400, "malformed request line")
    method, target, version = parts
    keep_alive = version != b"HTTP/1.0"
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadFraming(400, "malformed header line")
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise BadFraming(400, "Content-Length must be a number")
            length = int(value)
        elif name == b"transfer-encoding":
            raise BadFraming(411, "a Content-Length is required")
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    return method, target.partition(b"?")[0], length, keep_alive


class PaymentsLane(asyncio.Protocol):
    """One connection from nginx: requests in, answers out, in order."""

    __slots__ = ("api", "_transport", "_buffer", "_waiting", "_answering")

    def __init__(self, api: Api) -> None:
        self.api = api
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting = False  # an answer is pending ("cache" ack mode)
        self._answering: asyncio.Future[None] | None = None  # held: the loop keeps only weak refs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        if not self._buffer and not self._waiting:
            plain = _FROM_NGINX.match(data)
            if plain is not None and len(data) - plain.end() == int(plain[1]):
                # One whole request in nginx's form: the common case, without buffering.
                self._accept(data[plain.end():], keep_alive=True)
                return
        self._buffer += data
        if not self._waiting:
            self._serve_buffered()

    def _serve_buffered(self) -> None:
        buffer = self._buffer
        while self._transport is not None and not self._waiting:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._send(http_error(431, "request head too large", close=True), keep_alive=False)
                return
            try:
                method, path, length, keep_alive = _parse_head(bytes(buffer[:end]))
                if length > MAX_BODY_BYTES:
                    raise BadFraming(413, TOO_LARGE)
            except BadFraming as exc:
                self._send(http_error(exc.status, str(exc), close=True), keep_alive=False)
                return
            start = end + 4
            if len(buffer) < start + length:
                return  # the body is still on its way
            body = bytes(buffer[start:start + length])
            del buffer[:start + length]
            self._answer(method, path, body, keep_alive)

    def _answer(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        if path != b"/payments":
            answer = http_error(404, f"no such endpoint: {path.decode(errors='replace')}",
                                close=not keep_alive)
        elif method != b"POST":
            answer = http_error(405, f"{method.decode(errors='replace')} is not allowed here",
                                {"Allow": "POST"}, close=not keep_alive)
        else:
            self._accept(body, keep_alive)
            return
        self._send(answer, keep_alive)

    def _accept(self, body: bytes, keep_alive: bool) -> None:
        """``POST /payments``: admit the body, then answer now or once the cache holds it."""
        try:
            seq = self.api.admit(body)
        except Refused as exc:
            self._send(http_error(exc.status, exc.message, exc.headers, close=not keep_alive), keep_alive)
            return
        if self.api.waits_for_cache:
            self._waiting = True
            self._answering = asyncio.ensure_future(self._answer_when_acknowledged(seq, keep_alive))
            return
        self._send(ACCEPTED if keep_alive else ACCEPTED_AND_CLOSE, keep_alive)

    async def _answer_when_acknowledged(self, seq: int, keep_alive: bool) -> None:
        await self.api.acknowledged(seq)
        self._waiting = False
        if self._transport is not None:
            self._send(ACCEPTED if keep_alive else ACCEPTED_AND_CLOSE, keep_alive)
            self._serve_buffered()

    def _send(self, answer: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(answer)
        if not keep_alive:
            transport.close()
            self._transport = None
