"""Reading a Jupyter kernel model: the fields janitor's idleness signals come from.

Jupyter Server and AIDP (whose notebook sessions carry a Jupyter kernel model) report a
kernel's ``last_activity`` and ``connections`` the same way; both providers read them here, so a
malformed value becomes the same anomaly wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from janitor.timestamps import parse_iso


def kernel_activity(
    kernel: Mapping[str, Any],
    *,
    field_prefix: str,
    now: datetime,
    tolerance: timedelta,
    anomalies: list[str],
) -> tuple[datetime | None, int | None]:
    """The kernel's last activity and connection count; what cannot be trusted is None and
    is named in ``anomalies`` (a field ``last_activity`` shown as ``field_prefix`` + its name).
    """
    last_activity, problem = parse_iso(
        kernel.get("last_activity"),
        field=f"{field_prefix}last_activity",
        now=now,
        tolerance=tolerance,
    )
    if problem:
        anomalies.append(problem)
    connections = kernel.get("connections")
    if connections is not None and (
        isinstance(connections, bool) or not isinstance(connections, int) or connections < 0
    ):
        anomalies.append(f"{field_prefix}connections is not a count: {connections!r}")
        connections = None
    return last_activity, connections
