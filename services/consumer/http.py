"""A small HTTP/1.1 client: keep-alive connections to one origin, explicit timeouts.

The processors' API is three JSON endpoints on plain HTTP. For that, aiohttp's
client cost about twice the CPU per request of this one and the consumer 12 MB
of RSS; httpx could not sustain 2,000 requests/s (BENCHMARKS.md, "The
consumer's HTTP client"). What it must get right is the one thing the ledger
depends on: telling "nothing was sent" (``ConnectFailed``) from "sent, answer
unknown" (``AnswerLost``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """A request did not produce a complete answer."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was certainly not sent."""


class AnswerLost(HttpError):
    """The request may have been sent, but no complete answer came back
    (timeout, connection dropped, unreadable response)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class PoolLimits:
    max_idle: int = 128
    idle_seconds: float = 4.0  # below the usual 5 s server keep-alive timeout
    connect_seconds: float = 1.0


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


class Origin:
    """Keep-alive connections to one ``http://host:port``."""

    def __init__(self, url: str, limits: PoolLimits = PoolLimits()) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r}: only plain http://host[:port] URLs are supported")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.limits = limits
        self._prefix = url.rstrip("/")
        self._host_header = parts.netloc.encode()
        self._idle: deque[_Connection] = deque()

    def __repr__(self) -> str:
        return f"Origin({self._prefix})"

    async def request(self, method: str, path: str, body: bytes = b"", *,
                      timeout: float) -> Response:
        """One request, answered in full within ``timeout`` seconds, or an HttpError."""
        deadline = time.monotonic() + timeout
        connection = self._reuse()
        if connection is None:
            connection = await self._connect(min(timeout, self.limits.connect_seconds))
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode(), path.encode(), self._host_header)
        if body or method == "POST":
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                connection.writer.write(head + b"\r\n" + body)
                response, keep_alive = await _read_response(connection.reader)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as exc:
            connection.writer.close()  # its state is unknown: never reuse it
            raise AnswerLost(f"{method} {self._prefix}{path}: {exc!r}") from exc
        except BaseException:  # cancelled mid-request: the late answer must not reach the next one
            connection.writer.close()
            raise
        if keep_alive and len(self._idle) < self.limits.max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.writer.close()
        return response

    def _reuse(self) -> _Connection | None:
        oldest_allowed = time.monotonic() - self.limits.idle_seconds
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely to be stale
            if connection.idle_since >= oldest_allowed and not connection.reader.at_eof():
                return connection
            connection.writer.close()
        return None

    async def _connect(self, timeout: float) -> _Connection:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise ConnectFailed(f"{self._prefix}: {exc!r}") from exc
        return _Connection(reader, writer)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    """(response, whether the connection can be reused)."""
    head = await reader.readuntil(b"\r\n\r\n")  # the stream's 64 KiB limit bounds it
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    status = int(rest[:3])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    keep_alive = version == b"HTTP/1.1" and headers.get(b"connection", b"").lower() != b"close"
    if status in (204, 304) or 100 <= status < 200:
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
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])
