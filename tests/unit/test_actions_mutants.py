"""Pure parts of the action path that `make mutants` found unguarded (docs/mutation-testing.md)."""

from __future__ import annotations

from datetime import timedelta

from janitor.actions import describe_change
from tests.factories import NOW, session


def test_describe_change_lists_every_change_and_every_anomaly_of_the_fresh_record() -> None:
    before = session()
    after = session(
        last_activity=NOW - timedelta(minutes=1),
        connections=1,
        anomalies=("last_activity lies in the future", "connections is not a count"),
    )
    assert describe_change(before, after) == (
        f"last_activity {before.last_activity} → {after.last_activity}, connections 0 → 1, "
        "the fresh record is not trusted: last_activity lies in the future; "
        "connections is not a count"
    )


def test_describe_change_is_empty_when_nothing_that_matters_changed() -> None:
    assert describe_change(session(), session(name="renamed.ipynb")) == ""
