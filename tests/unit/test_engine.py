"""The decision engine, table-driven: one row per rule of janitor.policy.engine's docstring."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from janitor.model import Action, State, Verdict
from janitor.policy.engine import decide, explain
from tests.factories import NOW, history, mark, policy, session


def test_idle_session_past_idle_for_is_acted_on_with_a_readable_reason() -> None:
    d = decide(session(), [policy(version=3)], NOW, None)
    assert d.verdict is Verdict.ACT
    assert d.action is Action.DELETE
    assert not d.dry_run
    assert d.reason == "state idle and idle 3h ≥ 2h (policy idle v3)"


def test_not_idle_long_enough() -> None:
    d = decide(session(last_activity=NOW - timedelta(minutes=30)), [policy()], NOW, None)
    assert d.verdict is Verdict.SKIP
    assert d.code == "no_match"
    assert "idle 30m < 2h" in d.reason


@pytest.mark.parametrize("state", [State.BUSY, State.PENDING, State.STOPPING])
def test_active_states_need_an_explicit_policy(state: State) -> None:
    s = session(state=state, provider_state=str(state))
    implicit = policy(match={"idle_for": "2h"})
    assert decide(s, [implicit], NOW, None).verdict is Verdict.SKIP
    explicit = policy(match={"state": [str(state)], "idle_for": "2h"})
    assert decide(s, [explicit], NOW, None).verdict is Verdict.ACT


def test_unknown_state_is_never_acted_on() -> None:
    d = decide(
        session(state=State.UNKNOWN, provider_state="zombie"),
        [policy(match={"idle_for": "1s"})],
        NOW,
        None,
    )
    assert d.verdict is Verdict.SKIP
    assert d.code == "unknown_state"
    assert "'zombie'" in d.reason


def test_anomalies_skip_the_session() -> None:
    d = decide(session(anomalies=("last_activity lies in the future: 'x'",)), [policy()], NOW, None)
    assert d.verdict is Verdict.SKIP
    assert d.code == "malformed"
    assert "lies in the future" in d.reason


def test_unknown_last_activity_never_matches_idle_for() -> None:
    d = decide(session(last_activity=None), [policy()], NOW, None)
    assert d.verdict is Verdict.SKIP
    assert "last activity unknown" in d.reason


def test_first_match_by_priority_then_name_wins_whatever_its_mode() -> None:
    preview = policy(name="a-preview", priority=10, mode="dry-run")
    enforce = policy(name="b-enforce", priority=10)
    later = policy(name="a-later", priority=50)
    d = decide(session(), [later, enforce, preview], NOW, None)
    assert d.policy is not None
    assert d.policy.name == "a-preview"
    assert d.verdict is Verdict.ACT
    assert d.dry_run


def test_disabled_policies_and_other_targets_are_ignored() -> None:
    off = policy(name="off", enabled=False)
    elsewhere = policy(name="elsewhere", targets=["aidp-*"])
    d = decide(session(), [off, elsewhere], NOW, None)
    assert d.code == "no_policy"
    mine = policy(name="mine", targets=["n?"])
    assert decide(session(), [off, elsewhere, mine], NOW, None).verdict is Verdict.ACT


def test_exempt_any_key_holds() -> None:
    p = policy(exempt={"name": ["keep-*"], "owner": ["root"]})
    d = decide(session(name="keep-this", owner="alice"), [p], NOW, None)
    assert d.verdict is Verdict.SKIP
    assert d.code == "exempt"
    assert "matches ['keep-*']" in d.reason


def test_unknown_value_in_exempt_exempts() -> None:
    p = policy(exempt={"owner": ["root"]})
    d = decide(session(owner=None), [p], NOW, None)
    assert d.code == "exempt"
    assert "owner unknown, exempt to be safe" in d.reason
    assert decide(session(owner="alice"), [p], NOW, None).verdict is Verdict.ACT


def test_min_observations_waits_for_consecutive_matches() -> None:
    p = policy(min_observations=3)
    first = decide(session(), [p], NOW, None)
    assert (first.verdict, first.code, first.streak) == (Verdict.WAIT, "observations", 1)
    second = decide(session(), [p], NOW, history(streak_policy="idle", streak=1))
    assert second.verdict is Verdict.WAIT
    assert "matched in 2 of 3" in second.reason
    third = decide(session(), [p], NOW, history(streak_policy="idle", streak=2))
    assert third.verdict is Verdict.ACT
    other = decide(session(), [p], NOW, history(streak_policy="another", streak=5))
    assert other.streak == 1


def test_grace_warns_then_waits_then_acts() -> None:
    p = policy(grace="30m")
    assert decide(session(), [p], NOW, None).verdict is Verdict.WARN
    undelivered = history(mark=mark(warned_ago=None))
    assert decide(session(), [p], NOW, undelivered).verdict is Verdict.WARN
    waiting = decide(session(), [p], NOW, history(mark=mark(warned_ago=timedelta(minutes=29))))
    assert (waiting.verdict, waiting.code) == (Verdict.WAIT, "grace")
    due = decide(session(), [p], NOW, history(mark=mark(warned_ago=timedelta(minutes=30))))
    assert due.verdict is Verdict.ACT
    assert "grace of 30m passed" in due.reason


def test_a_mark_of_another_policy_does_not_count() -> None:
    p = policy(grace="30m")
    d = decide(session(), [p], NOW, history(mark=mark("other", warned_ago=timedelta(days=1))))
    assert d.verdict is Verdict.WARN


def test_dry_run_policies_never_warn() -> None:
    d = decide(session(), [policy(grace="30m", mode="dry-run")], NOW, None)
    assert (d.verdict, d.dry_run) == (Verdict.ACT, True)
    assert "after a grace of 30m" in d.reason


def test_notify_acts_once_per_mark() -> None:
    p = policy(action="notify")
    assert decide(session(), [p], NOW, None).verdict is Verdict.ACT
    notified = history(mark=mark(warned_ago=timedelta(minutes=5)))
    d = decide(session(), [p], NOW, notified)
    assert (d.verdict, d.code) == (Verdict.WAIT, "notified")


def test_in_state_for_uses_the_provider_time_then_janitors_memory() -> None:
    p = policy(match={"state": ["busy"], "in_state_for": "3d"}, action="delete")
    busy = session(state=State.BUSY, provider_state="busy")
    assert decide(busy, [p], NOW, None).verdict is Verdict.SKIP  # unknown: no match
    long_ago = history(state=State.BUSY, state_since=NOW - timedelta(days=4))
    assert decide(busy, [p], NOW, long_ago).verdict is Verdict.ACT
    other_state = history(state=State.IDLE, state_since=NOW - timedelta(days=4))
    assert decide(busy, [p], NOW, other_state).verdict is Verdict.SKIP
    provider_said = session(
        state=State.BUSY, provider_state="busy", state_since=NOW - timedelta(days=3)
    )
    assert decide(provider_said, [p], NOW, None).verdict is Verdict.ACT


def test_age_falls_back_to_first_seen() -> None:
    p = policy(match={"age": "7d"})
    assert (
        decide(session(created_at=NOW - timedelta(days=8)), [p], NOW, None).verdict is Verdict.ACT
    )
    seen = history(first_seen=NOW - timedelta(days=9))
    d = decide(session(), [p], NOW, seen)
    assert d.verdict is Verdict.ACT
    assert "seen for 9d" in d.reason


def test_offsets_do_not_change_decisions() -> None:
    instant = NOW - timedelta(hours=3)
    shifted = instant.astimezone(timezone(timedelta(hours=12, minutes=45)))
    a = decide(session(last_activity=instant), [policy()], NOW, None)
    b = decide(
        session(last_activity=shifted),
        [policy()],
        NOW.astimezone(timezone(timedelta(hours=-8))),
        None,
    )
    assert (a.verdict, a.reason) == (b.verdict, b.reason)
    assert NOW.tzinfo is UTC


def test_explain_lists_every_applicable_policy() -> None:
    a = policy(name="a", priority=1, match={"state": ["dead"]})
    b = policy(name="b", priority=2)
    decision, evaluations = explain(session(), [a, b], NOW, None)
    assert [e.policy.name for e in evaluations] == ["a", "b"]
    assert [e.matched for e in evaluations] == [False, True]
    assert decision.policy is not None
    assert decision.policy.name == "b"


def test_a_warning_counts_only_for_the_action_it_announced() -> None:
    delete_after_grace = policy(grace="30m")
    notice = mark(warned_ago=timedelta(days=1))
    from dataclasses import replace

    from janitor.model import Action as A

    announced_notify = history(mark=replace(notice, action=A.NOTIFY))
    assert decide(session(), [delete_after_grace], NOW, announced_notify).verdict is Verdict.WARN
    announced_delete = history(mark=replace(notice, action=A.DELETE))
    assert decide(session(), [delete_after_grace], NOW, announced_delete).verdict is Verdict.ACT
