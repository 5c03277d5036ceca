"""Properties of the request parsers over arbitrary input: they accept exactly
the valid slips and timestamps, and fail only with their own exception."""

import uuid

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.payment import MAX_AMOUNT_CENTS, InvalidPayment, parse_slip
from services.common.timefmt import InvalidTimestamp, format_ms, parse_iso_ms, parse_iso_us

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_VALUES = JSON | st.uuids().map(str) | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(float)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_fail_cleanly(body: bytes) -> None:
    try:
        slip = parse_slip(body)
    except InvalidPayment:
        return
    assert 0 < slip.amount_cents <= MAX_AMOUNT_CENTS


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({}, optional={"correlationId": FIELD_VALUES, "amount": FIELD_VALUES, "extra": JSON}))
def test_any_object_parses_to_a_canonical_slip_or_fails_cleanly(data: dict) -> None:
    try:
        slip = parse_slip(orjson.dumps(data))
    except InvalidPayment:
        return
    assert str(uuid.UUID(slip.correlation_id)) == slip.correlation_id
    assert 0 < slip.amount_cents <= MAX_AMOUNT_CENTS
    assert abs(data["amount"] * 100 - slip.amount_cents) <= 1e-3


@settings(max_examples=300, deadline=None)
@given(st.uuids(), st.integers(min_value=1, max_value=MAX_AMOUNT_CENTS))
def test_valid_slips_round_trip(correlation_id: uuid.UUID, cents: int) -> None:
    body = orjson.dumps({"correlationId": str(correlation_id).upper(), "amount": cents / 100})
    slip = parse_slip(body)
    assert slip.correlation_id == str(correlation_id)
    assert slip.amount_cents == cents


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_timestamps_parse_or_fail_cleanly(text: str) -> None:
    try:
        assert isinstance(parse_iso_us(text), int)
    except InvalidTimestamp:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800_000))  # 1970 .. 2100
def test_millisecond_timestamps_round_trip(epoch_ms: int) -> None:
    text = format_ms(epoch_ms)
    assert text.endswith("Z") and len(text) == 24
    assert parse_iso_ms(text) == epoch_ms
