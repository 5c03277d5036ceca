"""The payment slip: what a valid ``POST /payments`` body is.

Pure functions, shared by the api (validation) and tests. Amounts become integer
cents here, once, so no later hop can disagree about rounding.
"""

from __future__ import annotations

import json
import math
import re
from typing import NamedTuple

import orjson

PROCESSORS: tuple[str, str] = ("default", "fallback")

# Large enough for any real payment, small enough that a sum of millions of them
# stays exact in a JSON double.
MAX_AMOUNT_CENTS = 10**11


class InvalidPayment(ValueError):
    """The request body is not a valid payment slip; the message says why."""

    status = 422


class MalformedBody(InvalidPayment):
    """The body is not a JSON object at all."""

    status = 400


class PaymentSlip(NamedTuple):
    """A tuple, not a frozen dataclass: built on every request of the api, where
    a frozen dataclass's ``__init__`` costs an ``object.__setattr__`` per field."""

    correlation_id: str
    amount_cents: int


_UUID_FORM = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # ASCII only
_UUID = re.compile(_UUID_FORM)
_WS = rb"[ \t\n\r]*"  # JSON's whitespace; not \s, which also takes \f and \v
# The form every client sends: the two fields in this order, a plain 8-4-4-4-12
# UUID and an amount with at most two decimals and at most nine integer digits
# (so always within MAX_AMOUNT_CENTS). Whatever else JSON allows (other key
# orders, extra keys, escapes, exponents) is left to the full parser.
_PLAIN_SLIP = re.compile(
    _WS + rb'\{' + _WS + rb'"correlationId"' + _WS + rb':' + _WS
    + rb'"(' + _UUID_FORM.encode() + rb')"'
    + _WS + rb',' + _WS + rb'"amount"' + _WS + rb':' + _WS
    + rb'(0|[1-9][0-9]{0,8})(?:\.([0-9]{1,2}))?' + _WS + rb'\}' + _WS)


def parse_slip(body: bytes) -> PaymentSlip:
    """The slip in ``body``, or ``InvalidPayment`` saying why not.

    The plain form is read by one compiled regular expression, in C, without
    building a dict or a UUID: faster than JSON warm, and far cheaper with the
    cold CPU caches the api runs this with
    (BENCHMARKS.md, "Decisions in force": lane fast path). Anything
    else goes through ``parse_json_slip``, and property tests hold the two paths
    to the same answers."""
    plain = _PLAIN_SLIP.fullmatch(body)
    if plain is not None:
        whole, fraction = plain.group(2, 3)
        cents = int(whole) * 100 + (int(fraction.ljust(2, b"0")) if fraction else 0)
        if cents:
            return PaymentSlip(plain[1].lower().decode(), cents)
    return parse_json_slip(body)


def parse_json_slip(body: bytes) -> PaymentSlip:
    """The reference parser: any JSON object, every rule checked field by field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        data = _out_of_range_json(body, exc)
    if not isinstance(data, dict):
        raise MalformedBody("body must be a JSON object")
    return PaymentSlip(
        correlation_id=_correlation_id(data.get("correlationId")),
        amount_cents=amount_to_cents(data.get("amount")),
    )


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _out_of_range_json(body: bytes, error: orjson.JSONDecodeError) -> object:
    """The document orjson refused only because a number overflows a double
    (``1e309``), or ``MalformedBody``.

    Such a body is valid JSON with an amount out of range: the contract's 422,
    not the 400 of a malformed body. The standard library reads it (the number
    as ``inf``, which the amount rules refuse); it takes nothing else orjson
    refuses: invalid UTF-8 and the BOM fail its strict decoding, NaN and
    Infinity ``_reject_constant``, and a lone surrogate escape, which it keeps
    in a string, fails to encode back to UTF-8."""
    if not str(error).startswith("number is infinity"):  # orjson's words for it; a unit test pins them
        raise MalformedBody("body is not valid JSON") from error
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except ValueError:  # UnicodeError and JSONDecodeError are ValueErrors
        raise MalformedBody("body is not valid JSON") from error
    return data


def _correlation_id(value: object) -> str:
    if value is None:
        raise InvalidPayment("correlationId is required")
    if not isinstance(value, str):
        raise InvalidPayment("correlationId must be a string")
    if _UUID.fullmatch(value) is None:
        # Not uuid.UUID: it also takes "urn:", braces, signs, misplaced hyphens
        # and non-ASCII digits, so two different strings could be one payment.
        raise InvalidPayment("correlationId must be a UUID in 8-4-4-4-12 form")
    return value.lower()  # so duplicates are found whatever the case


def amount_to_cents(value: object) -> int:
    """Cents of a JSON number with at most 2 decimal places.

    A float that is a 2-decimal value up to binary noise (0.1 + 0.2, or
    57 * 0.01 == 0.5700000000000001, as any client summing prices in floating
    point will send) counts as that value; a real further decimal (1.005,
    19.999999) does not. The tolerance is relative, 1e-13 of the amount: some
    hundreds of rounding errors of a double, and a hundredth of a cent even at
    the largest amount allowed.
    """
    if value is None:
        raise InvalidPayment("amount is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPayment("amount must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidPayment("amount must be a finite number")
    if value <= 0:
        raise InvalidPayment("amount must be greater than zero")
    if value > MAX_AMOUNT_CENTS // 100:
        raise InvalidPayment(f"amount must be at most {MAX_AMOUNT_CENTS // 100}")
    if isinstance(value, int):
        return value * 100
    scaled = value * 100
    cents = round(scaled)
    if abs(scaled - cents) > scaled * 1e-13:
        raise InvalidPayment("amount must have at most 2 decimal places")
    if cents < 1:
        raise InvalidPayment("amount must be at least 0.01")
    return cents

