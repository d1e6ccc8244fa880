"""Durations as people write them ("90s", "15m", "2h", "7d", "1h30m") and back."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """Parse ``"2h"`` or ``"1h30m"`` into a timedelta.

    Raises:
        ValueError: the text is not a duration; the message shows the accepted forms.
    """
    cleaned = text.strip().lower()
    if not _WHOLE.fullmatch(cleaned):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 15m, 2h, 7d or 1h30m"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too large") from None


def format_duration(value: timedelta) -> str:
    """Format a timedelta compactly: ``3h12m``, ``45s``, ``2d4h``. Rounds down to seconds."""
    total = int(value.total_seconds())
    if total < 0:
        return "-" + format_duration(-value)
    if total == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_short(value: timedelta) -> str:
    """A duration for people, to its two largest units, rounded down: ``3h12m`` (3h12m5s),
    ``2d4h``, ``1h`` (1h0m30s), ``45s``. Lossy: configuration uses :func:`format_duration`."""
    text = format_duration(value)
    sign = "-" if text.startswith("-") else ""
    units = list(_UNITS)
    parts = {unit: count for count, unit in _PART.findall(text)}
    if not parts:
        return text
    first = min(units.index(unit) for unit in parts)
    kept = [f"{parts[u]}{u}" for u in units[first : first + 2] if u in parts]
    return sign + "".join(kept)


def _coerce(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):  # YAML's yes/no/true: not a number of seconds
        # ValueError, not TypeError: pydantic reports only ValueError as a validation error
        raise ValueError(f"invalid duration {value!r}: use e.g. 90s, 15m, 2h or 7d")  # noqa: TRY004
    if isinstance(value, int | float):
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        try:
            return timedelta(seconds=value)
        except OverflowError:  # inf, 1e20: pydantic would let OverflowError escape
            raise ValueError(f"invalid duration {value!r}: too large") from None
    return value


#: A pydantic field type: accepts "2h" (or seconds as a number), serializes back to "2h".
Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str, when_used="json-unless-none"),
]
