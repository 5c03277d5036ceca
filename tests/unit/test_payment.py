import orjson
import pytest

from services.common.payment import InvalidPayment, amount_to_cents, parse_slip

UUID = "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"


def test_valid_slip_becomes_cents() -> None:
    slip = parse_slip(b'{"correlationId": "%s", "amount": 19.90}' % UUID.encode())
    assert slip.correlation_id == UUID
    assert slip.amount_cents == 1990


def test_upper_case_uuid_is_stored_lower_case() -> None:
    slip = parse_slip(b'{"correlationId": "%s", "amount": 1}' % UUID.upper().encode())
    assert slip.correlation_id == UUID
    assert slip.amount_cents == 100


@pytest.mark.parametrize("amount, cents", [(0.01, 1), (19.9, 1990), (1, 100), (1234567.89, 123456789)])
def test_amounts(amount: float, cents: int) -> None:
    assert amount_to_cents(amount) == cents


def test_float_noise_of_a_two_decimal_amount_is_that_amount() -> None:
    assert amount_to_cents(0.1 + 0.2) == 30
    assert amount_to_cents(57 * 0.01) == 57
    assert amount_to_cents(999_999_999.99) == 99_999_999_999


@pytest.mark.parametrize("amount", [1.005, 0.001, 19.999, 5e-324, 19.999999, 0.009999, 1.000001,
                                    999_999_999.991])
def test_a_real_third_decimal_is_refused(amount: float) -> None:
    with pytest.raises(InvalidPayment):
        amount_to_cents(amount)


@pytest.mark.parametrize("lookalike", [
    "urn:4a7901b87d264d9daa194dc1c7cf60b3",  # uuid.UUID takes all of these
    "{{4a7901b87d264d9daa194dc1c7cf60b3}}",
    "4a7901b87d26-4d9d-aa19-4dc1-c7cf60b3",
    "+4a791b8-7d26-4d9d-aa19-4dc1c7cf60b3",
    "\uff14a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3",  # a fullwidth digit
    "\u0664a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3",  # an Arabic-Indic digit
    UUID + "\n",
])
def test_only_the_8_4_4_4_12_form_is_a_correlation_id(lookalike: str) -> None:
    body = b'{"correlationId": "%s", "amount": 1}' % lookalike.encode("unicode_escape")
    with pytest.raises(InvalidPayment, match="8-4-4-4-12"):
        parse_slip(body)


@pytest.mark.parametrize("body, message", [
    (b"", "JSON"),
    (b"{not json", "JSON"),
    (b"[]", "object"),
    (b'"x"', "object"),
    (b'{"amount": 1}', "correlationId is required"),
    (b'{"correlationId": 5, "amount": 1}', "must be a string"),
    (b'{"correlationId": "nope", "amount": 1}', "UUID"),
    (b'{"correlationId": "4a7901b87d264d9daa194dc1c7cf60b3", "amount": 1}', "8-4-4-4-12"),
    (b'{"correlationId": "%s"}' % UUID.encode(), "amount is required"),
    (b'{"correlationId": "%s", "amount": "19.90"}' % UUID.encode(), "number"),
    (b'{"correlationId": "%s", "amount": true}' % UUID.encode(), "number"),
    (b'{"correlationId": "%s", "amount": 0}' % UUID.encode(), "greater than zero"),
    (b'{"correlationId": "%s", "amount": -5}' % UUID.encode(), "greater than zero"),
    (b'{"correlationId": "%s", "amount": 1.001}' % UUID.encode(), "2 decimal"),
    (b'{"correlationId": "%s", "amount": 1e300}' % UUID.encode(), "at most"),
    (b'{"correlationId": "%s", "amount": null}' % UUID.encode(), "amount is required"),
])
def test_invalid_slips(body: bytes, message: str) -> None:
    with pytest.raises(InvalidPayment, match=message):
        parse_slip(body)


@pytest.mark.parametrize("amount, message", [
    # Valid JSON with an amount out of range: the contract's 422, not the 400 of a malformed body.
    (b"1e309", "finite"),
    (b"-1e309", "finite"),
    (b"1e5000", "finite"),
    (b"1" + b"0" * 400, "at most"),
    (b"1e-400", "greater than zero"),
    (b"-0", "greater than zero"),
    (b"-0.0", "greater than zero"),
])
def test_numbers_out_of_range_are_a_wrong_field(amount: bytes, message: str) -> None:
    with pytest.raises(InvalidPayment, match=message) as refused:
        parse_slip(b'{"correlationId": "%s", "amount": %s}' % (UUID.encode(), amount))
    assert refused.value.status == 422


@pytest.mark.parametrize("body", [
    b'{"correlationId": "%s", "amount": NaN}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": Infinity}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": -Infinity}' % UUID.encode(),
    b'\xef\xbb\xbf{"correlationId": "%s", "amount": 1}' % UUID.encode(),
    b'{"correlationId": "%s\xe9", "amount": 1}' % UUID[:-1].encode(),
    (f'{{"correlationId": "{UUID}", "amount": 1}}').encode("utf-16"),
    # Out of range and also malformed: the fallback for 1e309 must not take what orjson refuses.
    b'\xef\xbb\xbf{"correlationId": "%s", "amount": 1e309}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": 1e309, "x": "\xe9"}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": 1e309, "x": "\\ud800"}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": 1e309, "x": NaN}' % UUID.encode(),
    b'{"correlationId": "%s", "amount": 1e309' % UUID.encode(),
])
def test_bodies_that_are_not_utf8_json_are_malformed(body: bytes) -> None:
    with pytest.raises(InvalidPayment, match="JSON") as refused:
        parse_slip(body)
    assert refused.value.status == 400


def test_orjson_still_names_an_overflowing_number_as_the_fallback_expects() -> None:
    """parse_json_slip tells 1e309 from malformed JSON by orjson's message."""
    with pytest.raises(orjson.JSONDecodeError, match="^number is infinity"):
        orjson.loads(b"1e309")
