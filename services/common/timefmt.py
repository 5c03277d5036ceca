"""Timestamps as the processors see them.

The processors compare ``requested_at BETWEEN from AND to`` on the exact value we
sent, so we keep time as integers (epoch milliseconds for what we send, epoch
microseconds for query bounds) and never round-trip through floats.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime

_ISO = re.compile(  # ASCII digits only: str's \d also matches other scripts' digits
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:?\d{2})?$",
    re.ASCII,
)


class InvalidTimestamp(ValueError):
    """A from/to value that is not an ISO-8601 timestamp."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_ms(epoch_ms: int) -> str:
    """``2025-07-10T12:34:56.789Z``: millisecond precision, always with ``Z``."""
    seconds, millis = divmod(epoch_ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _second(epoch_seconds: int) -> str:
    """Formatting the date is most of the cost; a burst of payments shares the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))


def parse_iso_us(text: str, *, round_up: bool = False) -> int:
    """Epoch microseconds of an ISO-8601 timestamp (UTC when no offset is given).

    Digits beyond microseconds are dropped, rounding towards the inside of a
    window when ``round_up`` is set (use it for a lower bound).
    """
    match = _ISO.match(text.strip())
    if match is None:
        raise InvalidTimestamp(f"not an ISO-8601 timestamp: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second), tzinfo=UTC)
    except ValueError as exc:
        raise InvalidTimestamp(f"not a valid date or time: {text!r}") from exc
    epoch_us = (int(moment.timestamp()) * 1_000_000)
    if fraction:
        digits = fraction.ljust(9, "0")
        epoch_us += int(digits[:6])
        if round_up and int(digits[6:]) > 0:
            epoch_us += 1
    if offset and offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[-2:])
        if hours > 23 or minutes > 59:
            raise InvalidTimestamp(f"bad UTC offset in {text!r}")
        epoch_us -= sign * (hours * 3600 + minutes * 60) * 1_000_000
    return epoch_us


def parse_iso_ms(text: str) -> int:
    """Epoch milliseconds of a timestamp a processor gave back to us."""
    return parse_iso_us(text) // 1000
