"""``janitor explain``: what every policy would do now, and why. Reads only; writes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from janitor.durations import format_duration
from janitor.errors import ProviderError
from janitor.model import Session
from janitor.policy.engine import Evaluation, explain
from janitor.runtime import Runtime, db
from janitor.settings import TargetConfig


async def explain_targets(
    rt: Runtime, *, only: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per listed session of every target (or ``only``), plus listing failures."""
    targets = [rt.config.target(only)] if only else list(rt.config.targets)
    policies = await db(rt.store.policies.load)
    results = await asyncio.gather(*(_explain_target(rt, t, policies) for t in targets))
    rows = [row for target_rows, _ in results for row in target_rows]
    failures = [failure for _, failure in results if failure]
    return rows, failures


async def _explain_target(
    rt: Runtime, target: TargetConfig, policies: list[Any]
) -> tuple[list[dict[str, Any]], str | None]:
    try:
        listing = await rt.providers[target.name].list_sessions()
    except ProviderError as exc:
        return [], f"target {target.name}: listing failed: {exc}"
    memory = await db(rt.store.observations.load, target.name)
    now = rt.clock.now()
    rows = []
    for session in listing.sessions:
        decision, evaluations = explain(session, policies, now, memory.get(session.id))
        rows.append(
            {
                "target": target.name,
                "session": session.name,
                "session_id": session.id,
                "kind": session.kind,
                "state": str(session.state),
                "provider_state": session.provider_state,
                "idle": _idle(session, now),
                "verdict": str(decision.verdict),
                "action": str(decision.action or ""),
                "policy": str(decision.policy) if decision.policy else None,
                "dry_run": decision.dry_run,
                "reason": decision.reason,
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
            "evaluations": [],
        }
        for item in listing.invalid
    )
    return rows, None


def _idle(session: Session, now: Any) -> str | None:
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
