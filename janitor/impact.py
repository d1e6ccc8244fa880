"""What a policy change would do now (``policy apply --plan``). Reads only; writes nothing.

For each target, one live listing is decided twice through the sweep's own pipeline (the
engine, then the guards of :mod:`janitor.plan`): with the stored policies and with the
policies as they would be after the apply. For each policy, it counts the sessions it would
act on now (an ``act``, or the warning that starts a grace), before and after, and says when
a guard holds the policy back (its blast radius, or the whole target). A target that cannot
be listed is reported, never counted as empty.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from janitor.errors import ProviderError
from janitor.explain import EXPLAIN
from janitor.model import Decision, Verdict
from janitor.plan import Plan
from janitor.policy.spec import Policy, PolicySpec, compile_policy
from janitor.runtime import Runtime
from janitor.store.policies import Change
from janitor.sweep import open_in_store, plan_target, prepare
from janitor.targets import TargetConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetImpact:
    """One target's sessions as the stored policies and the proposed ones would treat them.

    ``after`` and ``before`` count, per policy, the sessions it would act on now; ``blocked``
    says why a guard would hold a policy (or, under ``"*"``, every policy) back after the
    change. ``error`` is set when the target could not be listed (nothing is counted then).
    """

    target: str
    listed: int = 0
    after: Counter[str] = field(default_factory=Counter)
    before: Counter[str] = field(default_factory=Counter)
    blocked: dict[str, str] = field(default_factory=dict)
    error: str | None = None


def proposed_policies(stored: Sequence[Policy], changes: Sequence[Change]) -> list[Policy]:
    """The stored policies with the plan's changes applied (disabled ones stay, disabled)."""
    changed = {
        c.name: compile_policy(PolicySpec.model_validate(c.spec), c.version, where="plan")
        for c in changes
        if c.changes and c.spec is not None
    }
    kept = [p for p in stored if p.name not in changed]
    return [*kept, *changed.values()]


async def impact(
    rt: Runtime, proposed: Sequence[Policy], *, targets: Sequence[str] | None = None
) -> list[TargetImpact]:
    """The impact on every target (or on ``targets``), listed concurrently."""
    chosen = (
        [rt.config.target(name) for name in targets]
        if targets is not None
        else list(rt.config.targets)
    )
    return list(await asyncio.gather(*(_target(rt, t, proposed) for t in chosen)))


async def _target(rt: Runtime, target: TargetConfig, proposed: Sequence[Policy]) -> TargetImpact:
    run = await prepare(rt, target, "plan", None, EXPLAIN)
    try:
        listing = await run.provider.list_sessions()
    except ProviderError as exc:
        return TargetImpact(target=target.name, error=f"listing failed: {exc}")
    open_intents = await open_in_store(rt, target.name)
    before = await plan_target(run, listing, open_intents)
    after = await plan_target(run, listing, open_intents, policies=proposed)
    blocked = dict(after.blast.policies)
    held = after.block or after.blast.target
    if held:
        blocked["*"] = held
    return TargetImpact(
        target=target.name,
        listed=len(listing.sessions),
        after=_acting(after),
        before=_acting(before),
        blocked=blocked,
    )


def _acting(plan: Plan) -> Counter[str]:
    """Sessions each policy would act on now (or warn, starting a grace), after the guards
    that hold single sessions back (open intents, cascades, shared kernels); what holds a
    whole policy or target back (blast radius, skew, population drop) is in ``blocked``."""
    return Counter(d.policy.name for d in plan.decisions if _acts(d) and d.policy is not None)


def _acts(decision: Decision) -> bool:
    return decision.verdict in (Verdict.ACT, Verdict.WARN)
