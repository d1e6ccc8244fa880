"""The guard pipeline: from the engine's decisions to what a sweep may do. No I/O.

A daemon sweep, ``janitor sweep --dry-run`` and ``janitor explain`` all run this same
pipeline, so ``explain`` never says "act" where a sweep would hold back. In order:

1. open intents: a record with an earlier action still settling (or not yet reconciled),
   and its descendants where actions cascade, waits;
2. cascades (providers whose parents ``cascade``): a parent whose action would reach a
   protected child (exempt, or of unknown exemption) is held with a ``blocked`` row naming
   the child; a child whose acting parent covers it waits instead of getting its own call;
3. blast radius, per policy and per target, counting a cascading action once per record it
   reaches, as a share of the non-ended sessions listed;
4. target-wide blocks: clock skew, and a population drop (only for stable populations);
5. shared parents (providers whose parents are ``shared``): a session whose kernel a kept
   session uses waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from janitor import guards
from janitor.model import Action, Decision, History, Listing, Session, State, Verdict
from janitor.policy.conditions import EvalContext
from janitor.policy.engine import exempt_reason
from janitor.policy.spec import Policy
from janitor.providers.base import Provider
from janitor.providers.kit import ParentRelation
from janitor.targets import TargetConfig

#: Decision codes the plan gives to the decisions it holds back.
SETTLING, CASCADE_BLOCKED, COVERED, SHARED_PARENT = (
    "settling",
    "cascade_blocked",
    "covered_by_parent",
    "shared_parent",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Open:
    """An intent still open on a record: its action and why it is open."""

    action: Action | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The decisions after the guards, and the limits that hold whole policies or the target.

    ``block`` holds every action on the target (skew, population drop); ``blast`` holds the
    policies (or the target) over their limits; ``weights`` says how many records each
    cascading action reaches.
    """

    decisions: list[Decision]
    blast: guards.BlastRadius
    block: str | None
    weights: Mapping[str, int] = field(default_factory=dict)

    def holds(self, decision: Decision) -> str | None:
        """Why a guard holds this decision's warning or action back, or None."""
        if decision.verdict not in (Verdict.ACT, Verdict.WARN):
            return None
        return self.block or self.blast.blocks(decision)


def make_plan(
    decisions: Sequence[Decision],
    *,
    listing: Listing,
    policies: Sequence[Policy],
    target: TargetConfig,
    provider: Provider,
    previous: Mapping[str, History],
    open_intents: Mapping[str, Open],
    acts: bool,
    now: datetime,
) -> Plan:
    """Run the guards of the module docstring over one target's decisions.

    Args:
        open_intents: session id → the earlier action still open on it.
        acts: False when the sweep acts on nothing (every policy counts as dry-run).
    """
    cascade = provider.parents is ParentRelation.CASCADE
    family = guards.descendants(listing.sessions) if cascade else {}
    by_id = {s.id: s for s in listing.sessions}
    planned = _hold_open(list(decisions), open_intents, by_id, cascade)
    weights: dict[str, int] = {}
    if cascade:
        planned = _block_protected_cascades(planned, family, policies, previous, now)
        planned, weights = _cover_children(planned, family, by_id, provider, acts)
    population = sum(1 for s in listing.sessions if s.state is not State.ENDED)
    blast = guards.blast_radius(
        planned,
        {p.name: p for p in policies},
        guards.Limits(count=target.max_actions_per_sweep, percent=target.max_actions_percent),
        population=population,
        weights=weights,
    )
    block = _target_block(listing, target, provider, previous)
    if provider.parents is ParentRelation.SHARED:
        planned = _hold_shared_parents(planned, blast, acts)
    return Plan(decisions=planned, blast=blast, block=block, weights=weights)


def _enforced(decision: Decision, acts: bool) -> bool:
    return (
        decision.verdict is Verdict.ACT
        and acts
        and not decision.dry_run
        and decision.action is not None
        and decision.action.destructive
    )


def _wait(decision: Decision, code: str, why: str) -> Decision:
    return replace(decision, verdict=Verdict.WAIT, code=code, reason=f"{why} ({decision.reason})")


def _hold_open(
    decisions: list[Decision],
    open_intents: Mapping[str, Open],
    by_id: Mapping[str, Session],
    cascade: bool,
) -> list[Decision]:
    """A record with an open intent (or, for cascades, under one) takes no new action.

    The one exception is the escalation DESIGN 6 allows: a ``force_cancel`` of a record whose
    ``cancel`` is open (stuck in CANCELLING); its intent supersedes the cancel's.
    """
    if not open_intents:
        return decisions
    held = []
    for decision in decisions:
        session = decision.session
        own = open_intents.get(session.id)
        why = own.reason if own is not None else None
        if (
            own is not None
            and own.action is Action.CANCEL
            and decision.action is Action.FORCE_CANCEL
        ):
            why = None
        if why is None and own is None and cascade:
            above = next((a for a in guards.ancestors(session, by_id) if a in open_intents), None)
            if above is not None:
                why = f"its parent {above}: {open_intents[above].reason}"
        acting = decision.verdict in (Verdict.ACT, Verdict.WARN)
        held.append(_wait(decision, SETTLING, f"held back: {why}") if why and acting else decision)
    return held


def _block_protected_cascades(
    decisions: list[Decision],
    family: Mapping[str, list[Session]],
    policies: Sequence[Policy],
    previous: Mapping[str, History],
    now: datetime,
) -> list[Decision]:
    """A parent whose cascading action would reach a protected child is not acted on."""
    own = {d.session.id: d for d in decisions}
    by_name = {p.name: p for p in policies}
    result = []
    for decision in decisions:
        policy = by_name.get(decision.policy.name) if decision.policy else None
        children = family.get(decision.session.id, [])
        acting = decision.verdict in (Verdict.ACT, Verdict.WARN)
        if not (acting and policy is not None and children):
            result.append(decision)
            continue
        protected = [
            reason
            for child in children
            if child.state is not State.ENDED
            and (
                reason := guards.protected_child(
                    child,
                    own.get(child.id),
                    exempt_reason(
                        policy, child, EvalContext(now=now, history=previous.get(child.id))
                    ),
                    unknown=bool(child.anomalies) or child.state is State.UNKNOWN,
                )
            )
        ]
        if not protected:
            result.append(decision)
            continue
        more = f" and {len(protected) - 1} more" if len(protected) > 1 else ""
        why = f"not {decision.action}: it would reach a protected child, {protected[0]}{more}"
        result.append(
            replace(
                decision,
                verdict=Verdict.WAIT,
                code=CASCADE_BLOCKED,
                reason=f"{why} ({decision.reason})",
            )
        )
    return result


def _cover_children(
    decisions: list[Decision],
    family: Mapping[str, list[Session]],
    by_id: Mapping[str, Session],
    provider: Provider,
    acts: bool,
) -> tuple[list[Decision], dict[str, int]]:
    """Children of an acting parent wait for the parent's cascade; weights count them."""
    parents = {
        d.session.id: d
        for d in decisions
        if _enforced(d, acts)
        and d.action is not None
        and d.action in provider.specs
        and provider.specs[d.action].cascades
    }
    weights = {
        pid: 1 + sum(1 for c in family.get(pid, []) if c.state is not State.ENDED)
        for pid in parents
    }
    result = []
    for decision in decisions:
        above = next((a for a in guards.ancestors(decision.session, by_id) if a in parents), None)
        if above is not None and decision.verdict in (Verdict.ACT, Verdict.WARN):
            parent = parents[above].session
            why = f"covered: the {parents[above].action} of its parent {parent.name} ({above}) reaches it"
            decision = _wait(decision, COVERED, why)
        result.append(decision)
    # a parent that is itself covered by a grand-parent does not count twice
    covered = {d.session.id for d in result if d.code == COVERED}
    return result, {pid: w for pid, w in weights.items() if pid not in covered}


def _target_block(
    listing: Listing, target: TargetConfig, provider: Provider, previous: Mapping[str, History]
) -> str | None:
    """A reason no action may happen on this target this sweep (skew, population drop)."""
    skew = guards.skew_block(listing.server_skew, target.skew_tolerance)
    if skew:
        return skew
    if not provider.stable_population:
        return None
    remembered = sum(1 for h in previous.values() if not (h.last_key or "").startswith("invalid|"))
    return guards.population_block(
        len(listing.sessions), remembered, max_drop_percent=target.max_population_drop_percent
    )


def _hold_shared_parents(
    decisions: list[Decision], blast: guards.BlastRadius, acts: bool
) -> list[Decision]:
    """Acts that would also end a kept session's kernel wait instead (guards.shared_parents)."""
    acting = {d.session.id for d in decisions if _enforced(d, acts) and blast.blocks(d) is None}
    held = guards.shared_parents(decisions, acting)
    return [
        _wait(d, SHARED_PARENT, f"held back: {held[d.session.id]}") if d.session.id in held else d
        for d in decisions
    ]
