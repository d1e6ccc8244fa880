"""Warnings before acting (grace), the ``notify`` action, and withdrawing native warnings.

A warning goes through every configured channel: the provider's own (``native_warning``:
AIDP renames the session), then the log and the generic webhook. It counts as delivered
only when every channel took it; until then no grace period starts and no action follows.

The native channel is a provider write like an action (DESIGN 6 "Native warnings"): fenced
by the lease, written ahead as intent and outcome, stopped by the kill switch, and
idempotent: a record that already shows janitor's warning is not written again (a retried
warning never stacks prefixes). The value it replaced is kept in janitor's memory, and
``withdraw`` restores it exactly when the user returns, the policy stops matching or the
mark is cleared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from janitor import memory
from janitor.actions import call, close, may_start, write_intent
from janitor.context import TargetRun, pause_reason
from janitor.model import Action, AuditKind, Decision, Outcome, Verdict
from janitor.runtime import db

log = logging.getLogger(__name__)


async def warn_all(run: TargetRun, decisions: Sequence[Decision]) -> int:
    """Deliver the grace warnings of this sweep; return how many were delivered."""
    delivered = 0
    for decision in decisions:
        if decision.verdict is Verdict.WARN and decision.policy is not None:
            delivered += await _grace_warning(run, decision)
    return delivered


async def _grace_warning(run: TargetRun, decision: Decision) -> bool:
    assert decision.policy is not None
    policy = run.policies.get(decision.policy.name)
    now = run.rt.clock.now()
    act_after = now + policy.grace if policy and policy.grace else None
    problem = await _deliver(run, decision, action=str(decision.action), act_after=act_after)
    sid = decision.session.id
    if problem is None and sid in run.memory:
        run.memory[sid] = memory.warned(run.memory[sid], now)
    text = problem or f"warned: {decision.reason}"
    row = run.events.about(
        AuditKind.WARN,
        text,
        decision,
        outcome=Outcome.FAILED if problem else None,
        error=problem,
    )
    await db(run.rt.store.audit.append, [row])
    return problem is None


async def notify(run: TargetRun, decision: Decision) -> None:
    """The ``notify`` action: warn once per mark, through every channel."""
    assert decision.policy is not None
    if not await may_start(run):
        return
    problem = await _deliver(run, decision, action="notify about", act_after=None)
    outcome = Outcome.FAILED if problem else Outcome.EXECUTED
    run.count(outcome, Action.NOTIFY)
    session = decision.session
    history = run.memory.get(session.id)
    if problem is None and history is not None:
        run.memory[session.id] = memory.notified(history, decision.policy.name, run.rt.clock.now())
    row = run.events.about(
        AuditKind.OUTCOME,
        problem or f"notified: {decision.reason}",
        decision,
        outcome=outcome,
        error=problem,
    )
    await db(run.rt.store.audit.append, [row])


async def _deliver(
    run: TargetRun, decision: Decision, *, action: str, act_after: datetime | None
) -> str | None:
    """Warn through the native channel, then the webhook; None when both took it."""
    assert decision.policy is not None
    session = decision.session
    message = run.rt.warner.message(
        session, action=action, reason=decision.reason, act_after=act_after
    )
    problems = []
    if run.provider.native_warning:
        native = await _native_warn(run, decision, message, act_after)
        if native:
            problems.append(f"provider warning failed: {native}")
    hook = await run.rt.warner.warn(
        session, policy=decision.policy.name, action=action, message=message, act_after=act_after
    )
    if hook:
        problems.append(hook)
    return "; ".join(problems) or None


async def _native_warn(
    run: TargetRun, decision: Decision, message: str, act_after: datetime | None
) -> str | None:
    """Show the warning on the record (once); None when it is shown, else why not."""
    session = decision.session
    if session.warning is not None:
        _remember_original(run, session.id, session.name)
        return None  # shown since an earlier sweep: never written (or stacked) again
    if not await may_start(run):
        return run.halted or "no action may start"
    intent = await write_intent(
        run, decision, Action.WARN, f"about to warn on the record itself: {message}"
    )
    if intent is None:
        return run.halted or "the intent could not be recorded"
    pause = await pause_reason(run)
    if pause:
        await close(run, intent, decision, Outcome.BLOCKED, pause, tally=False)
        return pause
    receipt = await call(
        run, intent, decision, lambda: run.provider.warn(session, message, act_after=act_after)
    )
    if receipt is None:
        return "the provider call failed"
    if receipt.changed or receipt.absent:
        outcome = Outcome.SKIPPED_CHANGED if receipt.changed else Outcome.ALREADY_ABSENT
        reason = f"warning not shown: the record changed or is gone ({receipt.detail})"
        await close(run, intent, decision, outcome, reason, status=receipt.status, tally=False)
        return reason
    await close(
        run,
        intent,
        decision,
        Outcome.EXECUTED,
        f"warning shown on the record: {message}",
        status=receipt.status,
        request_id=receipt.request_id,
        tally=False,
    )
    _remember_original(run, session.id, receipt.original or session.name)
    return None


def _remember_original(run: TargetRun, session_id: str, original: str) -> None:
    history = run.memory.get(session_id)
    if history is not None and history.original is None:
        run.memory[session_id] = memory.with_original(history, original)


async def withdraw_all(run: TargetRun, decisions: Sequence[Decision]) -> int:
    """Withdraw native warnings whose mark was cleared; return how many were withdrawn."""
    if not run.provider.native_warning:
        return 0
    withdrawn = 0
    for decision in decisions:
        session = decision.session
        current = run.memory.get(session.id)
        if current is not None and current.mark is not None:
            continue  # still marked: the warning stands
        if session.warning is None:
            _forget_original(run, session.id)  # the user renamed it: nothing of ours to undo
            continue
        previous = run.previous.get(session.id)
        original = (previous.original if previous else None) or session.name
        withdrawn += await _withdraw(run, decision, original)
    return withdrawn


async def _withdraw(run: TargetRun, decision: Decision, original: str) -> bool:
    session = decision.session
    if not await may_start(run):
        return False
    intent = await write_intent(
        run, decision, Action.WITHDRAW, f"about to withdraw the warning, restoring {original!r}"
    )
    if intent is None:
        return False
    pause = await pause_reason(run)
    if pause:
        await close(run, intent, decision, Outcome.BLOCKED, pause, tally=False)
        return False
    receipt = await call(run, intent, decision, lambda: run.provider.withdraw(session, original))
    if receipt is None:
        return False
    if receipt.changed or receipt.absent:
        outcome = Outcome.SKIPPED_CHANGED if receipt.changed else Outcome.ALREADY_ABSENT
        reason = f"nothing withdrawn: the record changed or is gone ({receipt.detail})"
        await close(run, intent, decision, outcome, reason, status=receipt.status, tally=False)
        _forget_original(run, session.id)
        return False
    await close(
        run,
        intent,
        decision,
        Outcome.EXECUTED,
        f"warning withdrawn, {original!r} restored: {decision.reason}",
        status=receipt.status,
        request_id=receipt.request_id,
        tally=False,
    )
    _forget_original(run, session.id)
    return True


def _forget_original(run: TargetRun, session_id: str) -> None:
    history = run.memory.get(session_id)
    if history is not None and history.original is not None:
        run.memory[session_id] = memory.with_original(history, None)
