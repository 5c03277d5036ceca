"""The payments lane: ``POST /payments`` as a bare asyncio protocol.

nginx sends exactly ``location = /payments`` to this socket and every other
endpoint to the aiohttp server beside it, in the same process and event loop.
The hot path is the only request the load cares about, and aiohttp's request
machinery (a task, a request object, header multidicts, a response object per
request) cost the two instances more CPU per payment than this lane does, and
median latency with it (BENCHMARKS.md, "Decisions in force": payments lane).
Both paths admit payments through the one ``Admission``
(services/api/admission.py), so they cannot disagree on what is accepted.

What a request costs here is its cost from cold caches: requests reach an
instance milliseconds apart, with k6 and the other services running in
between, so the lane's Python costs many times more per request under load
than in a warm loop. Hence the fast path for the exact request nginx sends:
one regular expression for the head, one for the slip (``parse_slip``), no
buffering (BENCHMARKS.md, "Decisions in force": lane fast path).

The only client is nginx over a private socket, with HTTP/1.1 keep-alive and
request buffering on: bodies arrive with a Content-Length, one request at a
time per connection. Anything else still gets a well-formed answer (a JSON 4XX)
and, where the framing can no longer be trusted, a closed connection: defence
in depth should anything but nginx ever reach the socket. So the slow path
(``_serve_buffered``) refuses a head that could be framed two ways (conflicting
Content-Lengths, a space before a colon, control characters), bounds the head
even when it arrives whole, answers ``Expect: 100-continue``, and cuts off a
request that stops arriving. The fast path needs none of it: its regular
expression admits only nginx's own three-line head.
"""

from __future__ import annotations

import asyncio
import re
from http import HTTPStatus
from time import perf_counter
from typing import NamedTuple, cast

import orjson

from services.api.admission import CONTINUE, MAX_BODY_BYTES, PARTIAL_REQUEST_TIMEOUT_S, TOO_LARGE, Admission, Refused

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


class Head(NamedTuple):
    method: bytes
    path: bytes
    length: int  # of the body
    keep_alive: bool
    expects_continue: bool  # "Expect: 100-continue": the client waits for a 100 before its body


# RFC 9110's token: what a method or a header name may be made of. Anything
# else (a space before the colon, a folded line, a NUL) is how requests are
# smuggled past one parser and not another: refused, not guessed at.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB have no place in a field value.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(rb"HTTP/1\.[0-9]")
# A longer Content-Length is refused as too large without reading it: int()
# refuses a many-thousand-digit value with a ValueError, and no client pads a
# length under MAX_BODY_BYTES with this many leading zeros.
_MAX_LENGTH_DIGITS = 10


def _request_path(target: bytes) -> bytes:
    """The path of an origin-form (``/payments?x``) or absolute-form
    (``http://host/payments``) request target, which HTTP/1.1 servers must take."""
    if not target.startswith(b"/"):
        scheme, sep, rest = target.partition(b"://")
        if sep and scheme.lower() in (b"http", b"https"):
            target = b"/" + rest.partition(b"/")[2]
    return target.partition(b"?")[0]


def _content_length(value: bytes, known: int | None) -> int:
    value = value.strip(b" \t")
    if not value.isdigit():
        raise BadFraming(400, "Content-Length must be a number")
    if len(value) > _MAX_LENGTH_DIGITS:
        raise BadFraming(413, TOO_LARGE)
    length = int(value)
    if known is not None and known != length:
        # Two framings for one message: whichever we chose, someone else may
        # choose the other (request smuggling).
        raise BadFraming(400, "conflicting Content-Length headers")
    return length


def _parse_head(head: bytes) -> Head:
    """One request head, checked strictly enough that it cannot be framed two ways."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or _VERSION.fullmatch(parts[2]) is None or _TOKEN.fullmatch(parts[0]) is None:
        raise BadFraming(400, "malformed request line")
    method, target, version = parts
    keep_alive = version != b"HTTP/1.0"
    length: int | None = None
    expects_continue = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN.fullmatch(name) is None or _CONTROL.search(value) is not None:
            raise BadFraming(400, "malformed header line")
        name = name.lower()
        if name == b"content-length":
            length = _content_length(value, length)
        elif name == b"transfer-encoding":
            raise BadFraming(411, "a Content-Length is required")
        elif name == b"connection":
            tokens = {token.strip() for token in value.lower().split(b",")}
            keep_alive = b"keep-alive" in tokens or (keep_alive and b"close" not in tokens)
        elif name == b"expect":
            expects_continue = value.strip(b" \t").lower() == b"100-continue" and version != b"HTTP/1.0"
    return Head(method, _request_path(target), length or 0, keep_alive, expects_continue)


class PaymentsLane(asyncio.Protocol):
    """One connection from nginx: requests in, answers out, in order."""

    __slots__ = ("admission", "_transport", "_buffer", "_waiting", "_answering", "_continued", "_cutoff")

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting = False  # an answer is pending ("cache" ack mode)
        self._answering: asyncio.Future[None] | None = None  # held: the loop keeps only weak refs
        self._continued = False  # 100 Continue sent for the request in the buffer
        self._cutoff: asyncio.TimerHandle | None = None  # ends a request that stopped arriving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a stream socket's: it can write

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._disarm()

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
        """Every whole request in the buffer, in order; then, if part of one
        is left, wait for the rest, but not for ever."""
        buffer = self._buffer
        while self._transport is not None and not self._waiting:
            while buffer.startswith(b"\r\n"):
                del buffer[:2]  # blank lines before a request line are to be ignored (RFC 9112, 2.2)
            end = buffer.find(b"\r\n\r\n")
            try:
                if (end < 0 and len(buffer) > MAX_HEAD_BYTES) or end > MAX_HEAD_BYTES:
                    raise BadFraming(431, "request head too large")
                if end < 0:
                    break
                head = _parse_head(bytes(buffer[:end]))
                if head.length > MAX_BODY_BYTES:
                    raise BadFraming(413, TOO_LARGE)
            except BadFraming as exc:
                self._send(http_error(exc.status, str(exc), close=True), keep_alive=False)
                self.admission.invalid(exc.status)
                return
            start = end + 4
            if len(buffer) < start + head.length:
                if head.expects_continue and not self._continued:
                    self._continued = True
                    self._transport.write(CONTINUE)
                break  # the body is still on its way
            body = bytes(buffer[start:start + head.length])
            del buffer[:start + head.length]
            self._continued = False
            self._disarm()  # the next request, if any, has its own time
            self._answer(head.method, head.path, body, head.keep_alive)
        if buffer and not self._waiting and self._transport is not None and self._cutoff is None:
            self._arm()

    def _arm(self) -> None:
        """Start the clock on the partial request in the buffer."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # driven by hand, outside an event loop (unit tests): no clock
        self._cutoff = loop.call_later(PARTIAL_REQUEST_TIMEOUT_S, self._cut_off)

    def _disarm(self) -> None:
        if self._cutoff is not None:
            self._cutoff.cancel()
            self._cutoff = None

    def _cut_off(self) -> None:
        """A request that started arriving and stopped (a slow or stalled
        client): answered 408 and closed, so it holds no connection for ever."""
        self._cutoff = None
        if self._transport is not None and self._buffer and not self._waiting:
            self._send(http_error(408, "request not received in time", close=True), keep_alive=False)
            self.admission.invalid(408)

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
        started = perf_counter()
        admission = self.admission
        try:
            seq = admission.admit(body)
        except Refused as exc:
            self._send(http_error(exc.status, exc.message, exc.headers, close=not keep_alive), keep_alive)
            admission.answered(exc.status, started)
            return
        if admission.waits_for_cache:
            self._waiting = True
            self._answering = asyncio.ensure_future(self._answer_when_acknowledged(seq, keep_alive, started))
            return
        self._send(ACCEPTED if keep_alive else ACCEPTED_AND_CLOSE, keep_alive)
        admission.answered(202, started)

    async def _answer_when_acknowledged(self, seq: int, keep_alive: bool, started: float) -> None:
        await self.admission.acknowledged(seq)
        self._waiting = False
        if self._transport is not None:
            self._send(ACCEPTED if keep_alive else ACCEPTED_AND_CLOSE, keep_alive)
            self.admission.answered(202, started)
            self._serve_buffered()

    def _send(self, answer: bytes, keep_alive: bool) -> None:
        transport = self._transport
        assert transport is not None
        transport.write(answer)
        if not keep_alive:
            transport.close()
            self._transport = None
