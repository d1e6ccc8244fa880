"""``janitor explain``: what every policy would do now, and why. Reads only; writes nothing.

It runs the sweep's own pipeline (list, decide, the guards of :mod:`janitor.plan`, the kill
switch) without acting, so it never says "act" where a sweep would hold back: a session
whose policy is over its blast radius, whose target's clock is off, or whose parent's
cascade would reach a protected child shows as held, with the guard's reason.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from janitor.context import Mode, pause_reason
from janitor.durations import format_duration
from janitor.errors import ProviderError
from janitor.model import Decision, Session, Verdict
from janitor.plan import Plan
from janitor.policy.engine import Evaluation, explain
from janitor.runtime import Runtime
from janitor.sweep import open_in_store, plan_target, prepare
from janitor.targets import TargetConfig

#: Plan as a daemon sweep would (policies act in their own modes), but record nothing.
EXPLAIN = Mode(acts=True, records=False)


async def explain_targets(
    rt: Runtime, *, only: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per listed session of every target (or ``only``), plus listing failures."""
    targets = [rt.config.target(only)] if only else list(rt.config.targets)
    results = await asyncio.gather(*(_explain_target(rt, t) for t in targets))
    rows = [row for target_rows, _ in results for row in target_rows]
    failures = [failure for _, failure in results if failure]
    return rows, failures


async def _explain_target(
    rt: Runtime, target: TargetConfig
) -> tuple[list[dict[str, Any]], str | None]:
    run = await prepare(rt, target, "explain", None, EXPLAIN)
    try:
        listing = await run.provider.list_sessions()
    except ProviderError as exc:
        return [], f"target {target.name}: listing failed: {exc}"
    plan = await plan_target(run, listing, await open_in_store(rt, target.name))
    paused = await pause_reason(run)
    now = rt.clock.now()
    rows = []
    for decision in plan.decisions:
        session = decision.session
        _, evaluations = explain(session, run.policies.policies, now, run.previous.get(session.id))
        held = _held(plan, decision, paused)
        rows.append(
            {
                "target": target.name,
                "session": session.name,
                "session_id": session.id,
                "kind": session.kind,
                "state": str(session.state),
                "provider_state": session.provider_state,
                "idle": _idle(session, now),
                "verdict": "held" if held else _verdict(decision),
                "action": str(decision.action or ""),
                "policy": str(decision.policy) if decision.policy else None,
                "dry_run": decision.dry_run,
                "reason": f"held: {held} ({decision.reason})" if held else decision.reason,
                "guard": held,
                "evaluations": [_evaluation(e) for e in evaluations],
            }
        )
    rows.extend(
        {
            "target": target.name,
            "session": item.id or "?",
            "session_id": item.id,
            "state": "unknown",
            "verdict": "skip",
            "policy": None,
            "reason": f"record skipped: {item.reason}",
            "guard": None,
            "evaluations": [],
        }
        for item in listing.invalid
    )
    return rows, None


def _held(plan: Plan, decision: Decision, paused: str | None) -> str | None:
    """Why a sweep would not carry out this decision's warning or action now, or None."""
    guard = plan.holds(decision)
    if guard is not None:
        return guard
    enforced = decision.verdict in (Verdict.ACT, Verdict.WARN) and not decision.dry_run
    return paused if enforced else None


def _verdict(decision: Decision) -> str:
    """``would_act`` for a dry-run policy's act, else the engine's verdict."""
    if decision.verdict is Verdict.ACT and decision.dry_run:
        return "would_act"
    return str(decision.verdict)


def _idle(session: Session, now: datetime) -> str | None:
    if session.last_activity is None:
        return None
    return format_duration(now - session.last_activity)


def _evaluation(evaluation: Evaluation) -> dict[str, Any]:
    return {
        "policy": str(evaluation.policy.ref),
        "matched": evaluation.matched,
        "reasons": list(evaluation.reasons),
        "exempt": evaluation.exempt_reason,
    }
