"""Guards that stand between decisions and actions. Pure functions, property-tested.

* blast radius: per policy (``max_actions_per_sweep``, ``max_actions_percent``) and per target
  (the same pair in the target's config; only destructive, enforced actions count there).
  Over a limit, nothing is acted on for that policy or target: abort, never truncate.
  An action that cascades counts once per record it reaches (the parent and every
  descendant).
* target-wide blocks: clock skew beyond the tolerance, and a listing that shrank suspiciously
  compared with the population janitor remembers (only for providers whose population is
  stable).
* parents: a Jupyter kernel shared with a kept session (``shared``), and an ESS parent whose
  cancel would reach a protected child (``cascade``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from janitor.durations import format_duration
from janitor.model import Decision, Session, Verdict
from janitor.policy.spec import Policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """A count limit and a percentage limit; either may be absent."""

    count: int | None = None
    percent: float | None = None

    def allowed(self, population: int) -> int | None:
        """The largest number of actions allowed, or None when unlimited."""
        bounds = []
        if self.count is not None:
            bounds.append(self.count)
        if self.percent is not None:
            bounds.append(math.floor(population * self.percent / 100))
        return min(bounds) if bounds else None

    def describe(self) -> str:
        """``25 actions`` / ``10% of sessions`` / both."""
        parts = []
        if self.count is not None:
            parts.append(f"{self.count} actions")
        if self.percent is not None:
            parts.append(f"{self.percent:g}% of the sessions listed")
        return " and ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlastRadius:
    """Which policies (by name) and whether the whole target are blocked, and why."""

    policies: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None

    def blocks(self, decision: Decision) -> str | None:
        """The reason ``decision`` must not be carried out, or None.

        A blocked policy (or target) does nothing at all: its warnings are held back too, so
        no grace period starts for sessions of a policy that is over its limit.
        """
        if decision.verdict not in (Verdict.ACT, Verdict.WARN) or decision.policy is None:
            return None
        if decision.policy.name in self.policies:
            return self.policies[decision.policy.name]
        if self.target is not None and not decision.dry_run and _destructive(decision):
            return self.target
        return None


def _destructive(decision: Decision) -> bool:
    return decision.action is not None and decision.action.destructive


def blast_radius(
    decisions: Sequence[Decision],
    policies: Mapping[str, Policy],
    target_limits: Limits,
    population: int,
    weights: Mapping[str, int] | None = None,
) -> BlastRadius:
    """Apply the per-policy limits, then the per-target limit to what remains.

    ``weights`` (session id → records reached) counts a cascading action once per record it
    reaches; a session not in it counts once.
    """
    weight = weights or {}
    acting = [d for d in decisions if d.verdict is Verdict.ACT and d.policy is not None]
    per_policy: Counter[str] = Counter()
    for d in acting:
        if d.policy:
            per_policy[d.policy.name] += weight.get(d.session.id, 1)
    blocked: dict[str, str] = {}
    for name, count in sorted(per_policy.items()):
        policy = policies.get(name)
        if policy is None:
            continue
        limits = Limits(count=policy.max_actions_per_sweep, percent=policy.max_actions_percent)
        allowed = limits.allowed(population)
        if allowed is not None and count > allowed:
            blocked[name] = (
                f"policy {name} would act on {count} of {population} sessions, over its limit "
                f"of {limits.describe()} (at most {allowed}); nothing is done for this policy"
            )
    enforced = sum(
        weight.get(d.session.id, 1)
        for d in acting
        if d.policy and d.policy.name not in blocked and not d.dry_run and _destructive(d)
    )
    allowed = target_limits.allowed(population)
    target_reason = None
    if allowed is not None and enforced > allowed:
        target_reason = (
            f"the target would see {enforced} actions on {population} sessions, over its limit "
            f"of {target_limits.describe()} (at most {allowed}); nothing is done on this target"
        )
    return BlastRadius(policies=blocked, target=target_reason)


def skew_block(skew: timedelta | None, tolerance: timedelta) -> str | None:
    """A reason to take no action when the provider's clock differs from ours too much."""
    if skew is None or abs(skew) <= tolerance:
        return None
    direction = "ahead of" if skew > timedelta(0) else "behind"
    return (
        f"the provider's clock is {format_duration(abs(skew))} {direction} janitor's, "
        f"beyond the tolerance of {format_duration(tolerance)}; no action on this target"
    )


def population_block(
    listed: int, remembered: int, *, max_drop_percent: float, minimum: int = 10
) -> str | None:
    """A reason to take no action when the listing shrank suspiciously since the last sweep."""
    if remembered < minimum or max_drop_percent >= 100:
        return None
    floor = remembered * (1 - max_drop_percent / 100)
    if listed >= floor:
        return None
    return (
        f"the listing has {listed} sessions where janitor remembers {remembered} "
        f"(a drop of more than {max_drop_percent:g}%); a partial listing is suspected, "
        "no action on this target this sweep"
    )


def shared_parents(decisions: Sequence[Decision], acting: set[str]) -> dict[str, str]:
    """Sessions whose action would also end a parent another, kept session depends on.

    In Jupyter a notebook and its console may share one kernel (``parent_id``): deleting
    either ends the kernel for both. A session in ``acting`` (ids about to be acted on) is
    held back when a session sharing its parent is not in ``acting``; returns id -> reason.
    """
    groups: dict[str, list[Decision]] = {}
    for decision in decisions:
        parent = decision.session.parent_id
        if parent:
            groups.setdefault(parent, []).append(decision)
    held: dict[str, str] = {}
    for parent, group in groups.items():
        kept = [d.session.name for d in group if d.session.id not in acting]
        if not kept or len(group) < 2:
            continue
        for decision in group:
            if decision.session.id in acting:
                held[decision.session.id] = (
                    f"shares its kernel {parent[:8]} with {', '.join(sorted(kept))}, which is "
                    f"not being acted on; {decision.action} would end it for them too"
                )
    return held


def descendants(sessions: Iterable[Session]) -> dict[str, list[Session]]:
    """Every session's descendants through ``parent_id``, transitively (cycles are cut)."""
    children: dict[str, list[Session]] = {}
    for session in sessions:
        if session.parent_id:
            children.setdefault(session.parent_id, []).append(session)
    found: dict[str, list[Session]] = {}
    for parent, direct in children.items():
        seen: set[str] = {parent}
        queue, result = list(direct), []
        while queue:
            child = queue.pop()
            if child.id in seen:
                continue
            seen.add(child.id)
            result.append(child)
            queue.extend(children.get(child.id, []))
        found[parent] = result
    return found


def ancestors(session: Session, by_id: Mapping[str, Session]) -> list[str]:
    """The ids above ``session`` through ``parent_id`` (listed or not), nearest first."""
    chain: list[str] = []
    parent = session.parent_id
    while parent and parent not in chain and parent != session.id:
        chain.append(parent)
        above = by_id.get(parent)
        parent = above.parent_id if above is not None else None
    return chain


#: Decision codes of sessions no cascade may reach: exempt by their policy, kept by an admin.
PROTECTED_CODES = frozenset({"exempt", "kept"})


def protected_child(
    child: Session, own: Decision | None, policy_exempt: str | None, *, unknown: bool
) -> str | None:
    """Why a cascade must not reach ``child``, or None (DESIGN 6 "Parents").

    A child is protected when it is exempt or kept (``janitor keep``) by its own decision,
    exempt by the acting policy's ``exempt`` block, or when its exemption cannot be told
    (``unknown``: an untrusted record, an unknown state).
    """
    if unknown:
        return (
            f"{child.name} ({child.id}): its record cannot be trusted, so its exemption is unknown"
        )
    if own is not None and own.code in PROTECTED_CODES:
        return f"{child.name} ({child.id}): {own.reason}"
    if policy_exempt is not None:
        return f"{child.name} ({child.id}): exempt: {policy_exempt}"
    return None
