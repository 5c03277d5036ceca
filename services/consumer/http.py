"""A small HTTP/1.1 client: keep-alive connections to one origin, explicit timeouts.

The processors' API is three JSON endpoints on plain HTTP. For that, aiohttp's
client cost more CPU per request than this one and more RSS, and httpx could
not keep up with a drain's rate
(BENCHMARKS.md, "Decisions in force": own HTTP client). What it must get
right is the one thing the ledger depends on: telling "nothing was sent"
(``ConnectFailed``) from "sent, answer unknown" (``AnswerLost``).

The pool bounds every connection it opens (idle, in use and being opened) by
``ConnectionLimits.max_connections``: a processor that stops answering must not make
us open one more socket per request until file descriptors, or its accept
queue, run out. A request that finds the pool full queues (first come, first
served) for a connection someone returns or a slot someone frees, within its
own deadline; if that passes, nothing was sent (``PoolExhausted``). Each slot
is freed exactly once, by whoever closes the connection holding it, or is
handed on to the first waiter: a leaked slot would wedge the pool for good.

Interim answers (1xx) are skipped: only a final answer says what became of the
request, and it must arrive within the same deadline. 101 (Switching Protocols)
is never asked for, so it is an unreadable answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit


class HttpError(Exception):
    """A request did not produce a complete answer."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was certainly not sent."""


class PoolExhausted(ConnectFailed):
    """Every connection the pool may open stayed busy until the request's
    deadline: it waited for one and was certainly not sent."""


class AnswerLost(HttpError):
    """The request may have been sent, but no complete answer came back
    (timeout, connection dropped, unreadable response)."""


class UnreadableAnswer(ValueError):
    """The bytes that came back are not an HTTP/1.x answer we can use."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_connections: int = 128  # all open connections: idle + in use + being opened
    max_idle: int = 128  # capped at max_connections
    idle_seconds: float = 4.0  # below the usual 5 s server keep-alive timeout
    connect_seconds: float = 1.0


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


# What a waiter is handed: a live connection, or None for a free slot to open one on.
_Handover: TypeAlias = "asyncio.Future[_Connection | None]"


class Origin:
    """Keep-alive connections to one ``http://host:port``, at most ``max_connections`` open."""

    def __init__(self, url: str, limits: ConnectionLimits = ConnectionLimits()) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: only plain http://host[:port] URLs are supported")
        if limits.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {limits.max_connections}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.limits = limits
        self._max_connections = limits.max_connections
        self._max_idle = min(limits.max_idle, limits.max_connections)
        self._prefix = url.rstrip("/")
        self._host_header = parts.netloc.encode()
        self._idle: deque[_Connection] = deque()
        self._open = 0  # slots taken: connections idle, in use or being opened
        self._waiters: deque[_Handover] = deque()

    def __repr__(self) -> str:
        return f"Origin({self._prefix})"

    @property
    def open_connections(self) -> int:
        """Slots taken: idle connections, those in use and those being opened."""
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      timeout: float) -> Response:
        """One request, answered in full within ``timeout`` seconds, or an HttpError."""
        now = time.monotonic()
        deadline = now + timeout
        connection = self._reuse(now)
        if connection is None:
            connection = await self._acquire(deadline)
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), path.encode(), self._host_header)
        if body or method == "POST":
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                connection.writer.write(head + b"\r\n" + body)
                response, keep_alive = await _read_response(connection.reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            self._discard(connection)  # its state is unknown: never reuse it
            raise AnswerLost(f"{method} {self._prefix}{path}: {exc!r}") from exc
        except BaseException:  # cancelled mid-request: the late answer must not reach the next one
            self._discard(connection)
            raise
        if keep_alive:
            self._give_back(connection)
        else:
            self._discard(connection)
        return response

    def _reuse(self, now: float) -> _Connection | None:
        oldest_allowed = now - self.limits.idle_seconds
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely to be stale
            if connection.idle_since >= oldest_allowed and not connection.reader.at_eof():
                return connection
            self._discard(connection)
        return None

    async def _acquire(self, deadline: float) -> _Connection:
        """A connection on a slot of its own: a new one, or one a waiter is handed."""
        if self._open < self._max_connections:
            self._open += 1
            handed = None
        else:
            handed = await self._wait(deadline)
            if handed is not None:
                if not handed.reader.at_eof():
                    return handed
                handed.writer.close()  # dropped while handed over: open another on its slot
        try:
            return await self._connect(min(max(0.0, deadline - time.monotonic()),
                                           self.limits.connect_seconds))
        except BaseException:  # failed or cancelled: the slot was never used
            self._free_slot()
            raise

    async def _wait(self, deadline: float) -> _Connection | None:
        """Queues for a returned connection or a freed slot until ``deadline``."""
        waiter: _Handover = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection or slot just as it gave up: pass it on, or it leaks.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._give_back(handed)
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise PoolExhausted(f"{self._prefix}: all {self._max_connections} connections "
                                    "stayed busy until the deadline") from exc
            raise

    def _hand_over(self, handed: _Connection | None) -> bool:
        """Gives a connection, or a slot (None), to the first waiter still waiting."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _give_back(self, connection: _Connection) -> None:
        """A connection fit for reuse: to a waiter, else to the idle pool, else closed."""
        if self._waiters and self._hand_over(connection):
            return
        if len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        """Closes a connection and frees its slot: the only way one is closed."""
        connection.writer.close()
        self._free_slot()

    def _free_slot(self) -> None:
        if not (self._waiters and self._hand_over(None)):
            self._open -= 1

    async def _connect(self, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{self._prefix}: {exc!r}") from exc
        return _Connection(reader, writer)

    def close(self) -> None:
        """Closes the idle connections; those in use are closed as their requests end."""
        while self._idle:
            self._discard(self._idle.pop())


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """(the final response, whether the connection can be reused); interim 1xx are skipped."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")  # the stream's 64 KiB limit bounds it
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        status = int(rest[:3])
        if status >= 200:
            break
        if status == 101 or status < 100:
            raise UnreadableAnswer(f"status {status} in answer to a plain request")
        # 100 Continue, 102 Processing, 103 Early Hints...: no body, the final answer follows.
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
    if status in (204, 304):
        body = b""
    elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        body = await _read_chunked(reader)
    elif b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    else:
        body = await reader.read()  # delimited by the end of the connection
        keep_alive = False
    return Response(status, headers, body), keep_alive


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])
