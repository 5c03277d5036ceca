"""The payment slip: what a valid ``POST /payments`` body is.

Pure functions, shared by the api (validation) and tests. Amounts become integer
cents here, once, so no later hop can disagree about rounding.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import orjson

PROCESSORS: tuple[str, str] = ("default", "fallback")

# Large enough for any real payment, small enough that a sum of millions of them
# stays exact in a JSON double.
MAX_AMOUNT_CENTS = 10**11


class InvalidPayment(ValueError):
    """The request body is not a valid payment slip; the message says why."""


@dataclass(frozen=True, slots=True)
class PaymentSlip:
    correlation_id: str
    amount_cents: int


def parse_slip(body: bytes) -> PaymentSlip:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidPayment("body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidPayment("body must be a JSON object")
    return PaymentSlip(
        correlation_id=_correlation_id(data.get("correlationId")),
        amount_cents=amount_to_cents(data.get("amount")),
    )


def _correlation_id(value: object) -> str:
    if value is None:
        raise InvalidPayment("correlationId is required")
    if not isinstance(value, str):
        raise InvalidPayment("correlationId must be a string")
    try:
        parsed = uuid.UUID(value)
    except ValueError as exc:
        raise InvalidPayment("correlationId must be a UUID") from exc
    if len(value) != 36:
        # uuid.UUID also accepts braces, "urn:uuid:" and no hyphens; only the
        # 8-4-4-4-12 form passes, stored lower-case so duplicates are found.
        raise InvalidPayment("correlationId must be a UUID in 8-4-4-4-12 form")
    return str(parsed)


def amount_to_cents(value: object) -> int:
    if value is None:
        raise InvalidPayment("amount is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPayment("amount must be a number")
    try:
        exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - repr of a float is always valid
        raise InvalidPayment("amount must be a number") from exc
    if not exact.is_finite():
        raise InvalidPayment("amount must be a finite number")
    if exact <= 0:
        raise InvalidPayment("amount must be greater than zero")
    cents = exact * 100
    if cents != cents.to_integral_value():
        raise InvalidPayment("amount must have at most 2 decimal places")
    if cents > MAX_AMOUNT_CENTS:
        raise InvalidPayment(f"amount must be at most {MAX_AMOUNT_CENTS // 100}")
    return int(cents)


def cents_to_amount(cents: int) -> float:
    return cents / 100
