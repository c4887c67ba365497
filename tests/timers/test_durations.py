"""The duration grammar: properties over generated inputs, plus the documented examples."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import example, given
from hypothesis import strategies as st

from timers.durations import DurationError, parse_duration, parse_duration_setting

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
LONG_NAMES = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ISO_TIME = {"H": 3600, "M": 60, "S": 1}

# timedelta.max, in milliseconds: beyond it a duration cannot be represented.
MAX_MS = timedelta.max // timedelta(milliseconds=1)

amounts = st.integers(min_value=0, max_value=100_000)


def ms(n: int | Decimal) -> timedelta:
    return timedelta(microseconds=int(Decimal(n) * 1000))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("PT15M", timedelta(minutes=15)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("pt15m", timedelta(minutes=15)),
        ("2 hours 5 minutes", timedelta(hours=2, minutes=5)),
        ("1.5h", timedelta(minutes=90)),
        (5000, timedelta(seconds=5)),
        ("5000", timedelta(seconds=5)),
    ],
)
def test_documented_examples_parse_to_their_length(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@given(n=st.integers(min_value=-(10**12), max_value=10**12))
def test_an_integer_is_that_many_milliseconds_as_number_or_string(n: int) -> None:
    assert parse_duration(n) == ms(n)
    assert parse_duration(str(n)) == ms(n)


@given(n=st.integers(min_value=0, max_value=10**9), frac=st.integers(min_value=0, max_value=999))
def test_a_decimal_string_without_unit_is_milliseconds_like_a_json_number(n: int, frac: int) -> None:
    text = f"{n}.{frac:03d}"
    assert parse_duration(text) == ms(Decimal(text))


@given(amount=amounts, unit=st.sampled_from(sorted(UNIT_MS)), upper=st.booleans(), long=st.booleans())
def test_a_single_unit_is_amount_times_unit_length(amount: int, unit: str, upper: bool, long: bool) -> None:
    name = LONG_NAMES[unit] if long else unit
    text = f"{amount} {name}" if long else f"{amount}{name}"
    assert parse_duration(text.upper() if upper else text) == ms(amount * UNIT_MS[unit])


@given(parts=st.dictionaries(st.sampled_from(sorted(UNIT_MS)), amounts, min_size=1), spaced=st.booleans())
def test_a_compound_duration_is_the_sum_of_its_parts(parts: dict[str, int], spaced: bool) -> None:
    ordered = sorted(parts.items(), key=lambda kv: -UNIT_MS[kv[0]])
    text = (" " if spaced else "").join(f"{amount}{unit}" for unit, amount in ordered)
    assert parse_duration(text) == ms(sum(amount * UNIT_MS[unit] for unit, amount in ordered))


@given(amount=st.integers(min_value=0, max_value=10**6), thousandths=st.integers(min_value=0, max_value=999))
@example(amount=1, thousandths=1)
def test_fractional_seconds_are_exact_to_the_millisecond(amount: int, thousandths: int) -> None:
    assert parse_duration(f"{amount}.{thousandths:03d}s") == ms(amount * 1000 + thousandths)


@given(
    days=st.integers(min_value=0, max_value=400),
    time=st.dictionaries(st.sampled_from(sorted(ISO_TIME)), st.integers(min_value=0, max_value=10_000), min_size=1),
)
def test_iso8601_durations_are_the_sum_of_their_fields(days: int, time: dict[str, int]) -> None:
    ordered = [(d, time[d]) for d in "HMS" if d in time]
    text = f"P{days}DT" + "".join(f"{n}{d}" for d, n in ordered)
    assert parse_duration(text) == timedelta(days=days, seconds=sum(n * ISO_TIME[d] for d, n in ordered))


@given(value=st.text(max_size=80))
def test_arbitrary_text_either_parses_or_raises_duration_error(value: str) -> None:
    try:
        result = parse_duration(value)
    except DurationError as exc:
        assert str(exc)
    else:
        assert isinstance(result, timedelta)


@given(value=st.one_of(st.none(), st.booleans(), st.lists(st.integers()), st.dictionaries(st.text(), st.integers())))
def test_non_string_non_number_values_raise_duration_error(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


@given(value=st.floats(allow_nan=True, allow_infinity=True))
@example(value=9e16)
@example(value=-1.5)
def test_any_float_is_milliseconds_or_a_duration_error(value: float) -> None:
    in_range = math.isfinite(value) and abs(value) < MAX_MS
    try:
        result = parse_duration(value)
    except DurationError:
        assert not in_range
    else:
        assert in_range
        assert result == timedelta(microseconds=int(Decimal(value) * 1000))


@given(
    amount=st.integers(min_value=1, max_value=1000),
    unit=st.sampled_from(["y", "yr", "year", "years", "mo", "month", "months"]),
)
def test_calendar_units_are_refused(amount: int, unit: str) -> None:
    with pytest.raises(DurationError, match="calendar units"):
        parse_duration(f"{amount}{unit}")


@pytest.mark.parametrize("text", ["P1M", "P1Y", "P2Y3M", "P1YT5M"])
def test_iso8601_months_and_years_are_refused(text: str) -> None:
    with pytest.raises(DurationError, match="months or years"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "soon", "5 parsecs", "1e3", "1:30", "1h30", "5.", "1_000", "\u0661\u0662", "h", "1h,30m", "x" * 65],
)
def test_text_outside_the_grammar_is_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@given(amount=st.integers(min_value=1, max_value=10**6), unit=st.sampled_from(sorted(UNIT_MS)))
def test_a_leading_minus_negates_the_duration(amount: int, unit: str) -> None:
    assert parse_duration(f"-{amount}{unit}") == -parse_duration(f"{amount}{unit}")


@pytest.mark.parametrize("value", [10**30, "10" * 30, "99999999999999d", 1e300])
def test_values_beyond_timedelta_range_raise_duration_error(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


def test_duration_settings_must_be_positive() -> None:
    assert parse_duration_setting("MINOOTS_TICK", "10ms") == timedelta(milliseconds=10)
    with pytest.raises(ImproperlyConfigured, match="MINOOTS_TICK must be positive"):
        parse_duration_setting("MINOOTS_TICK", "0s")
    with pytest.raises(ImproperlyConfigured, match="MINOOTS_ARM_HORIZON"):
        parse_duration_setting("MINOOTS_ARM_HORIZON", "soonish")
