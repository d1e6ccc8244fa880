"""Durations: "90s", "15m", "2h", "7d", "1h30m" and back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.durations import format_duration, format_short, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
        ("0s", timedelta(0)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "two hours", "2 h", "-5m", "1.5h", "2w", "5m3"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(hours=3, minutes=12), "3h12m"),
        (timedelta(days=2, hours=4), "2d4h"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.integers(min_value=0, max_value=10**8))
def test_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=3, minutes=12, seconds=5), "3h12m"),
        (timedelta(days=2, hours=4, minutes=3), "2d4h"),
        (timedelta(hours=1, seconds=30), "1h"),
        (timedelta(minutes=5, seconds=7), "5m7s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(0), "0s"),
        (-timedelta(minutes=90), "-1h30m"),
    ],
)
def test_durations_for_people_keep_their_two_largest_units(value: timedelta, text: str) -> None:
    assert format_short(value) == text
