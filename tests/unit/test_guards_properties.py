"""Property tests of the guards (reliability T5 blast radius, clock skew, population drop).

Limits are checked against exact arithmetic (``fractions.Fraction``), so a float rounding
in the guard that lets one action too many through is found.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from hypothesis import given, note
from hypothesis import strategies as st

from janitor.guards import BlastRadius, Limits, blast_radius, population_block, skew_block
from janitor.model import Action, Decision, Verdict
from janitor.policy.spec import Policy
from tests.strategies import (
    PERCENTS,
    POLICY_NAMES,
    compile_spec,
    draw_decisions,
    draw_spec,
    percents,
    plain_session,
)


def exact_allowed(limits: Limits, population: int) -> int | None:
    """The largest number of actions the limits allow, computed exactly."""
    bounds = []
    if limits.count is not None:
        bounds.append(limits.count)
    if limits.percent is not None:
        bounds.append(math.floor(Fraction(population) * Fraction(limits.percent) / 100))
    return min(bounds) if bounds else None


def policy_limits(policy: Policy) -> Limits:
    return Limits(count=policy.max_actions_per_sweep, percent=policy.max_actions_percent)


@dataclass(frozen=True)
class Batch:
    decisions: list[Decision]
    policies: dict[str, Policy]
    target: Limits
    population: int


_NAMES = st.lists(st.sampled_from(POLICY_NAMES), min_size=1, max_size=4, unique=True)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    """One target's decisions in one sweep, with per-policy and per-target limits."""
    names = draw(_NAMES)
    policies = [compile_spec(draw_spec(draw, name, limits=True)) for name in names]
    decisions = draw_decisions(draw, policies, max_size=40)
    extra = draw(_EXTRA)  # the sweep's population is the listing: usually just these
    target = Limits(count=draw(_TARGET_COUNTS), percent=draw(_TARGET_PERCENTS))
    return Batch(
        decisions=decisions,
        policies={p.name: p for p in policies},
        target=target,
        population=len(decisions) + extra,
    )


_EXTRA = st.sampled_from((0, 0, 0, 1, 5, 40))
_TARGET_COUNTS = st.one_of(st.none(), st.integers(0, 20))
_TARGET_PERCENTS = st.one_of(st.none(), PERCENTS)


def _acts(decisions: Sequence[Decision]) -> list[Decision]:
    return [d for d in decisions if d.verdict is Verdict.ACT]


def _enforced_destructive(decision: Decision) -> bool:
    return not decision.dry_run and decision.action is not None and decision.action.destructive


def _run(batch: Batch) -> BlastRadius:
    return blast_radius(batch.decisions, batch.policies, batch.target, batch.population)


def check_a_policy_is_blocked_exactly_when_its_acts_exceed_its_limit(
    batch: Batch, blast: BlastRadius
) -> None:
    counts = Counter(d.policy.name for d in _acts(batch.decisions) if d.policy)
    for name, policy in batch.policies.items():
        allowed = exact_allowed(policy_limits(policy), batch.population)
        blocked = name in blast.policies
        note(f"{name}: {counts[name]} acts, allowed {allowed}, blocked {blocked}")
        if blocked:
            assert allowed is not None
            assert counts[name] > allowed
            assert name in blast.policies[name]
            assert "nothing is done for this policy" in blast.policies[name]
        else:
            assert allowed is None or counts[name] <= allowed


def check_what_passes_never_exceeds_any_limit(batch: Batch, blast: BlastRadius) -> None:
    passed = [d for d in _acts(batch.decisions) if blast.blocks(d) is None]
    per_policy = Counter(d.policy.name for d in passed if d.policy)
    for name, count in per_policy.items():
        allowed = exact_allowed(policy_limits(batch.policies[name]), batch.population)
        assert allowed is None or count <= allowed
    target_allowed = exact_allowed(batch.target, batch.population)
    enforced = sum(1 for d in passed if _enforced_destructive(d))
    assert target_allowed is None or enforced <= target_allowed


def check_abort_never_truncate(batch: Batch, blast: BlastRadius) -> None:
    """Either all of a policy's acts (and warnings) pass, or none; the same for the target's
    enforced destructive acts."""
    for name in batch.policies:
        own = [
            d
            for d in batch.decisions
            if d.policy and d.policy.name == name and d.verdict in (Verdict.ACT, Verdict.WARN)
        ]
        outcomes = {blast.blocks(d) is None for d in own}
        assert len(outcomes) <= 1, f"policy {name} was truncated"
    if blast.target is not None:
        for decision in batch.decisions:
            if decision.verdict in (Verdict.ACT, Verdict.WARN) and _enforced_destructive(decision):
                assert blast.blocks(decision) is not None


def check_the_target_is_blocked_only_when_over_its_limit(batch: Batch, blast: BlastRadius) -> None:
    remaining = [
        d
        for d in _acts(batch.decisions)
        if d.policy and d.policy.name not in blast.policies and _enforced_destructive(d)
    ]
    allowed = exact_allowed(batch.target, batch.population)
    if blast.target is None:
        assert allowed is None or len(remaining) <= allowed
    else:
        assert allowed is not None
        assert len(remaining) > allowed
        assert "nothing is done on this target" in blast.target


def check_warnings_of_a_blocked_policy_are_held_back(batch: Batch, blast: BlastRadius) -> None:
    """A blocked policy does nothing: no action and no warning that would start a grace."""
    for decision in batch.decisions:
        reason = blast.blocks(decision)
        if decision.verdict in (Verdict.SKIP, Verdict.WAIT):
            assert reason is None
        elif decision.policy and decision.policy.name in blast.policies:
            assert reason == blast.policies[decision.policy.name]
        elif reason is not None:
            assert reason == blast.target
            assert _enforced_destructive(decision)


def check_dry_run_and_notify_acts_never_count_against_the_target(
    batch: Batch, blast: BlastRadius
) -> None:
    for decision in _acts(batch.decisions):
        policy = decision.policy
        if not _enforced_destructive(decision) and policy and policy.name not in blast.policies:
            assert blast.blocks(decision) is None


@given(batches())
def test_t5_blast_radius_on_generated_sweeps(batch: Batch) -> None:
    """Every blast-radius property on the same generated sweeps (generating them is the cost)."""
    blast = _run(batch)
    note(f"blocked policies: {sorted(blast.policies)}; target: {blast.target}")
    check_a_policy_is_blocked_exactly_when_its_acts_exceed_its_limit(batch, blast)
    check_what_passes_never_exceeds_any_limit(batch, blast)
    check_abort_never_truncate(batch, blast)
    check_the_target_is_blocked_only_when_over_its_limit(batch, blast)
    check_warnings_of_a_blocked_policy_are_held_back(batch, blast)
    check_dry_run_and_notify_acts_never_count_against_the_target(batch, blast)


def test_t5_blocked_policy_example() -> None:
    """The example of DESIGN 2.3: 26 acts with a limit of 25 block the policy as a whole."""
    policy = compile_spec(
        {
            "name": "idle-notebooks",
            "match": {"idle_for": "2h"},
            "action": "delete",
            "mode": "enforce",
            "max_actions_per_sweep": 25,
        }
    )
    other = compile_spec({"name": "other", "match": {"idle_for": "1h"}, "action": "notify"})
    decisions = [
        Decision(
            session=plain_session(i),
            verdict=Verdict.ACT,
            reason="idle",
            code="act",
            policy=(policy if i < 26 else other).ref,
            action=Action.DELETE if i < 26 else Action.NOTIFY,
            dry_run=i >= 26,
        )
        for i in range(30)
    ]
    blast = blast_radius(decisions, {p.name: p for p in (policy, other)}, Limits(), 100)
    assert set(blast.policies) == {"idle-notebooks"}
    assert "would act on 26 of 100 sessions" in blast.policies["idle-notebooks"]
    assert all(blast.blocks(d) for d in decisions[:26])
    assert not any(blast.blocks(d) for d in decisions[26:])


# --- limits ---------------------------------------------------------------------------


@given(
    st.one_of(st.none(), st.integers(0, 50)),
    st.one_of(st.none(), percents()),
    st.integers(0, 100_000),
)
def test_limits_allow_the_exact_floor(
    count: int | None, percent: float | None, population: int
) -> None:
    limits = Limits(count=count, percent=percent)
    assert limits.allowed(population) == exact_allowed(limits, population)


# --- clock skew -----------------------------------------------------------------------


@given(
    st.one_of(
        st.none(), st.timedeltas(min_value=timedelta(hours=-3), max_value=timedelta(hours=3))
    ),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(minutes=10)),
)
def test_skew_blocks_exactly_beyond_the_tolerance(
    skew: timedelta | None, tolerance: timedelta
) -> None:
    reason = skew_block(skew, tolerance)
    if skew is None or abs(skew) <= tolerance:
        assert reason is None
    else:
        assert reason is not None
        assert ("ahead of" in reason) == (skew > timedelta(0))
        assert "no action on this target" in reason
        # symmetric: the same distance the other way blocks too
        assert skew_block(-skew, tolerance) is not None


# --- population drop ------------------------------------------------------------------


@given(
    listed=st.integers(0, 2000),
    remembered=st.integers(0, 2000),
    drop=st.one_of(percents(), st.sampled_from([50.0, 100.0])),
    minimum=st.integers(0, 20),
)
def test_population_block_exactly_when_the_listing_shrank_too_much(
    listed: int, remembered: int, drop: float, minimum: int
) -> None:
    reason = population_block(listed, remembered, max_drop_percent=drop, minimum=minimum)
    exact_floor = Fraction(remembered) * (100 - Fraction(drop)) / 100
    expected = remembered >= minimum and drop < 100 and listed < exact_floor
    assert (reason is not None) == expected
    if reason is not None:
        assert f"{listed} sessions" in reason
        assert f"remembers {remembered}" in reason


@given(
    listed=st.integers(0, 500),
    more=st.integers(1, 500),
    remembered=st.integers(0, 1000),
    drop=percents(),
)
def test_population_block_is_monotone_in_the_listing(
    listed: int, more: int, remembered: int, drop: float
) -> None:
    """Listing more sessions never creates a block that fewer did not have."""
    if population_block(listed + more, remembered, max_drop_percent=drop) is not None:
        assert population_block(listed, remembered, max_drop_percent=drop) is not None
