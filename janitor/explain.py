"""``janitor explain``: what every policy would do now, and why. Reads only; writes nothing.

It runs the sweep's own pipeline (list, decide, the guards of :mod:`janitor.plan`, the kill
switch) without acting, so it never says "act" where a sweep would hold back: a session
whose policy is over its blast radius, whose target's clock is off, or whose parent's
cascade would reach a protected child shows as held, with the guard's reason.

``explain SESSION`` (:func:`explain_session`) answers "why?" and "why not?" for one session:
every policy in evaluation order with each condition's observed value, threshold and result,
its exemptions, the keep, janitor's memory (streak, mark, grace), each guard's state, and the
session's last audit rows. A session no longer listed (deleted, say) is explained from its
audit rows.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from janitor.context import Mode, TargetRun, pause_reason
from janitor.durations import format_duration
from janitor.errors import ProviderError
from janitor.lookup import Listed, matching, not_found, one
from janitor.model import AuditEvent, Decision, History, Keep, Session, Verdict
from janitor.plan import CASCADE_BLOCKED, COVERED, SETTLING, SHARED_PARENT, Plan
from janitor.policy.conditions import Match
from janitor.policy.engine import Evaluation, explain, ordered
from janitor.policy.spec import Policy
from janitor.runtime import Runtime, db
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


# --- one session: explain SESSION ---------------------------------------------------------

#: How many of the session's audit rows ``explain SESSION`` shows.
AUDIT_ROWS = 10


async def explain_session(rt: Runtime, query: str, *, only: str | None = None) -> dict[str, Any]:
    """Everything janitor knows about one session (by id, or else name), as JSON-ready data.

    Raises:
        NotFound: no target lists it and the audit trail never mentioned it.
        ConfigError: several sessions have that name.
    """
    targets = [rt.config.target(only)] if only else list(rt.config.targets)
    runs = {t.name: await prepare(rt, t, "explain", None, EXPLAIN) for t in targets}

    async def listed(name: str) -> Listed:
        try:
            return Listed(target=name, listing=await runs[name].provider.list_sessions())
        except ProviderError as exc:
            return Listed(target=name, listing=None, error=str(exc))

    listings = list(await asyncio.gather(*(listed(t.name) for t in targets)))
    found = matching(listings, query)
    if not found:
        return await _gone(rt, query, only, listings)
    session = one(found, query, listings)
    run = runs[session.target]
    listing = next(item.listing for item in listings if item.target == session.target)
    assert listing is not None
    plan = await plan_target(run, listing, await open_in_store(rt, session.target))
    return await _present(run, plan, session)


async def _gone(
    rt: Runtime, query: str, only: str | None, listings: list[Listed]
) -> dict[str, Any]:
    """A session no target lists now: what the audit trail says about it."""
    rows = await db(rt.store.audit.events, session=query, target=only, last=AUDIT_ROWS)
    if not rows:
        raise not_found(query, listings)
    last = rows[-1]
    failed = {item.target: item.error for item in listings if item.error}
    return {
        "listed": False,
        "target": last.target,
        "session_id": last.session_id,
        "session": last.session_name or last.session_id,
        "note": (
            f"not listed on {last.target} now"
            + (f" (the listing failed: {failed[last.target]})" if last.target in failed else "")
            + "; its last audit rows say what happened"
        ),
        "audit": [_audit(e) for e in rows],
    }


async def _present(run: TargetRun, plan: Plan, session: Session) -> dict[str, Any]:
    """A listed session: its record, decision, policies, keep, memory, guards and audit."""
    rt, now = run.rt, run.rt.clock.now()
    decision = next(d for d in plan.decisions if d.session.id == session.id)
    history = run.previous.get(session.id)
    keep = run.keeps.get(session.id)
    policies = run.policies.policies
    _, evaluations = explain(session, policies, now, history, keep=keep)
    paused = await pause_reason(run)
    held = _held(plan, decision, paused)
    rows = await db(
        rt.store.audit.events, target=session.target, session_id=session.id, last=AUDIT_ROWS
    )
    return {
        "listed": True,
        "target": session.target,
        "session_id": session.id,
        "session": session.name,
        "record": _record(session, now),
        "verdict": "held" if held else _verdict(decision),
        "action": str(decision.action) if decision.action else None,
        "policy": str(decision.policy) if decision.policy else None,
        "dry_run": decision.dry_run,
        "reason": f"held: {held} ({decision.reason})" if held else decision.reason,
        "kept": _keep(keep, now),
        "policies": _policies(policies, evaluations, session, decision),
        "memory": _memory(history, policies, now),
        "guards": _guards(plan, decision, paused),
        "audit": [_audit(e) for e in rows],
    }


def _record(session: Session, now: datetime) -> dict[str, Any]:
    return {
        "kind": session.kind,
        "state": str(session.state),
        "provider_state": session.provider_state,
        "idle": _idle(session, now),
        "last_activity": session.last_activity,
        "created_at": session.created_at,
        "connections": session.connections,
        "owner": session.owner,
        "labels": dict(session.labels) if session.labels is not None else None,
        "parent_id": session.parent_id,
        "anomalies": list(session.anomalies),
    }


def _keep(keep: Keep | None, now: datetime) -> dict[str, Any] | None:
    if keep is None:
        return None
    return {
        "until": keep.until,
        "left": format_duration(keep.until - now),
        "actor": keep.actor,
        "reason": keep.reason,
    }


def _check(block: str, key: str, match: Match) -> dict[str, Any]:
    result = {True: "pass", False: "fail", None: "unknown"}[match.value]
    return {
        "block": block,
        "key": key,
        "observed": match.observed,
        "threshold": match.threshold,
        "result": result,
        "reason": match.reason,
    }


def _policies(
    policies: list[Policy], evaluations: list[Evaluation], session: Session, decision: Decision
) -> list[dict[str, Any]]:
    """Every policy in evaluation order: the applicable ones with their checks, then the
    ones scoped to other targets, then the disabled ones."""
    by_name = {e.policy.name: e for e in evaluations}
    deciding = decision.policy.name if decision.policy else None
    rows: list[dict[str, Any]] = []
    decided = False
    for policy in ordered(policies):
        row: dict[str, Any] = {
            "policy": str(policy.ref),
            "mode": "dry-run" if policy.dry_run else "enforce",
            "action": str(policy.action),
        }
        evaluation = by_name.get(policy.name)
        if evaluation is None:
            rows.append(
                row | {"result": "other targets", "note": f"targets {list(policy.targets)}"}
            )
            continue
        checks = [_check("match", key, match) for key, match in evaluation.conditions]
        checks += [_check("exempt", key, match) for key, match in evaluation.exemptions]
        if evaluation.exempt_reason is not None:
            result = "exempt"
        elif evaluation.matched:
            result = "matched"
        else:
            result = "no match"
        note = evaluation.gate
        if decided:
            note = "not consulted: an earlier policy decided"
        elif policy.name == deciding:
            note, decided = "decides", True
        rows.append(row | {"result": result, "note": note, "checks": checks})
    rows += [
        {
            "policy": str(p.ref),
            "mode": "dry-run" if p.dry_run else "enforce",
            "action": str(p.action),
            "result": "disabled",
            "note": "not evaluated",
        }
        for p in sorted(policies, key=lambda p: (p.priority, p.name))
        if not p.enabled
    ]
    if decision.code in ("kept", "malformed", "unknown_state"):
        for row in rows:
            if row["result"] not in ("other targets", "disabled"):
                row["note"] = f"not consulted: {decision.code.replace('_', ' ')}"
    return rows


def _memory(
    history: History | None, policies: list[Policy], now: datetime
) -> dict[str, Any] | None:
    """janitor's memory of the session: first sighting, state, streak, mark and grace."""
    if history is None:
        return None
    by_name = {p.name: p for p in policies}
    memory: dict[str, Any] = {
        "first_seen": history.first_seen,
        "state": str(history.state),
        "state_since": history.state_since,
        "streak": None,
        "mark": None,
    }
    if history.streak_policy:
        needed = (
            by_name[history.streak_policy].min_observations
            if (history.streak_policy in by_name)
            else None
        )
        memory["streak"] = {
            "policy": history.streak_policy,
            "sweeps": history.streak,
            "needed": needed,
        }
    mark = history.mark
    if mark is not None:
        policy = by_name.get(mark.policy)
        grace = policy.grace if policy is not None else None
        due = mark.warned_at + grace if mark.warned_at is not None and grace else None
        memory["mark"] = {
            "policy": mark.policy,
            "action": str(mark.action) if mark.action else None,
            "marked_at": mark.marked_at,
            "warned_at": mark.warned_at,
            "grace": format_duration(grace) if grace else None,
            "act_after": due,
            "grace_left": format_duration(due - now) if due and due > now else None,
        }
    return memory


def _guards(plan: Plan, decision: Decision, paused: str | None) -> list[dict[str, Any]]:
    """Each guard of the sweep's pipeline and whether it holds this session back now.

    ``holds``: it stops this session's warning or action now; ``would hold``: it blocks the
    session's policy (or target), but the session has no action to take; ``clear``.
    """
    acting = decision.verdict in (Verdict.ACT, Verdict.WARN)
    policy = decision.policy.name if decision.policy else None

    def state(reason: str | None, *, applies: bool = True) -> dict[str, Any]:
        if not reason:
            return {"state": "clear", "reason": None}
        return {"state": "holds" if applies else "would hold", "reason": reason}

    own = decision.reason if decision.code == SETTLING else None
    parents = (
        decision.reason if decision.code in (CASCADE_BLOCKED, COVERED, SHARED_PARENT) else None
    )
    blast = plan.blast.blocks(decision) or (plan.blast.policies.get(policy) if policy else None)
    enforced = acting and not decision.dry_run
    return [
        {"guard": "open intent"} | state(own),
        {"guard": "parents and cascades"} | state(parents),
        {"guard": "blast radius"} | state(blast, applies=acting),
        {"guard": "clock skew and population"} | state(plan.block, applies=acting),
        {"guard": "kill switch"} | state(paused, applies=enforced),
    ]


def _audit(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.astimezone(UTC),
        "kind": str(event.kind),
        "policy": (
            f"{event.policy} v{event.policy_version}"
            if event.policy and event.policy_version
            else event.policy
        ),
        "action": str(event.action) if event.action else None,
        "outcome": str(event.outcome) if event.outcome else None,
        "reason": event.reason,
        "actor": event.actor,
    }
