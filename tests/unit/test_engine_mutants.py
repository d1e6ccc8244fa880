"""Engine behaviour that `make mutants` found unguarded: the times written into reasons, and
``explain`` deciding with janitor's memory of the session (docs/mutation-testing.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from janitor.model import Action, Mark, PolicyRef, Verdict
from janitor.policy.engine import decide, explain
from tests.factories import NOW, history, policy, session

KOLKATA = timezone(timedelta(hours=5, minutes=30))


@pytest.fixture
def host_zone_kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's local zone is UTC+05:30: a reason must still be written in UTC."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _warned(policy_name: str, at: datetime, action: Action | None = None) -> Mark:
    return Mark(policy=policy_name, marked_at=at, warned_at=at, action=action)


@pytest.mark.usefixtures("host_zone_kolkata")
def test_a_grace_reason_names_its_end_in_utc_to_the_second() -> None:
    # Warned 10 min 7 s before NOW, written at +05:30: the grace of 30m ends 12:20:07 UTC.
    warned = (NOW - timedelta(minutes=9, seconds=53)).astimezone(KOLKATA)
    d = decide(
        session(),
        [policy(grace="30m")],
        NOW,
        history(mark=_warned("idle", warned)),
    )
    assert d.verdict is Verdict.WAIT
    assert d.reason.endswith("; warned, in grace until 2026-11-22 12:20:07 UTC (policy idle v1)")


@pytest.mark.usefixtures("host_zone_kolkata")
def test_a_notified_reason_names_the_warning_in_utc_to_the_minute() -> None:
    warned = datetime(2026, 11, 22, 11, 50, 7, tzinfo=UTC).astimezone(KOLKATA)
    d = decide(
        session(),
        [policy(action="notify")],
        NOW,
        history(mark=_warned("idle", warned, Action.NOTIFY)),
    )
    assert d.verdict is Verdict.WAIT
    assert d.code == "notified"
    assert d.reason.endswith("; notified at 2026-11-22 11:50 UTC (policy idle v1)")


def test_explain_decides_with_the_memory_of_the_session() -> None:
    """A session warned 10 minutes ago is in its grace: explain says wait, not warn."""
    remembered = history(mark=_warned("idle", NOW - timedelta(minutes=10)))
    decision, evaluations = explain(session(), [policy(grace="30m")], NOW, remembered)
    assert decision.verdict is Verdict.WAIT
    assert decision.code == "grace"
    assert [e.matched for e in evaluations] == [True]


def test_explain_evaluates_with_the_memory_of_the_session() -> None:
    """Without a created_at from the provider, ``age`` is janitor's first sighting."""
    aged = policy(match={"state": ["idle"], "age": "12h"})
    decision, evaluations = explain(
        session(created_at=None), [aged], NOW, history(first_seen=NOW - timedelta(days=1))
    )
    assert decision.verdict is Verdict.ACT
    assert [(e.matched, e.reasons) for e in evaluations] == [
        (True, ("state idle", "seen for 1d ≥ 12h"))
    ]


def test_explain_shows_no_evaluation_when_the_memory_holds_a_naive_timestamp() -> None:
    naive = history(first_seen=datetime(2026, 11, 21, 12, 0))  # noqa: DTZ001 (the point)
    decision, evaluations = explain(session(created_at=None), [policy()], NOW, naive)
    assert decision.code == "malformed"
    assert "first_seen (memory) has no time zone" in decision.reason
    assert evaluations == []


def test_the_observations_reason_counts_the_sweeps_still_needed() -> None:
    d = decide(session(), [policy(min_observations=3)], NOW, None)
    assert d.verdict is Verdict.WAIT
    assert d.reason == (
        "state idle and idle 3h ≥ 2h, matched in 1 of 3 consecutive sweeps needed (policy idle v1)"
    )


def test_a_dry_run_reason_mentions_a_grace_only_when_there_is_one() -> None:
    plain = decide(session(), [policy(mode="dry-run")], NOW, None)
    assert plain.reason == "state idle and idle 3h ≥ 2h (policy idle v1)"
    graced = decide(session(), [policy(mode="dry-run", grace="30m")], NOW, None)
    assert graced.reason == "state idle and idle 3h ≥ 2h, after a grace of 30m (policy idle v1)"


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def test_a_grace_ending_past_the_calendar_is_named_from_the_warning() -> None:
    warned = END_OF_TIME - timedelta(minutes=59, seconds=59, microseconds=999999)
    now = warned + timedelta(minutes=30)
    d = decide(
        session(last_activity=now - timedelta(hours=3)),
        [policy(grace="2h")],
        now,
        history(mark=_warned("idle", warned)),
    )
    assert d.verdict is Verdict.WAIT
    assert d.reason.endswith(
        "; warned, in grace for 2h after the warning at 9999-12-31 23:00 UTC (policy idle v1)"
    )


@pytest.mark.usefixtures("host_zone_kolkata")
def test_the_end_of_a_grace_is_computed_in_utc_even_near_the_end_of_the_calendar() -> None:
    """In the host's zone (UTC+05:30) the warning would already lie past year 9999."""
    warned = END_OF_TIME - timedelta(hours=3)
    now = warned + timedelta(minutes=30)
    d = decide(
        session(last_activity=now - timedelta(hours=3)),
        [policy(grace="1h")],
        now,
        history(mark=_warned("idle", warned)),
    )
    assert d.reason.endswith("; warned, in grace until 9999-12-31 21:59:59 UTC (policy idle v1)")


def test_an_untrusted_record_lists_every_reason() -> None:
    d = decide(session(anomalies=("one problem", "another")), [policy()], NOW, None)
    assert d.reason == "record not trusted: one problem; another"


def test_no_policy_for_the_target_is_said_plainly() -> None:
    d = decide(session(), [policy(enabled=False)], NOW, None)
    assert (d.verdict, d.code, d.reason) == (
        Verdict.SKIP,
        "no_policy",
        "no enabled policy applies to this target",
    )


def test_an_exempt_session_names_the_policy_that_exempts_it() -> None:
    d = decide(session(), [policy(version=4, exempt={"name": "analysis*"})], NOW, None)
    assert (d.verdict, d.code, d.policy) == (
        Verdict.SKIP,
        "exempt",
        PolicyRef(name="idle", version=4),
    )


def test_no_match_shows_the_first_three_misses() -> None:
    young = session(last_activity=NOW - timedelta(minutes=30))
    names = ("a", "b", "c", "d")
    d = decide(young, [policy(name=n) for n in names], NOW, None)
    assert d.reason == (
        "no policy matched (a: idle 30m < 2h; b: idle 30m < 2h; c: idle 30m < 2h; …)"
    )
    d = decide(young, [policy(name=n) for n in names[:3]], NOW, None)
    assert d.reason == ("no policy matched (a: idle 30m < 2h; b: idle 30m < 2h; c: idle 30m < 2h)")


def test_every_naive_timestamp_is_named_in_the_reason() -> None:
    naive = datetime(2026, 11, 22, 9, 0)  # noqa: DTZ001 (the point)
    remembered = history(
        first_seen=naive,
        state_since=naive,
        mark=Mark(policy="idle", marked_at=naive, warned_at=naive),
    )
    record = session(last_activity=naive, created_at=naive, state_since=naive)
    d = decide(record, [policy()], NOW, remembered)
    fields = (
        "last_activity",
        "created_at",
        "state_since",
        "first_seen (memory)",
        "state_since (memory)",
        "marked_at (memory)",
        "warned_at (memory)",
    )
    assert d.reason == "record not trusted: " + "; ".join(
        f"{name} has no time zone: '2026-11-22T09:00:00'" for name in fields
    )
