"""Property tests of the pure decision engine (reliability targets T1-T4, T6, T7).

Every property runs on generated sessions (every state, optional timestamps in many UTC
offsets, names, owners, labels, kinds, anomalies), generated policy sets (compiled through
``PolicySpec`` and ``compile_policy``, random ``match``/``exempt`` keys, modes, grace,
``min_observations``, priorities and target globs), a ``now`` and a history.

Besides the targeted properties, :func:`reference_decide` restates the rules of DESIGN 2.3
and 5 ("first matching policy decides, whatever its mode; exempt skips; an unknown value never
matches and always exempts; observations, dry-run, notify, grace") without the engine's code,
and the engine must agree with it on every example.

Sizes: the "ci" hypothesis profile (derandomized, 1,000 examples per property) by default;
``JANITOR_TEST_FULL=1`` runs 10,000 random examples per property.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from janitor import memory
from janitor.errors import PolicyError
from janitor.model import (
    QUIET_STATES,
    Action,
    Decision,
    History,
    Mark,
    PolicyRef,
    Session,
    State,
    Verdict,
)
from janitor.policy.conditions import CONDITIONS
from janitor.policy.engine import decide, explain
from janitor.policy.spec import Policy, parse_specs
from tests.strategies import (
    ACTIVITY_KEYS,
    ALL_KEYS,
    CONDITION_VALUES,
    DURATION_VALUES,
    HOST_ZONES,
    INSTANTS,
    POLICY_ACTIONS,
    ZONES,
    Scenario,
    compile_spec,
    draw_optional_timestamp,
    draw_session,
    history_in_zone,
    instants,
    name_matching,
    scenarios,
    session_in_zone,
    spec_duration,
)

# --- an independent statement of the rules -------------------------------------------


def ago(now: datetime, then: datetime) -> timedelta:
    """Real time from ``then`` to ``now`` (in UTC: Python subtracts datetimes that share a
    DST zone as wall-clock times)."""
    return now.astimezone(UTC) - then.astimezone(UTC)


def _listed(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def _since(session: Session, history: History | None) -> datetime | None:
    if session.state_since is not None:
        return session.state_since
    if (
        history is not None
        and history.state == session.state
        and history.provider_state in (None, session.provider_state)
    ):
        return history.state_since
    return None


def condition_holds(
    key: str, value: Any, session: Session, now: datetime, history: History | None
) -> bool | None:
    """One condition as DESIGN 2.3 describes it: True, False, or None when unknown."""
    if key == "state":
        return session.state.value in _listed(value)
    if key == "provider_state":
        return session.provider_state.lower() in {v.lower() for v in _listed(value)}
    if key == "idle_for":
        if session.last_activity is None:
            return None
        return ago(now, session.last_activity) >= spec_duration(value)
    if key == "in_state_for":
        since = _since(session, history)
        return None if since is None else ago(now, since) >= spec_duration(value)
    if key == "age":
        created = session.created_at
        if created is None and history is not None:
            created = history.first_seen
        return None if created is None else ago(now, created) >= spec_duration(value)
    if key == "max_connections":
        return None if session.connections is None else session.connections <= value
    if key == "name":
        return any(fnmatch.fnmatchcase(session.name, g) for g in _listed(value))
    if key == "owner":
        if session.owner is None:
            return None
        return any(fnmatch.fnmatchcase(session.owner, g) for g in _listed(value))
    if key == "labels":
        if session.labels is None:  # tags that could not be read: unknown (DESIGN 6)
            return None
        labels = session.labels
        return all(k in labels and fnmatch.fnmatchcase(labels[k], g) for k, g in value.items())
    if key == "kind":
        return session.kind in _listed(value)
    raise AssertionError(f"condition {key!r} has no oracle in this test: add one")


def consented(policy: Policy, session: Session) -> bool:
    """A non-quiet state must be named: in ``match.state``, or its provider state in
    ``match.provider_state`` (naming is consent, DESIGN 6)."""
    match = policy.spec.match
    named = {v.lower() for v in _listed(match.get("provider_state", []))}
    return (
        session.state in QUIET_STATES
        or session.state.value in _listed(match.get("state", []))
        or session.provider_state.lower() in named
    )


def matches(policy: Policy, session: Session, now: datetime, history: History | None) -> bool:
    """The policy's ``match`` holds, its state is consented to, and the record allows its
    action (DESIGN 6 "Per-record actions")."""
    spec = policy.spec
    if not consented(policy, session):
        return False
    if session.actions is not None and spec.action not in session.actions:
        return False
    return all(condition_holds(k, v, session, now, history) is True for k, v in spec.match.items())


def exempted(policy: Policy, session: Session, now: datetime, history: History | None) -> bool:
    """Some ``exempt`` key holds, or cannot be told (unknown exempts)."""
    return any(
        condition_holds(k, v, session, now, history) is not False
        for k, v in policy.spec.exempt.items()
    )


@dataclass(frozen=True)
class Expected:
    verdict: Verdict
    policy: str | None = None
    exempt: bool = False


def deciding_policy(
    session: Session, policies: Sequence[Policy], now: datetime, history: History | None
) -> Policy | None:
    """The first enabled policy, by (priority, name), that applies and matches."""
    for policy in sorted(policies, key=lambda p: (p.spec.priority, p.spec.name)):
        if not policy.spec.enabled:
            continue
        if not any(fnmatch.fnmatchcase(session.target, g) for g in policy.spec.targets):
            continue
        if matches(policy, session, now, history):
            return policy
    return None


def reference_decide(
    session: Session, policies: Sequence[Policy], now: datetime, history: History | None
) -> Expected:
    """DESIGN 2.3-2.5, 4 and 5, restated."""
    if session.anomalies or session.state is State.UNKNOWN:
        return Expected(Verdict.SKIP)
    policy = deciding_policy(session, policies, now, history)
    if policy is None:
        return Expected(Verdict.SKIP)
    spec = policy.spec
    if exempted(policy, session, now, history):
        return Expected(Verdict.SKIP, spec.name, exempt=True)
    streak = 1 + (history.streak if history and history.streak_policy == spec.name else 0)
    if streak < spec.min_observations:
        return Expected(Verdict.WAIT, spec.name)
    if spec.mode != "enforce":
        return Expected(Verdict.ACT, spec.name)
    mark = history.mark if history and history.mark and history.mark.policy == spec.name else None
    warned = mark.warned_at if mark else None
    if spec.action is Action.NOTIFY:
        return Expected(Verdict.WAIT if warned else Verdict.ACT, spec.name)
    if spec.grace is None:
        return Expected(Verdict.ACT, spec.name)
    if warned is None:
        return Expected(Verdict.WARN, spec.name)
    return Expected(Verdict.ACT if ago(now, warned) >= spec.grace else Verdict.WAIT, spec.name)


def by_ref(policies: Sequence[Policy], ref: PolicyRef | None) -> Policy:
    assert ref is not None
    (policy,) = [p for p in policies if p.name == ref.name and p.version == ref.version]
    return policy


def run(sc: Scenario) -> Decision:
    return decide(sc.session, sc.policies, sc.now, sc.history)


# --- checks on every generated input ------------------------------------------------------
#
# One generated (session, policies, now, history) feeds every check below: generating inputs
# costs far more than deciding, so the checks share the examples.


def check_reference(sc: Scenario, decision: Decision) -> None:
    """The engine agrees with the restated rules."""
    expected = reference_decide(sc.session, sc.policies, sc.now, sc.history)
    assert decision.verdict is expected.verdict
    assert (decision.policy.name if decision.policy else None) == expected.policy
    assert (decision.code == "exempt") == expected.exempt
    if decision.policy is None:
        assert decision.action is None
        return
    policy = by_ref(sc.policies, decision.policy)
    assert decision.reason.endswith(f"(policy {policy.name} v{policy.version})")
    if decision.verdict is Verdict.SKIP:
        assert decision.action is None
    else:
        assert decision.action is policy.action
        assert decision.dry_run is policy.dry_run


def check_t1_states(sc: Scenario, decision: Decision) -> None:
    """T1: busy, pending, queued, held and stopping sessions are acted on (or warned, or waited
    for) only by a policy that lists that state in ``match.state`` or names the provider
    state; unknown and untrusted never; never with an action the record does not allow."""
    if decision.verdict is Verdict.SKIP:
        return
    assert sc.session.state is not State.UNKNOWN
    assert not sc.session.anomalies
    policy = by_ref(sc.policies, decision.policy)
    assert consented(policy, sc.session)
    assert sc.session.allows(policy.action)


def check_t2_unknown_never_matches(sc: Scenario, decision: Decision) -> None:
    """T2: a match key whose value is unknown never holds, so its policy cannot decide."""
    if decision.policy is None:
        return
    match = by_ref(sc.policies, decision.policy).spec.match
    session, history = sc.session, sc.history
    if session.last_activity is None:
        assert "idle_for" not in match
    if session.connections is None:
        assert "max_connections" not in match
    if session.owner is None:
        assert "owner" not in match
    if session.created_at is None and history is None:
        assert "age" not in match
    if _since(session, history) is None:
        assert "in_state_for" not in match


def check_t4_exempt(sc: Scenario, decision: Decision) -> None:
    """T4: when the deciding policy's ``exempt`` holds (or cannot be told), nothing happens."""
    if decision.policy is None:
        return
    policy = by_ref(sc.policies, decision.policy)
    if exempted(policy, sc.session, sc.now, sc.history):
        assert decision.verdict is Verdict.SKIP
        assert decision.code == "exempt"
        assert decision.reason.startswith("exempt: ")
    else:
        assert decision.code != "exempt"


def check_t7_grace(sc: Scenario, decision: Decision) -> None:
    """T7: dry-run policies never warn; an enforced destructive act of a grace policy needs a
    warning delivered at least the grace earlier."""
    if decision.policy is None:
        return
    policy = by_ref(sc.policies, decision.policy)
    if decision.verdict is Verdict.WARN:
        assert not policy.dry_run
        assert policy.grace is not None
    enforced = decision.verdict is Verdict.ACT and not policy.dry_run
    if enforced and policy.action.destructive and policy.grace is not None:
        mark = sc.history.mark if sc.history else None
        assert mark is not None
        assert mark.policy == policy.name
        assert mark.warned_at is not None
        assert ago(sc.now, mark.warned_at) >= policy.grace


def check_pure(sc: Scenario, decision: Decision, shuffled: list[Policy]) -> None:
    """Same inputs, same decision; the order policies are given in does not matter; a policy
    recompiled from its stored form decides the same."""
    again = run(sc)
    assert again == decision
    assert again.reason == decision.reason
    assert again.key == decision.key
    other = decide(sc.session, shuffled, sc.now, sc.history)
    assert other == decision
    assert other.reason == decision.reason
    recompiled = [compile_spec(p.spec.canonical(), p.version) for p in sc.policies]
    assert decide(sc.session, recompiled, sc.now, sc.history) == decision


@given(scenarios(), st.randoms(use_true_random=False))
def test_decisions_on_generated_inputs(sc: Scenario, rnd: Any) -> None:
    """The reference rules, T1, T2, T4, T7 and purity on the same generated inputs."""
    decision = run(sc)
    note(f"decision: {decision.verdict} {decision.policy} {decision.code}: {decision.reason}")
    event("exempt" if decision.code == "exempt" else str(decision.verdict))
    check_reference(sc, decision)
    check_t1_states(sc, decision)
    check_t2_unknown_never_matches(sc, decision)
    check_t4_exempt(sc, decision)
    check_t7_grace(sc, decision)
    shuffled = list(sc.policies)
    rnd.shuffle(shuffled)
    check_pure(sc, decision, shuffled)


# --- T1: busy, pending, stopping, unknown, anomalies -------------------------------------

_ALIVE_STATES_ST = st.sampled_from(
    [State.BUSY, State.PENDING, State.QUEUED, State.HELD, State.STOPPING]
)


@given(scenarios(states=_ALIVE_STATES_ST))
def test_t1_alive_states_are_never_acted_on_without_explicit_listing(sc: Scenario) -> None:
    """Neither the state in ``match.state`` nor the provider state in ``match.provider_state``
    (naming is consent, DESIGN 6): never acted on."""
    unlisted = [p for p in sc.policies if not consented(p, sc.session)]
    decision = decide(sc.session, unlisted, sc.now, sc.history)
    assert decision.verdict is Verdict.SKIP
    assert decision.policy is None


@dataclass(frozen=True)
class Untrusted:
    sc: Scenario
    how: str
    session: Session


_UNTRUST = st.sampled_from(
    ["unknown", "anomaly", "naive:last_activity", "naive:created_at", "naive:state_since"]
)
_ANOMALY_LISTS = st.lists(
    st.sampled_from(["x is not a timestamp", "y lies in the future"]), min_size=1, max_size=2
).map(tuple)


@st.composite
def untrusted(draw: st.DrawFn) -> Untrusted:
    """A scenario whose session must never be acted on: unknown state, anomalies, or a naive
    timestamp that a buggy provider let through."""
    sc = draw(scenarios())
    how = draw(_UNTRUST)
    session = sc.session
    if how == "unknown":
        session = replace(session, state=State.UNKNOWN, anomalies=())
    elif how == "anomaly":
        session = replace(session, anomalies=draw(_ANOMALY_LISTS))
    else:
        field = how.split(":")[1]
        value = getattr(session, field) or sc.now - timedelta(days=3)
        naive = value.astimezone(UTC).replace(tzinfo=None)
        session = replace(session, **{field: naive}, anomalies=())
    return Untrusted(sc=sc, how=how, session=session)


@given(untrusted())
def test_t1_unknown_and_untrusted_records_are_never_acted_on(case: Untrusted) -> None:
    sc = case.sc
    decision = decide(case.session, sc.policies, sc.now, sc.history)
    assert decision.verdict is Verdict.SKIP
    assert decision.policy is None
    assert decision.action is None
    if case.how == "unknown":
        assert decision.code == "unknown_state"
    else:
        assert decision.code == "malformed"
    if case.how.startswith("naive"):
        assert "no time zone" in decision.reason
    explain(case.session, sc.policies, sc.now, sc.history)  # shows it, never raises


# --- T2: unknown values ----------------------------------------------------------------


UNKNOWN_FIELDS = {
    "last_activity": ("idle_for", "1h"),
    "connections": ("max_connections", 0),
    "owner": ("owner", ["*"]),
    "created_at": ("age", "1d"),
    "state_since": ("in_state_for", "1h"),
}


@given(
    scenarios(policies={"max_size": 1, "exempt_keys": ()}),
    st.sampled_from(sorted(UNKNOWN_FIELDS)),
)
def test_t2_an_unknown_value_in_exempt_exempts(sc: Scenario, unknown: str) -> None:
    (policy,) = sc.policies
    key, value = UNKNOWN_FIELDS[unknown]
    spec = policy.spec.model_dump(mode="json", exclude_defaults=True)
    spec.update(exempt={key: value}, enabled=True, targets=["*"])
    spec["match"].pop(key, None)
    spec["match"] = spec["match"] or {"state": [s.value for s in State if s is not State.UNKNOWN]}
    exempting = compile_spec(spec)
    session = replace(sc.session, **{unknown: None}, anomalies=())
    history = None if unknown in ("created_at", "state_since") else sc.history
    decision = decide(session, [exempting], sc.now, history)
    assert decision.verdict is Verdict.SKIP
    if decision.policy is not None:
        assert decision.code == "exempt"
        assert "unknown" in decision.reason
        assert "exempt to be safe" in decision.reason


# --- T3: monotonicity --------------------------------------------------------------------

#: Policy sets for monotonicity: exempt keys are the protective ones (see ACTIVITY_KEYS).
PROTECTIVE = tuple(k for k in ALL_KEYS if k not in ACTIVITY_KEYS)
ALIVE_STATES = (State.BUSY, State.PENDING, State.STOPPING)


def later(value: datetime, delta: timedelta) -> datetime:
    """``value`` moved ``delta`` later in real time, written in its own zone. (Adding to a
    datetime in a DST zone adds wall-clock time and drops ``fold``: 01:30 on the night clocks
    go back, plus a microsecond, would land an hour *earlier*.)"""
    assert value.tzinfo is not None
    return (value.astimezone(UTC) + delta).astimezone(value.tzinfo)


_NUDGES = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=9))
_ALIVE = st.sampled_from(ALIVE_STATES)


def draw_livelier(draw: st.DrawFn, session: Session) -> tuple[str, Session]:
    """The same session made more alive in one way that applies to it (busy, pending or
    stopping instead of idle, dead or ended; later activity; one more connection; younger)."""
    options = ["busy"] if session.state in QUIET_STATES else ["unchanged"]
    if session.last_activity is not None:
        options.append("later_activity")
    if session.connections is not None:
        options.append("connection")
    if session.created_at is not None:
        options.append("younger")
    how = options[draw(st.integers(0, len(options) - 1))]
    if how == "later_activity":
        assert session.last_activity is not None
        return how, replace(session, last_activity=later(session.last_activity, draw(_NUDGES)))
    if how == "connection":
        assert session.connections is not None
        return how, replace(session, connections=session.connections + 1)
    if how == "younger":
        assert session.created_at is not None
        return how, replace(session, created_at=later(session.created_at, draw(_NUDGES)))
    if how == "busy":
        return how, replace(session, state=draw(_ALIVE))
    return how, session


@dataclass(frozen=True)
class Pair:
    sc: Scenario
    how: str
    livelier: Session


@st.composite
def livelier_pairs(draw: st.DrawFn, **policies: Any) -> Pair:
    """A scenario and its session made more alive."""
    sc = draw(scenarios(policies=policies))
    how, session = draw_livelier(draw, sc.session)
    return Pair(sc=sc, how=how, livelier=session)


def _check_monotone(
    sc: Scenario, how: str, before: Decision, after: Decision, verdict: Verdict
) -> None:
    if after.verdict is not verdict or before.verdict is verdict:
        return
    assert after.policy is not None
    policy = by_ref(sc.policies, after.policy)
    if how == "busy":
        listed = _listed(policy.spec.match.get("state", []))
        note(f"{policy.name} lists {listed}")
        # T1 allows it only for a policy that names the state explicitly
        assert after.session.state.value in listed
        return
    # First match decides (DESIGN 5): the livelier session may fall through a higher-priority
    # policy that shielded it (matched and exempted or made it wait). Then the policy that
    # decides now must have decided the same on the less alive session on its own: being
    # more alive removed a shield, it never created a reason to act.
    assert before.policy is not None, "nothing matched before, so nothing may act after"
    shield = by_ref(sc.policies, before.policy)
    assert shield.name != policy.name, (
        f"{policy.name} itself turned {before.verdict} into {verdict}"
    )
    assert (shield.priority, shield.name) < (policy.priority, policy.name)
    alone = decide(sc.session, [policy], sc.now, sc.history)
    assert alone.verdict is verdict


@given(livelier_pairs(exempt_keys=PROTECTIVE))
def test_t3_livelier_sessions_never_gain_an_act_or_warn(pair: Pair) -> None:
    sc = pair.sc
    note(f"made more alive: {pair.how}")
    before = run(sc)
    after = decide(pair.livelier, sc.policies, sc.now, sc.history)
    note(f"before: {before.verdict} {before.policy} {before.reason}")
    note(f"after: {after.verdict} {after.policy} {after.reason}")
    _check_monotone(sc, pair.how, before, after, Verdict.ACT)
    _check_monotone(sc, pair.how, before, after, Verdict.WARN)


@given(livelier_pairs(max_size=1, exempt_keys=PROTECTIVE))
def test_t3_each_policy_alone_is_monotone(pair: Pair) -> None:
    sc = pair.sc
    (policy,) = sc.policies
    before = run(sc)
    after = decide(pair.livelier, sc.policies, sc.now, sc.history)
    for verdict in (Verdict.ACT, Verdict.WARN):
        if after.verdict is verdict and before.verdict is not verdict:
            assert pair.how == "busy"
            assert pair.livelier.state.value in _listed(policy.spec.match.get("state", []))


@dataclass(frozen=True)
class Renamed:
    sc: Scenario
    policy: Policy
    session: Session


_NAME_EXEMPTS = CONDITION_VALUES["name"]
_FILLERS = st.sampled_from(["", "x", "keep"])


@st.composite
def renamed_into_exempt_globs(draw: st.DrawFn) -> Renamed:
    """A scenario with a policy exempting names, and the session renamed to match one."""
    sc = draw(scenarios())
    index = draw(st.integers(0, len(sc.policies) - 1))
    spec = sc.policies[index].spec.model_dump(mode="json", exclude_defaults=True)
    spec["exempt"] = {**spec.get("exempt", {}), "name": draw(_NAME_EXEMPTS)}
    policy = compile_spec(spec, sc.policies[index].version)
    policies = [*sc.policies[:index], policy, *sc.policies[index + 1 :]]
    globs = _listed(policy.spec.exempt["name"])
    glob = globs[draw(st.integers(0, len(globs) - 1))]
    session = replace(sc.session, name=name_matching(glob, draw(_FILLERS)))
    return Renamed(sc=replace(sc, policies=policies), policy=policy, session=session)


@given(renamed_into_exempt_globs())
def test_t3_renaming_into_an_exempt_glob_never_gains_an_act_or_warn(case: Renamed) -> None:
    sc, policy = case.sc, case.policy
    for policies in ([policy], sc.policies):
        after = decide(case.session, policies, sc.now, sc.history)
        if after.policy is not None and after.policy.name == policy.name:
            assert after.verdict is Verdict.SKIP
            assert after.code == "exempt"
    assert decide(case.session, [policy], sc.now, sc.history).verdict is Verdict.SKIP


# --- T4: exemptions are universal ------------------------------------------------------


def _satisfy(key: str, value: Any, session: Session, now: datetime) -> Session:
    """``session`` changed so that exempt ``key: value`` holds."""
    if key == "state":
        return replace(session, state=State(_listed(value)[0]))
    if key == "provider_state":
        return replace(session, provider_state=_listed(value)[0].upper())
    if key == "idle_for":
        return replace(session, last_activity=now - spec_duration(value))
    if key == "in_state_for":
        return replace(session, state_since=now - spec_duration(value) - timedelta(seconds=1))
    if key == "age":
        return replace(session, created_at=now - spec_duration(value))
    if key == "max_connections":
        return replace(session, connections=value)
    if key == "name":
        return replace(session, name=name_matching(_listed(value)[-1], "kept"))
    if key == "owner":
        return replace(session, owner=name_matching(_listed(value)[0], "ops"))
    if key == "labels":
        return replace(session, labels={k: name_matching(g, "v") for k, g in value.items()})
    if key == "kind":
        return replace(session, kind=_listed(value)[0])
    raise AssertionError(f"no way to satisfy {key!r} in this test: add one")


@dataclass(frozen=True)
class ExemptCase:
    key: str
    policy: Policy
    session: Session
    now: datetime


_EVERY_STATE = [s.value for s in State if s is not State.UNKNOWN]
_KNOWN_STATES = st.sampled_from([s for s in State if s is not State.UNKNOWN])


@st.composite
def exempt_cases(draw: st.DrawFn) -> ExemptCase:
    """A policy that acts on everything except its one ``exempt`` key, and a session that
    satisfies that key."""
    key = draw(st.sampled_from(ALL_KEYS))
    now = draw(INSTANTS)
    value = draw(CONDITION_VALUES[key])
    policy = compile_spec(
        {
            "name": "everything",
            "match": {"state": _EVERY_STATE},
            "exempt": {key: value},
            "action": draw(st.sampled_from(POLICY_ACTIONS)).value,
            "mode": "enforce",
        }
    )
    session = draw_session(draw, now, states=_KNOWN_STATES, anomalies=st.just(()))
    session = replace(session, actions=None)  # the record allows the action
    return ExemptCase(key=key, policy=policy, session=_satisfy(key, value, session, now), now=now)


@given(exempt_cases())
def test_t4_every_condition_kind_exempts(case: ExemptCase) -> None:
    """For each condition kind used in ``exempt``: a session that satisfies it is skipped by a
    policy that would otherwise act on everything (every state listed, no grace, enforced)."""
    event(case.key)
    decision = decide(case.session, [case.policy], case.now, None)
    assert decision.verdict is Verdict.SKIP
    assert decision.code == "exempt"


def test_t4_covers_every_registered_condition() -> None:
    assert set(ALL_KEYS) == set(CONDITIONS)
    assert set(CONDITION_VALUES) == set(CONDITIONS)


# --- T6: time invariance -----------------------------------------------------------------


@contextmanager
def host_zone(name: str) -> Iterator[None]:
    """Run with the process's local time zone set to ``name`` (restored afterwards)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def _fingerprint(decision: Decision, evaluations: Sequence[Any]) -> tuple[Any, ...]:
    return (
        decision.verdict,
        decision.code,
        decision.reason,
        decision.key,
        decision.policy,
        decision.action,
        decision.dry_run,
        decision.streak,
        tuple((str(e.policy.ref), e.matched, e.reasons, e.exempt_reason) for e in evaluations),
    )


@given(scenarios(), st.sampled_from(ZONES))
def test_t6_decisions_and_reasons_do_not_depend_on_the_host_zone_or_offsets(
    sc: Scenario, zone: Any
) -> None:
    baseline, evaluations = explain(sc.session, sc.policies, sc.now, sc.history)
    expected = _fingerprint(baseline, evaluations)
    session = session_in_zone(sc.session, zone)
    history = history_in_zone(sc.history, zone)
    now = sc.now.astimezone(zone)
    for name in HOST_ZONES:
        with host_zone(name):
            again, again_evaluations = explain(sc.session, sc.policies, sc.now, sc.history)
            shifted, shifted_evaluations = explain(session, sc.policies, now, history)
        assert again == baseline
        assert _fingerprint(again, again_evaluations) == expected
        # the session itself is compared as written: Python never finds a time in a DST
        # fold (01:30 on the night clocks go back) equal to one in another zone (PEP 495)
        shifted = replace(shifted, session=sc.session)
        assert shifted == baseline, f"under TZ={name}, timestamps written in {zone}"
        assert _fingerprint(shifted, shifted_evaluations) == expected


def test_t6_host_zone_is_restored() -> None:
    january = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # Chatham summer time: +13:45
    before = time.localtime(january).tm_gmtoff
    with host_zone("Pacific/Chatham"):
        assert time.localtime(january).tm_gmtoff == 13 * 3600 + 45 * 60
        with host_zone("America/Los_Angeles"):
            assert time.localtime(january).tm_gmtoff == -8 * 3600
        assert time.localtime(january).tm_gmtoff == 13 * 3600 + 45 * 60
    assert time.localtime(january).tm_gmtoff == before


# --- T7: grace is never shortened ------------------------------------------------------

DESTRUCTIVE = tuple(a for a in POLICY_ACTIONS if a.destructive)
_DESTRUCTIVE = st.sampled_from(DESTRUCTIVE)
_ONE_OR_TWO = st.sampled_from([1, 2])
_MARK_POLICIES = st.sampled_from(["graceful", "graceful", "other"])
_STREAK_POLICIES = st.sampled_from(["graceful", None])


@st.composite
def grace_scenarios(draw: st.DrawFn) -> Scenario:
    """An enforced destructive grace policy that matches, and a history with or without a mark
    (warned or not) for it."""
    policy = compile_spec(
        {
            "name": "graceful",
            "match": {"idle_for": "1s"},
            "action": draw(_DESTRUCTIVE).value,
            "mode": "enforce",
            "grace": draw(DURATION_VALUES),
            "min_observations": draw(_ONE_OR_TWO),
        }
    )
    now = draw(INSTANTS)
    session = draw_session(draw, now, states=st.just(State.IDLE), anomalies=st.just(()))
    session = replace(session, last_activity=now - timedelta(days=1), actions=None)
    warned = draw_optional_timestamp(draw, now)
    mark = None
    if draw(st.booleans()):
        mark = Mark(
            policy=draw(_MARK_POLICIES),
            marked_at=(warned or now) - timedelta(minutes=1),
            warned_at=warned,
        )
    history = History(
        first_seen=now - timedelta(days=2),
        state=State.IDLE,
        state_since=now - timedelta(days=2),
        streak_policy=draw(_STREAK_POLICIES),
        streak=draw(st.integers(0, 3)),
        mark=mark,
    )
    return Scenario(session=session, policies=[policy], now=now, history=history)


@given(grace_scenarios())
def test_t7_act_only_after_the_grace_since_a_delivered_warning(sc: Scenario) -> None:
    (policy,) = sc.policies
    assert policy.grace is not None
    decision = run(sc)
    mark = sc.history.mark if sc.history else None
    warned = mark.warned_at if mark and mark.policy == policy.name else None
    if decision.verdict is Verdict.ACT:
        assert warned is not None, "a grace policy acted without a delivered warning"
        assert ago(sc.now, warned) >= policy.grace
    if warned is None:
        assert decision.verdict in (Verdict.WARN, Verdict.WAIT)
    elif ago(sc.now, warned) >= policy.grace and decision.verdict is not Verdict.WAIT:
        assert decision.verdict is Verdict.ACT
    if decision.verdict is Verdict.WAIT and warned is not None and decision.code == "grace":
        assert ago(sc.now, warned) < policy.grace


@dataclass
class Step:
    gap: timedelta  # time since the previous sweep
    active: bool  # the user did something just before this sweep
    delivered: bool  # a warning sent in this sweep gets through


steps = st.builds(
    Step,
    gap=st.one_of(
        st.sampled_from([timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=1)]),
        st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(hours=3)),
    ),
    active=st.sampled_from([False, False, False, True]),
    delivered=st.sampled_from([True, True, False]),
)


@given(
    start=instants(),
    grace=st.sampled_from(["15m", "1h", "1h30m", "2h"]),
    observations=st.sampled_from([1, 2, 3]),
    schedule=st.lists(steps, min_size=1, max_size=25),
)
def test_t7_grace_is_never_shortened_over_a_schedule_of_sweeps(
    start: datetime, grace: str, observations: int, schedule: list[Step]
) -> None:
    """Daemon sweeps over time with activity and failed warnings: the engine plus the memory
    act only once the policy matched in every sweep since a warning was delivered at least
    the grace earlier, and only after ``min_observations`` consecutive matches."""

    policy = compile_spec(
        {
            "name": "graceful",
            "match": {"idle_for": "30m"},
            "action": "delete",
            "mode": "enforce",
            "grace": grace,
            "min_observations": observations,
        }
    )
    assert policy.grace is not None
    now = start
    session = Session(
        target="nb",
        provider="jupyter",
        id="s-1",
        name="n",
        kind="notebook",
        state=State.IDLE,
        provider_state="idle",
        last_activity=start - timedelta(hours=1),
    )
    history: History | None = None
    delivered_at: datetime | None = None  # the oracle: the warning that counts
    streak = 0
    for step in schedule:
        now += step.gap
        if step.active:
            session = replace(session, last_activity=now - timedelta(seconds=1))
        decision = decide(session, [policy], now, history)
        matched = now - session.last_activity >= timedelta(minutes=30)  # type: ignore[operator]
        streak = streak + 1 if matched else 0
        if not matched:
            delivered_at = None
            assert decision.verdict is Verdict.SKIP
        if decision.verdict is Verdict.ACT:
            assert streak >= observations
            assert delivered_at is not None, "acted without a delivered warning"
            assert now >= delivered_at + policy.grace, "acted before the grace ran out"
            return  # the session is gone
        if decision.verdict is Verdict.WARN:
            assert streak >= observations
        history = memory.advance(history, session, decision, now)
        if decision.verdict is Verdict.WARN and step.delivered:
            history = memory.warned(history, now)
            delivered_at = now


def test_t7_non_positive_or_absurd_grace_is_rejected() -> None:
    for grace in ("0s", 0, -1, -3600, 0.0, "9999999999d", 1e20, True, "3651d"):
        with pytest.raises(PolicyError, match="grace"):
            parse_specs(
                {
                    "policies": [
                        {
                            "name": "a",
                            "match": {"idle_for": "1h"},
                            "action": "delete",
                            "grace": grace,
                        }
                    ]
                },
                where="p.yaml",
            )


@given(st.one_of(st.integers(max_value=0), st.floats(max_value=0, allow_nan=False)))
def test_t7_generated_non_positive_graces_are_rejected(grace: float) -> None:
    with pytest.raises(PolicyError, match="grace"):
        parse_specs(
            {
                "policies": [
                    {"name": "a", "match": {"idle_for": "1h"}, "action": "delete", "grace": grace}
                ]
            },
            where="p.yaml",
        )


@given(
    st.sampled_from(["3000d", "3650d"]),
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4000))),
)
def test_t7_long_graces_never_overflow(grace: str, since_warning: timedelta | None) -> None:
    """The longest grace allowed, warned near the end of the calendar: WAIT, never a crash."""
    policy = compile_spec(
        {
            "name": "graceful",
            "match": {"idle_for": "1s"},
            "action": "delete",
            "mode": "enforce",
            "grace": grace,
        }
    )
    now = datetime(9999, 6, 1, tzinfo=UTC)
    warned = now - since_warning if since_warning is not None else None
    session = Session(
        target="nb",
        provider="jupyter",
        id="s",
        name="n",
        kind="notebook",
        state=State.IDLE,
        provider_state="idle",
        last_activity=now - timedelta(days=1),
    )
    history = History(
        first_seen=now - timedelta(days=2),
        state=State.IDLE,
        state_since=now - timedelta(days=2),
        mark=Mark(policy="graceful", marked_at=warned or now, warned_at=warned),
    )
    decision = decide(session, [policy], now, history)
    assert policy.grace is not None
    if warned is None:
        assert decision.verdict is Verdict.WARN
    else:
        expected = Verdict.ACT if since_warning >= policy.grace else Verdict.WAIT
        assert decision.verdict is expected


# --- the generators ------------------------------------------------------------------


def test_strategies_reach_every_verdict() -> None:
    """The generators are useful only if they reach acts, warnings, waits and exemptions
    (the targeted grace tests cover warnings in depth)."""
    seen: dict[str, int] = {}

    @settings(max_examples=1000, derandomize=True, database=None)
    @given(scenarios())
    def sample(sc: Scenario) -> None:
        decision = run(sc)
        key = "exempt" if decision.code == "exempt" else str(decision.verdict)
        seen[key] = seen.get(key, 0) + 1

    sample()
    # Loose floors: Hypothesis mixes constants from every loaded module into what it draws,
    # so the shares move with the set of test modules collected (act: 4% to 11% observed).
    total = sum(seen.values())
    shares = {"act": 0.02, "exempt": 0.01, "wait": 0.01, "warn": 0.001, "skip": 0.3}
    for key, share in shares.items():
        assert seen.get(key, 0) >= total * share, str(seen)
