"""Waiting until something holds: the one polling loop of the tools and the tests.

``wait_until(condition, timeout=…, what=…)`` calls ``condition()`` every
``interval`` seconds until it returns something truthy, and returns that. Past
``timeout`` (one last call at the deadline) it raises ``NotReached``, whose
message says what was awaited and for how long, the last exception the
condition raised of those it was told to take as "not yet" (``ignoring``: a
service that is restarting refuses connections), and whatever ``on_timeout()``
adds (a log's tail, the last reading). Any other exception of the condition
ends the wait at once (a process that died will not come up).

``wait_until_async`` is the same loop for a coroutine (its condition may be a
plain function or a coroutine function); ``wait_steady`` waits until a reading
has stopped changing. Everything that polls, in tools/ and tests/, goes through
these: specific helpers (``processes.wait_started``: the process must stay
alive meanwhile) call them rather than loop themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, overload

T = TypeVar("T")

Errors = type[BaseException] | tuple[type[BaseException], ...]


class NotReached(TimeoutError):
    """What was awaited did not happen within the time given.

    A TimeoutError, hence an OSError: a condition told to ignore OSError
    ignores a nested wait's NotReached too."""

    def __init__(self, what: str, timeout: float, error: BaseException | None = None, context: str = "") -> None:
        message = f"timed out after {timeout:g}s waiting for {what}"
        if error is not None:
            message += f" (last error: {error!r})"
        if context:
            message += f"\n{context}"
        super().__init__(message)
        self.what = what
        self.timeout = timeout
        self.error = error


class _Attempts:
    """One wait: its deadline, the pauses between attempts, and what the
    condition last raised among the errors taken as "not yet"."""

    def __init__(self, *, timeout: float, what: str, interval: float, ignoring: Errors,
                 on_timeout: Callable[[], str] | None) -> None:
        self.timeout, self.what, self.interval = timeout, what, interval
        self.ignoring, self.on_timeout = ignoring, on_timeout
        self.deadline = time.monotonic() + timeout
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[float]:
        """The pause after each attempt; the last attempt is at the deadline."""
        while (left := self.deadline - time.monotonic()) > 0:
            yield min(self.interval, left)
        yield 0.0

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        try:
            yield
        except self.ignoring as exc:
            self.error = exc

    def not_reached(self) -> NotReached:
        return NotReached(self.what, self.timeout, self.error, self.on_timeout() if self.on_timeout else "")


def wait_until(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05,
               ignoring: Errors = (), on_timeout: Callable[[], str] | None = None) -> T:
    """``condition()``'s first truthy value; ``NotReached`` after ``timeout`` seconds.

    ``what`` names what is awaited ("redis to come up", "an empty queue");
    ``ignoring``: exceptions of ``condition`` that mean "not yet";
    ``on_timeout()``: more for the message (called only on a timeout)."""
    attempts = _Attempts(timeout=timeout, what=what, interval=interval, ignoring=ignoring, on_timeout=on_timeout)
    for pause in attempts:
        with attempts.attempt():
            if value := condition():
                return value
        time.sleep(pause)
    raise attempts.not_reached()


@overload
async def wait_until_async(condition: Callable[[], Awaitable[T]], *, timeout: float, what: str,
                           interval: float = ..., ignoring: Errors = ...,
                           on_timeout: Callable[[], str] | None = ...) -> T: ...


@overload
async def wait_until_async(condition: Callable[[], T], *, timeout: float, what: str, interval: float = ...,
                           ignoring: Errors = ..., on_timeout: Callable[[], str] | None = ...) -> T: ...


async def wait_until_async(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05,
                           ignoring: Errors = (), on_timeout: Callable[[], str] | None = None) -> Any:
    """``wait_until`` for a coroutine: the pauses let the event loop run, and
    ``condition()`` may return an awaitable (it is awaited)."""
    attempts = _Attempts(timeout=timeout, what=what, interval=interval, ignoring=ignoring, on_timeout=on_timeout)
    for pause in attempts:
        with attempts.attempt():
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        await asyncio.sleep(pause)
    raise attempts.not_reached()


def wait_steady(read: Callable[[], T], *, seconds: float, timeout: float, what: str, interval: float = 0.5,
                figures: Callable[[T], object] = lambda reading: reading) -> T:
    """The reading once ``figures(read())`` has stayed the same for ``seconds``
    (counters that have stopped moving); ``NotReached`` after ``timeout``."""
    last, since = read(), time.monotonic()

    def steady() -> tuple[T, ...]:  # empty (falsy) until steady: the reading itself may be falsy
        nonlocal last, since
        now = read()
        if figures(now) != figures(last):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return (now,)
        return ()

    return wait_until(steady, timeout=timeout, what=f"{what} to stay the same for {seconds:g}s", interval=interval,
                      on_timeout=lambda: f"last seen: {figures(last)!r}"[:2000])[0]
