"""Property tests of janitor's memory between daemon sweeps (``janitor.memory``).

The memory decides how long a session has been in its state (``in_state_for``), how many
sweeps in a row a policy matched (``min_observations``) and when a grace started, so its
rules are safety rules: first_seen never moves, state_since moves only with the state, a
streak or a mark never survives a sweep in which its policy did not match, and a warning's
time is set once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from hypothesis import given, note
from hypothesis import strategies as st

from janitor import memory
from janitor.model import Action, Decision, History, Mark, Session, State, Verdict
from janitor.policy.engine import decide
from janitor.policy.spec import Policy
from tests.strategies import (
    INSTANTS,
    compile_spec,
    draw_history,
    draw_policies,
    draw_session,
)


@dataclass(frozen=True)
class Sweep:
    previous: History | None
    session: Session
    decision: Decision
    now: datetime


@st.composite
def sweeps(draw: st.DrawFn) -> Sweep:
    """One sweep's inputs to ``advance``: a decision made by the engine on generated inputs."""
    now = draw(INSTANTS)
    policies = draw_policies(draw)
    session = draw_session(draw, now)
    previous = draw_history(draw, now, session, [p.name for p in policies])
    return Sweep(
        previous=previous,
        session=session,
        decision=decide(session, policies, now, previous),
        now=now,
    )


def _matched(decision: Decision) -> bool:
    return decision.policy is not None and decision.verdict is not Verdict.SKIP


def check_keeps_first_seen_and_moves_state_since_only_with_the_state(
    sw: Sweep, after: History
) -> None:
    assert after.first_seen == (sw.previous.first_seen if sw.previous else sw.now)
    assert after.state is sw.session.state
    if sw.previous is not None and sw.previous.state == sw.session.state:
        assert after.state_since == sw.previous.state_since
    else:
        assert after.state_since == (sw.session.state_since or sw.now)
    assert after.last_key == sw.decision.key


def check_streak_belongs_to_the_matching_policy(sw: Sweep, after: History) -> None:
    if _matched(sw.decision):
        assert sw.decision.policy is not None
        assert after.streak_policy == sw.decision.policy.name
        assert after.streak == sw.decision.streak
        previous = sw.previous
        same = previous is not None and previous.streak_policy == sw.decision.policy.name
        assert after.streak == (previous.streak if same and previous else 0) + 1
    else:
        assert after.streak_policy is None
        assert after.streak == 0


def check_marks_live_only_while_their_policy_matches(sw: Sweep, after: History) -> None:
    old = sw.previous.mark if sw.previous else None
    decision = sw.decision
    if not _matched(decision):
        assert after.mark is None  # unmark: activity resumed, exempt, or another policy
        assert memory.unmarked(sw.previous, after) == (old is not None)
        return
    assert decision.policy is not None
    if (
        old is not None
        and decision.action is not None
        and old.counts_for(decision.policy.name, decision.action)
    ):
        assert after.mark == old  # the grace keeps running from the first delivered warning
    elif decision.verdict is Verdict.WARN:
        assert after.mark == Mark(
            policy=decision.policy.name, marked_at=sw.now, action=decision.action
        )
    else:
        assert after.mark is None
    if after.mark is not None:
        assert after.mark.policy == decision.policy.name
    assert memory.unmarked(sw.previous, after) == (old is not None and after.mark is None)


def check_warned_sets_warned_at_once(
    sw: Sweep, after: History, first: datetime, second: datetime
) -> None:
    once = memory.warned(after, first)
    twice = memory.warned(once, second)
    if after.mark is None:
        assert once == after
    elif after.mark.warned_at is None:
        assert once.mark is not None
        assert once.mark.warned_at == first
        assert once.mark.marked_at == after.mark.marked_at
        assert once.mark.policy == after.mark.policy
    else:
        assert once == after  # a delivered warning is never re-dated (grace never restarts)
    assert twice == once
    assert replace(once, mark=None) == replace(after, mark=None)  # nothing else changes


def check_notified_marks_the_policy_as_warned(after: History, at: datetime) -> None:
    notified = memory.notified(after, "notifier", at)
    assert notified.mark == Mark(
        policy="notifier", marked_at=at, warned_at=at, action=Action.NOTIFY
    )


@given(sweeps(), INSTANTS, INSTANTS)
def test_advance_on_generated_sweeps(sw: Sweep, first: datetime, second: datetime) -> None:
    """Every rule of ``advance``, ``warned`` and ``notified`` on the same generated sweeps."""
    after = memory.advance(sw.previous, sw.session, sw.decision, sw.now)
    note(f"{sw.decision.verdict} {sw.decision.policy}: {sw.previous} -> {after}")
    check_keeps_first_seen_and_moves_state_since_only_with_the_state(sw, after)
    check_streak_belongs_to_the_matching_policy(sw, after)
    check_marks_live_only_while_their_policy_matches(sw, after)
    check_warned_sets_warned_at_once(sw, after, first, second)
    check_notified_marks_the_policy_as_warned(after, first)


# --- over many sweeps ------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    gap: timedelta
    state: State | None  # a new state before this sweep (None: unchanged)
    active: bool  # activity just before this sweep
    delivered: bool  # a warning sent in this sweep gets through


_CHANGES = st.builds(
    Change,
    gap=st.sampled_from([timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2)]),
    state=st.sampled_from([None, None, None, State.IDLE, State.BUSY, State.DEAD, State.PENDING]),
    active=st.sampled_from([False, False, True]),
    delivered=st.booleans(),
)


@st.composite
def policy_pairs(draw: st.DrawFn) -> list[Policy]:
    """Two policies over idle sessions: one with grace and min_observations, one plain."""
    grace = draw(st.sampled_from(["10m", "1h"]))
    return [
        compile_spec(
            {
                "name": "graceful",
                "priority": 10,
                "match": {"idle_for": draw(st.sampled_from(["20m", "1h"]))},
                "action": "delete",
                "mode": "enforce",
                "grace": grace,
                "min_observations": draw(st.sampled_from([1, 2, 3])),
            }
        ),
        compile_spec(
            {
                "name": "dead",
                "priority": 20,
                "match": {"state": ["dead"], "in_state_for": "1h"},
                "action": "delete",
                "mode": draw(st.sampled_from(["dry-run", "enforce"])),
                "min_observations": 2,
            }
        ),
    ]


@given(INSTANTS, policy_pairs(), st.lists(_CHANGES, min_size=1, max_size=30))
def test_memory_over_a_series_of_sweeps(
    start: datetime, policies: list[Policy], changes: list[Change]
) -> None:
    """Drive decide + advance + warned through sweeps and compare with a simple model."""
    session = Session(
        target="nb",
        provider="jupyter",
        id="s-1",
        name="n",
        kind="notebook",
        state=State.IDLE,
        provider_state="idle",
        last_activity=start - timedelta(hours=3),
    )
    history: History | None = None
    now = start
    since = start  # model: when janitor saw the current state begin
    run: tuple[str | None, int] = (None, 0)  # model: policy and consecutive matches
    for number, change in enumerate(changes):
        now += change.gap
        if change.state is not None and change.state is not session.state:
            session = replace(session, state=change.state, provider_state=str(change.state))
        if change.active:
            session = replace(session, last_activity=now)
        if history is None or history.state != session.state:
            since = now
        decision = decide(session, policies, now, history)
        note(f"sweep {number} at {now}: {decision.verdict} {decision.policy} {decision.reason}")
        name = decision.policy.name if _matched(decision) and decision.policy else None
        run = (name, run[1] + 1 if name is not None and run[0] == name else 1 if name else 0)
        previous = history
        history = memory.advance(history, session, decision, now)
        if decision.verdict is Verdict.WARN and change.delivered:
            history = memory.warned(history, now)
        assert history.first_seen == start + changes[0].gap
        assert history.state_since == since
        assert (history.streak_policy, history.streak) == run
        if history.mark is not None:
            assert history.mark.policy == name
            old = previous.mark if previous is not None else None
            if old is not None and old.policy == name:
                assert history.mark.marked_at == old.marked_at
        if decision.verdict in (Verdict.ACT, Verdict.WARN):
            policy = next(p for p in policies if p.name == name)
            assert run[1] >= policy.min_observations
        if decision.verdict is Verdict.ACT and name == "graceful":
            return  # deleted
