"""Properties of the request parsers over arbitrary input: they accept exactly
the valid slips and timestamps, and fail only with their own exception."""

import uuid

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.payment import MAX_AMOUNT_CENTS, InvalidPayment, PaymentSlip, parse_json_slip, parse_slip
from services.common.timefmt import InvalidTimestamp, format_ms, parse_iso_ms, parse_iso_us

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
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


def _slip_or_error(parse, body: bytes) -> PaymentSlip | str:
    try:
        return parse(body)
    except InvalidPayment as exc:
        return f"{exc.status} {exc}"


PLAIN_AMOUNTS = (st.integers(min_value=0, max_value=10**10).map(str)
                 | st.tuples(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=999),
                             st.sampled_from(["%d", "%02d", "%03d"])).map(lambda t: f"{t[0]}.{t[2] % t[1]}")
                 | st.sampled_from(["0", "0.0", "0.00", "0.01", "00.5", "1.", "-1", "1e2", "999999999.99",
                                    "1000000000", "1000000000.01", "19.90", "0.001"]))
WHITESPACE = st.sampled_from(["", " ", "\n", "\t ", "\r\n", "\f", "\v"])


@settings(max_examples=600, deadline=None)
@given(st.uuids().map(str), st.booleans(), PLAIN_AMOUNTS, st.lists(WHITESPACE, min_size=10, max_size=10))
def test_the_fast_path_answers_as_the_full_parser(correlation_id: str, upper: bool, amount: str,
                                                   ws: list[str]) -> None:
    """Bodies near the plain form, valid or not: ``parse_slip`` (with its
    fast path for the plain form) and the reference ``parse_json_slip`` accept
    the same ones with the same fields, and refuse the others with the same
    status and message."""
    correlation_id = correlation_id.upper() if upper else correlation_id
    body = ('{0}{{{1}"correlationId"{2}:{3}"{id}"{4},{5}"amount"{6}:{7}{amount}{8}}}{9}'
            .format(*ws, id=correlation_id, amount=amount).encode())
    assert _slip_or_error(parse_slip, body) == _slip_or_error(parse_json_slip, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120) | FIELD_VALUES.map(lambda v: orjson.dumps({"correlationId": v, "amount": v})))
def test_the_fast_path_answers_as_the_full_parser_on_anything(body: bytes) -> None:
    assert _slip_or_error(parse_slip, body) == _slip_or_error(parse_json_slip, body)


# RFC 8259's number, with exponents far past a double's range either way.
JSON_NUMBERS = st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,5})?", fullmatch=True)


@settings(max_examples=500, deadline=None)
@given(st.uuids().map(str), JSON_NUMBERS)
def test_any_json_number_is_an_amount_or_a_wrong_field_never_malformed(correlation_id: str, amount: str) -> None:
    """A syntactically valid slip is never a 400, whatever its number: out of
    range (1e309, 1e-400) is a wrong field, 422, as the contract says."""
    body = b'{"correlationId": "%s", "amount": %s}' % (correlation_id.encode(), amount.encode())
    try:
        slip = parse_slip(body)
    except InvalidPayment as exc:
        assert exc.status == 422, (amount, str(exc))
        return
    assert 0 < slip.amount_cents <= MAX_AMOUNT_CENTS
