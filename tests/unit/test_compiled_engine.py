"""The compiled engine decides exactly as the readable evaluator (issue 11, S3).

``decide`` (compiled policies, routes shared by sessions with the same key, reasons only for
the deciding policy) must return the very Decision ``decide_readable`` (every policy's
reasons, in order) returns, field for field, for every input: generated policy sets (every
condition in ``match`` and ``exempt``, disabled policies, target globs, priorities, modes,
grace, observations, force_cancel), and generated sessions *in groups that share a route
key* (target, state, provider state, kind, allowed actions) but differ in everything else
(names, owners, labels, connections, timestamps in many offsets, activity fingerprints,
anomalies, naive timestamps), each with its own history (streaks, marks, janitor's state
and activity memory) and keep, decided through one compiled set in order.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from janitor.durations import format_short
from janitor.model import Action, History, Keep, Mark, Session, State
from janitor.policy.compiled import MAX_ROUTES, CompiledPolicies
from janitor.policy.conditions import CONDITIONS, EvalContext, Probe, _short
from janitor.policy.engine import _naive, decide, decide_readable
from janitor.policy.spec import Policy
from tests.strategies import (
    ALL_KEYS,
    CONDITION_VALUES,
    INSTANTS,
    KINDS,
    LABEL_SETS,
    NAMES_ST,
    OWNERS,
    POLICY_NAMES,
    PROVIDER_STATES,
    TARGETS,
    ZONES,
    compile_spec,
    draw_history,
    draw_index,
    draw_mixed,
    draw_optional_timestamp,
    draw_policies,
    draw_session,
    draw_timestamp,
)

#: A force_cancel policy as the spec allows it: stuck in CANCELLING for 30 minutes or more.
_FORCE_CANCEL = {
    "name": "stuck",
    "priority": 10,
    "match": {"provider_state": ["CANCELLING"], "in_state_for": "45m"},
    "exempt": {"owner": "svc-*"},
    "action": "force_cancel",
    "mode": "enforce",
}
_ACTIVITY = (None, None, "f-1", "f-2")
#: What a record allows: everything (None), all a policy may name, or a narrower set.
_RECORD_ACTIONS = (
    None,
    frozenset(Action),
    frozenset({Action.NOTIFY}),
    frozenset({Action.DELETE, Action.NOTIFY}),
    frozenset({Action.STOP, Action.CANCEL, Action.FORCE_CANCEL}),
)
_ANOMALIES = ((),) * 15 + (("connections is not a count: -1",),) + ((),) * 15
#: Mostly none: a naive timestamp makes the whole record untrusted.
_NAIVE_FIELDS = ("",) * 12 + ("last_activity", "created_at", "state_since") + ("",) * 12
_NAIVE = datetime(2026, 11, 22, 12, 0)  # noqa: DTZ001 (a provider bug the engine must catch)


@st.composite
def policy_sets(draw: st.DrawFn) -> list[Policy]:
    """Up to six policies of every shape, sometimes with a force_cancel escalation."""
    policies = draw_policies(draw, max_size=6)
    if draw(st.integers(0, 5)) == 0:
        policies.append(compile_spec(_FORCE_CANCEL, version=draw(st.integers(1, 3))))
    return policies


def draw_neighbour(draw: st.DrawFn, base: Session) -> Session:
    """``base``, or ``base`` with one field of its route key changed (a key that forgot a field
    would share the route of a session it must not)."""
    (which,) = draw_mixed(
        draw, ("", "", "", "target", "state", "provider_state", "kind", "actions")
    )
    if which == "target":
        return replace(base, target=draw(st.sampled_from(TARGETS)))
    if which == "state":
        return replace(base, state=draw(st.sampled_from(State)))
    if which == "provider_state":
        return replace(base, provider_state=draw(st.sampled_from((*PROVIDER_STATES, "IDLE"))))
    if which == "kind":
        return replace(base, kind=draw(st.sampled_from(KINDS)))
    if which == "actions":
        return replace(base, actions=draw(st.sampled_from(_RECORD_ACTIONS)))
    return base


def draw_variant(draw: st.DrawFn, base: Session, now: datetime) -> Session:
    """A session with ``base``'s route key (or a neighbour's) and its own everything else."""
    return replace(
        draw_neighbour(draw, base),
        id=f"s-{draw(st.integers(0, 10**6))}",
        name=draw(NAMES_ST),
        owner=draw(st.sampled_from((None, *OWNERS))),
        labels=draw(st.sampled_from(LABEL_SETS)),
        connections=draw(st.sampled_from((None, 0, 1, 3))),
        last_activity=draw_optional_timestamp(draw, now),
        created_at=draw_optional_timestamp(draw, now),
        state_since=draw_optional_timestamp(draw, now),
        activity=draw(st.sampled_from(_ACTIVITY)),
        anomalies=draw_mixed(draw, _ANOMALIES)[0],
    )


def draw_naive(draw: st.DrawFn, session: Session) -> Session:
    """Sometimes a timestamp without a zone slips through (a provider bug)."""
    (field,) = draw_mixed(draw, _NAIVE_FIELDS)
    return replace(session, **{field: _NAIVE}) if field else session


def draw_memory(
    draw: st.DrawFn, now: datetime, session: Session, names: list[str]
) -> History | None:
    """A history with janitor's own state and activity memory, sometimes naive."""
    history = draw_history(draw, now, session, names or ["a"])
    if history is None:
        return None
    history = replace(
        history,
        provider_state=draw(st.sampled_from((None, session.provider_state, "other"))),
        activity=draw(st.sampled_from((None, session.activity, "f-1"))),
        activity_since=draw(st.sampled_from((None, draw_timestamp(draw, now)))),
    )
    if names and draw_mixed(draw, (False, False, True))[0]:  # warned, streak long enough
        warned = draw_timestamp(draw, now)
        name = draw_index(draw, names)
        history = replace(
            history,
            mark=Mark(policy=name, marked_at=warned, warned_at=warned),
            streak_policy=name,
            streak=4,
        )
    if history.mark is not None and draw(st.integers(0, 3)) == 0:
        history = replace(history, mark=replace(history.mark, action=draw(st.sampled_from(Action))))
    return draw_naive_memory(draw, history)


#: Where janitor's memory may hold a naive timestamp (written by an older or buggy janitor).
_NAIVE_MEMORY = (
    ("",) * 12
    + (
        "first_seen",
        "state_since",
        "activity_since",
        "marked_at",
        "warned_at",
    )
    + ("",) * 12
)


def draw_naive_memory(draw: st.DrawFn, history: History) -> History:
    """Sometimes one of the memory's timestamps (or its mark's) has no zone."""
    (field,) = draw_mixed(draw, _NAIVE_MEMORY)
    if field in ("marked_at", "warned_at"):
        if history.mark is None:
            return history
        return replace(history, mark=replace(history.mark, **{field: _NAIVE}))
    return replace(history, **{field: _NAIVE}) if field else history


def draw_keep(draw: st.DrawFn, session: Session, now: datetime) -> Keep | None:
    """No keep mostly; else one that holds or has expired (written in any offset)."""
    if draw(st.integers(0, 5)) != 0:
        return None
    until = (now + timedelta(seconds=draw(st.integers(-3600, 3600)))).astimezone(
        draw_index(draw, ZONES)
    )
    return Keep(
        target=session.target,
        session_id=session.id,
        session_name=session.name,
        until=until,
        reason=draw(st.sampled_from(("", "holiday"))),
        actor="alice",
        created_at=now,
    )


Case = tuple[Session, History | None, Keep | None]


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Policy], datetime, list[Case]]:
    """Policies, a ``now`` (in any offset) and sessions in groups sharing a route key."""
    policies = draw(policy_sets())
    now = draw(INSTANTS).astimezone(draw_index(draw, ZONES))
    names = [p.name for p in policies]
    cases: list[Case] = []
    for _ in range(draw(st.integers(1, 4))):
        base = draw_session(draw, now)
        if draw(st.integers(0, 4)) == 0:
            base = replace(base, provider_state="CANCELLING", state=State.STOPPING)
        for _ in range(draw(st.integers(1, 4))):
            session = draw_naive(draw, draw_variant(draw, base, now))
            history = draw_memory(draw, now, session, names)
            cases.append((session, history, draw_keep(draw, session, now)))
    return policies, now, draw(st.permutations(cases))


@given(fleets())
def test_compiled_decisions_equal_the_readable_evaluators(
    fleet: tuple[list[Policy], datetime, list[Case]],
) -> None:
    policies, now, cases = fleet
    compiled = CompiledPolicies(policies)
    for session, history, keep in cases:
        expected = decide_readable(session, policies, now, history, keep=keep)
        assert decide(session, compiled, now, history, keep=keep) == expected
        assert decide(session, policies, now, history, keep=keep) == expected
        event(f"{expected.verdict}/{expected.code}")
    event(f"routes shared: {len(cases) > len(compiled._routes)}")


@given(fleets(), st.sampled_from(ALL_KEYS), st.data())
def test_every_condition_holds_and_explains_as_it_evaluates(
    fleet: tuple[list[Policy], datetime, list[Case]], key: str, data: st.DataObject
) -> None:
    """``holds`` (the compiled answer) is the value ``evaluate`` (the reasoned one) gives, and
    ``explain`` (from the probe's times) its very answer."""
    _, now, cases = fleet
    condition = CONDITIONS[key](data.draw(CONDITION_VALUES[key]))
    for session, history, _ in cases:
        if session.anomalies:
            continue
        ctx = EvalContext(now=now, history=history)
        if _naive(session, history):
            continue
        answer = condition.evaluate(session, ctx)
        assert condition.holds(Probe(session, ctx)) is answer.value
        assert condition.explain(Probe(session, ctx)) == answer


@given(
    st.one_of(
        st.timedeltas(min_value=timedelta(days=-(10**6)), max_value=timedelta(days=10**6)),
        st.integers(-(10**7), 10**7).map(lambda s: timedelta(seconds=s)),
        st.sampled_from((timedelta(0), timedelta(microseconds=-1), timedelta(days=1))),
    )
)
def test_the_short_duration_of_a_reason_is_format_short(value: timedelta) -> None:
    assert _short(value) == format_short(value)


def test_routes_start_over_beyond_their_bound() -> None:
    """Any number of distinct kinds: the route cache stays bounded and decisions right."""
    policy = compile_spec(
        {"name": "a", "match": {"kind": "k-1", "idle_for": "1h"}, "action": "delete"}
    )
    compiled = CompiledPolicies([policy])
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    for index in range(MAX_ROUTES + 10):
        session = Session(
            target="nb",
            provider="jupyter",
            id=str(index),
            name="n",
            kind=f"k-{index % (MAX_ROUTES + 5)}",
            state=State.IDLE,
            provider_state="idle",
            last_activity=now - timedelta(hours=2),
        )
        expected = decide_readable(session, [policy], now, None)
        assert decide(session, compiled, now, None) == expected
        assert len(compiled._routes) <= MAX_ROUTES


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 7])
def test_a_no_match_reason_names_three_misses(count: int) -> None:
    """The shown misses, the ellipsis past three, and no policy at all."""
    policies = [
        compile_spec(
            {
                "name": POLICY_NAMES[i],
                "match": {"kind": "job", "idle_for": "1h"},
                "action": "delete",
            }
        )
        for i in range(count)
    ]
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    compiled = CompiledPolicies(policies)
    for idle in (timedelta(minutes=5), timedelta(hours=5)):
        session = Session(
            target="nb",
            provider="jupyter",
            id="1",
            name="n",
            kind="notebook",
            state=State.IDLE,
            provider_state="idle",
            last_activity=now - idle,
        )
        expected = decide_readable(session, policies, now, None)
        assert decide(session, compiled, now, None) == expected
        assert expected.code == ("no_match" if count else "no_policy")
