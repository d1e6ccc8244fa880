"""Parsing provider timestamps fail-closed: naive, future or unparseable values become unknown.

Each parser returns ``(value, anomaly)``: the aware UTC datetime, or ``None`` with a sentence
saying why the value cannot be trusted. Providers collect anomalies on the Session, and the
engine never acts on a session that has any.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# "...+00:00Z" has been seen from real APIs; strip the redundant Z after an offset.
_OFFSET_THEN_Z = re.compile(r"([+-]\d{2}:?\d{2})Z$")


def parse_iso(
    value: object, *, field: str, now: datetime, tolerance: timedelta
) -> tuple[datetime | None, str | None]:
    """Parse an ISO-8601 timestamp that must carry a zone and must not lie in the future.

    Args:
        value: the raw JSON value (None means "not reported" and is not an anomaly).
        field: the field name, for the anomaly sentence.
        now: janitor's current time (aware UTC).
        tolerance: how far in the future a value may be before it is rejected.
    """
    if value is None:
        return None, None
    if not isinstance(value, str):
        return None, f"{field} is not a string: {value!r}"
    text = _OFFSET_THEN_Z.sub(r"\1", value.strip())
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None, f"{field} is not a timestamp: {value!r}"
    return check_aware(parsed, field=field, now=now, tolerance=tolerance, raw=value)


def parse_epoch(
    value: object, *, field: str, now: datetime, tolerance: timedelta, millis: bool = False
) -> tuple[datetime | None, str | None]:
    """Parse a Unix timestamp in seconds (or milliseconds) since the epoch."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{field} is not a number: {value!r}"
    seconds = value / 1000 if millis else value
    try:
        parsed = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None, f"{field} is out of range: {value!r}"
    return check_aware(parsed, field=field, now=now, tolerance=tolerance, raw=value)


def check_aware(
    value: datetime, *, field: str, now: datetime, tolerance: timedelta, raw: object = None
) -> tuple[datetime | None, str | None]:
    """Accept an aware datetime not later than ``now + tolerance``; return it in UTC."""
    shown = raw if raw is not None else value.isoformat()
    if value.tzinfo is None or value.utcoffset() is None:
        return None, f"{field} has no time zone: {shown!r}"
    try:
        value = value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 has no UTC equivalent
        return None, f"{field} is out of range: {shown!r}"
    if value > now + tolerance:
        return None, f"{field} lies in the future: {shown!r}"
    return value, None
