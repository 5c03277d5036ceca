"""The stand-in's own timestamps: ``requestedAt`` and the summary's ``from``/``to``.

Written apart from the pipeline's (services/common/timefmt.py) on purpose: the
stand-in is the oracle the pipeline's tests trust, and a bug shared by both
would pass every test. So it shares no code with it and takes another road:
the layout is checked character by character, the calendar and clock are left
to ``datetime.fromisoformat``, and the instant is counted with ``timedelta``
arithmetic from the epoch (no regular expression, no ``timestamp()``).

What it accepts (docs/contract.md §2: "ISO UTC", e.g. ``2020-07-10T12:34:56.000Z``):
an ISO-8601 extended date and time, ``YYYY-MM-DD`` then ``T`` or a space then
``hh:mm:ss``, with ASCII digits only, surrounding blanks ignored; optionally a
fraction of a second after ``.`` or ``,`` (1 to 9 digits); optionally a zone,
``Z``, ``z``, ``±hh:mm`` or ``±hhmm`` (hours up to 23, minutes up to 59);
without one the time is UTC. A date alone, seconds left out, or the basic
format (``20200710T123456``) are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
DIGITS = frozenset("0123456789")
# The fixed part, position by position: "9" a digit, "_" the date-time
# separator ("T" or a space), anything else itself.
LAYOUT = "9999-99-99_99:99:99"


class NotATimestamp(ValueError):
    """Text that is not a timestamp in the form above."""


def _digits(text: str) -> bool:
    return bool(text) and all(char in DIGITS for char in text)


def _laid_out(head: str) -> bool:
    """``head`` follows LAYOUT position by position."""
    if len(head) != len(LAYOUT):
        return False
    for char, want in zip(head, LAYOUT, strict=True):
        if want == "9":
            fits = char in DIGITS
        elif want == "_":
            fits = char in ("T", " ")
        else:
            fits = char == want
        if not fits:
            return False
    return True


def _fraction_and_zone(rest: str) -> tuple[str, str]:
    """``rest`` (what follows the seconds) -> (fraction digits, zone)."""
    fraction = ""
    if rest[:1] in (".", ","):
        end = 1
        while end < len(rest) and rest[end] in DIGITS:
            end += 1
        fraction, rest = rest[1:end], rest[end:]
        if not 1 <= len(fraction) <= 9:
            raise NotATimestamp("a fraction of a second has 1 to 9 digits")
    return fraction, rest


def _offset(zone: str) -> timedelta:
    if zone in ("", "Z", "z"):
        return timedelta(0)
    sign, body = zone[0], zone[1:]
    if len(body) == 5 and body[2] == ":":  # ±hh:mm, else ±hhmm
        body = body[:2] + body[3:]
    if sign not in ("+", "-") or len(body) != 4 or not _digits(body):
        raise NotATimestamp(f"not a UTC offset: {zone!r}")
    hours, minutes = int(body[:2]), int(body[2:])
    if hours > 23 or minutes > 59:
        raise NotATimestamp(f"not a UTC offset: {zone!r}")
    offset = timedelta(hours=hours, minutes=minutes)
    return offset if sign == "+" else -offset


def epoch_us(text: str, *, round_up: bool = False) -> int:
    """Microseconds since the epoch of the instant ``text`` names.

    Digits past the microsecond are dropped; with ``round_up`` (a lower bound)
    any that are not zero make it the next microsecond, so the bound stays
    inside the window it opens."""
    stripped = text.strip()
    head, rest = stripped[:len(LAYOUT)], stripped[len(LAYOUT):]
    if not _laid_out(head):
        raise NotATimestamp(f"not YYYY-MM-DDThh:mm:ss: {text!r}")
    fraction, zone = _fraction_and_zone(rest)
    try:
        moment = datetime.fromisoformat(f"{head[:10]}T{head[11:]}").replace(tzinfo=UTC)
    except ValueError as exc:
        raise NotATimestamp(f"no such date or time: {text!r}") from exc
    # Offsets apart from the datetime: 9999-12-31T23:59:59-23:59 is past datetime.max in UTC.
    count = (moment - EPOCH) // ONE_US - _offset(zone) // ONE_US
    if fraction:
        padded = fraction + "0" * (9 - len(fraction))
        count += int(padded[:6])
        if round_up and padded[6:] != "000":
            count += 1
    return count


def text_ms(epoch_ms: int) -> str:
    """``2025-07-10T12:34:56.789Z``: what the processor says it holds (milliseconds, ``Z``)."""
    moment = EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"
