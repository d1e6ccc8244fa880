"""Future timestamps (DESIGN 4.4): trusted up to the tolerance, not one second past it.

A provider timestamp a little ahead of janitor's clock is normal (clocks differ by seconds);
one far ahead would make a session look idle for the wrong time, so it is not trusted. The
boundary is exact: ``now + tolerance`` is trusted, anything later is an anomaly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from janitor.timestamps import check_aware, parse_epoch, parse_iso

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=2)
PAST = [timedelta(seconds=1), timedelta(microseconds=1), timedelta(minutes=18)]
TOLERANCES = pytest.mark.parametrize(
    "tolerance", [timedelta(0), TOLERANCE, timedelta(minutes=10)], ids=["0", "2m", "10m"]
)


def iso(value: datetime) -> str:
    """ISO 8601 with the offset."""
    return value.isoformat()


@TOLERANCES
def test_a_timestamp_exactly_at_the_tolerance_is_trusted(tolerance: timedelta) -> None:
    edge = NOW + tolerance
    assert parse_iso(iso(edge), field="t", now=NOW, tolerance=tolerance) == (edge, None)
    assert check_aware(edge, field="t", now=NOW, tolerance=tolerance) == (edge, None)
    seconds = edge.timestamp()
    assert parse_epoch(seconds, field="t", now=NOW, tolerance=tolerance) == (edge, None)
    millis = int(seconds * 1000)
    assert parse_epoch(millis, field="t", now=NOW, tolerance=tolerance, millis=True) == (
        edge,
        None,
    )


@TOLERANCES
@pytest.mark.parametrize("past", PAST, ids=["1s", "1us", "18m"])
def test_a_timestamp_past_the_tolerance_is_not_trusted(
    tolerance: timedelta, past: timedelta
) -> None:
    late = NOW + tolerance + past
    value, problem = parse_iso(iso(late), field="last_activity", now=NOW, tolerance=tolerance)
    assert value is None
    assert problem == f"last_activity lies in the future: {iso(late)!r}"
    assert check_aware(late, field="t", now=NOW, tolerance=tolerance)[0] is None


@TOLERANCES
def test_an_epoch_timestamp_a_second_past_the_tolerance_is_not_trusted(
    tolerance: timedelta,
) -> None:
    seconds = (NOW + tolerance).timestamp() + 1
    value, problem = parse_epoch(seconds, field="t", now=NOW, tolerance=tolerance)
    assert value is None
    assert problem is not None
    assert "lies in the future" in problem
    value, problem = parse_epoch(
        int(seconds * 1000), field="t", now=NOW, tolerance=tolerance, millis=True
    )
    assert value is None
    assert problem is not None
    assert "lies in the future" in problem


def test_the_tolerance_is_measured_in_utc_whatever_the_offset() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    edge = (NOW + TOLERANCE).astimezone(india)
    assert parse_iso(edge.isoformat(), field="t", now=NOW, tolerance=TOLERANCE) == (
        NOW + TOLERANCE,
        None,
    )
    late = edge + timedelta(seconds=1)
    assert parse_iso(late.isoformat(), field="t", now=NOW, tolerance=TOLERANCE)[0] is None
