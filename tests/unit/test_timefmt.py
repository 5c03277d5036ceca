import pytest

from services.common.timefmt import InvalidTimestamp, format_ms, parse_iso_ms, parse_iso_us

BASE_US = 1594384496000000  # 2020-07-10T12:34:56Z


@pytest.mark.parametrize("text, expected", [
    ("2020-07-10T12:34:56.000Z", BASE_US),
    ("2020-07-10T12:34:56Z", BASE_US),
    ("2020-07-10T12:34:56", BASE_US),
    ("2020-07-10T12:34:56.5Z", BASE_US + 500_000),
    ("2020-07-10T12:34:56.123456Z", BASE_US + 123_456),
    ("2020-07-10T12:34:56.123456789Z", BASE_US + 123_456),
    ("2020-07-10T15:34:56.000+03:00", BASE_US),
    ("2020-07-10T09:34:56-0300", BASE_US),
])
def test_parse(text: str, expected: int) -> None:
    assert parse_iso_us(text) == expected


def test_lower_bound_rounds_into_the_window() -> None:
    assert parse_iso_us("2020-07-10T12:34:56.0000001Z", round_up=True) == BASE_US + 1
    assert parse_iso_us("2020-07-10T12:34:56.0000001Z") == BASE_US


@pytest.mark.parametrize("text", ["", "yesterday", "2020-13-10T12:34:56Z", "2020-07-10",
                                  "2020-07-32T00:00:00Z", "2020-07-10T25:00:00Z", "2020-07-10T12:34:56+25:00"])
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidTimestamp):
        parse_iso_us(text)


def test_format_round_trips_with_millisecond_precision() -> None:
    assert format_ms(BASE_US // 1000 + 7) == "2020-07-10T12:34:56.007Z"
    assert parse_iso_ms(format_ms(1_700_000_000_123)) == 1_700_000_000_123
