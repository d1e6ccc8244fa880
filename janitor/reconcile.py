"""Open intents: reconciled after a crash or an ``unknown`` outcome, settled when accepted.

Before a target's sweep acts, every intent of the target without a final outcome is looked
at again (DESIGN 4.7 and 6 "Settling"), from the audit rows, never from the listing (an ESS
listing drops finished requests):

* the provider re-reads the record and judges it against the action's spec
  (:func:`janitor.providers.kit.judge`): gone, in the action's end state, ended elsewhere,
  under way, or untouched;
* a final answer closes the intent with an ``outcome`` row (``executed``, ``already_absent``,
  ``failed``); an action that did not settle within its deadline is ``failed`` and raises an
  alert;
* an action under way stays open; when it was not known to be under way (a crash, an
  ``unknown``), an ``accepted`` row records that it is;
* an action whose provider needs its call made again (Glue deletes a session once it has
  stopped) gets it through the same guarded call as a first one: kill switch, lease, outcome;
* a cancel escalated by a force_cancel (DESIGN 6) does not time out while the force_cancel
  is open: both settle from the record (CANCELLED closes both as executed);
* the action is never re-issued blindly, and while an intent is open no new action is taken
  on its record (or, where actions cascade, on its descendants).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from janitor import metrics
from janitor.actions import call, close, lease_lost, may_start, receipt_outcome
from janitor.context import TargetRun
from janitor.errors import LeaseLost, ProviderError
from janitor.model import (
    OPEN_OUTCOMES,
    Action,
    AuditEvent,
    Decision,
    Outcome,
    Session,
    State,
    Verdict,
)
from janitor.plan import Open
from janitor.providers.kit import Settlement
from janitor.runtime import db
from janitor.store.audit import OpenIntent

log = logging.getLogger(__name__)


async def reconcile(run: TargetRun) -> tuple[int, dict[str, Open]]:
    """Look at every open intent of the target again.

    Returns how many intents were closed, and the records whose intents stay open (session
    id → the open action and why), so the plan holds them back.
    """
    items = await db(run.rt.store.audit.open_intents, run.target.name)
    closed, still_open = 0, {}
    superseded = _superseded(items)
    for item in items:
        intent = item.intent
        sid = intent.session_id or ""
        escalated = superseded.get(intent.id or 0)
        try:
            settlement = await _settle(run, item, escalated=escalated is not None)
        except ProviderError as exc:
            log.warning("intent %s cannot be reconciled yet: %s", intent.id, exc)
            still_open[sid] = Open(
                action=intent.action, reason=f"intent {intent.id} is not reconciled yet"
            )
            continue
        if settlement.again and settlement.record is not None:
            outcome = await _call_again(run, intent, settlement.record, settlement.reason)
            if outcome is None or outcome in OPEN_OUTCOMES:
                still_open[sid] = Open(
                    action=intent.action, reason=f"its {intent.action} is not done yet"
                )
            else:
                closed += 1
            continue
        if settlement.outcome is None:
            still_open[sid] = Open(
                action=intent.action,
                reason=(
                    f"its {intent.action} of intent {intent.id} is still settling "
                    f"({settlement.reason})"
                ),
            )
            if item.accepted_at is None and not await _record(
                run, intent, Outcome.ACCEPTED, f"reconciled: {settlement.reason}"
            ):
                break
            continue
        prefix = "settled" if item.accepted_at is not None else "reconciled"
        if escalated is not None:
            prefix += f" (escalated to force_cancel, intent {escalated})"
        if not await _record(run, intent, settlement.outcome, f"{prefix}: {settlement.reason}"):
            break
        closed += 1
        if settlement.timed_out:
            await run.rt.alerter.raise_(
                f"settle_timeout:{run.target.name}:{intent.session_id}",
                "settle_timeout",
                f"{intent.action} of {intent.session_name} ({intent.session_id}) on target "
                f"{run.target.name}: {settlement.reason}",
                target=run.target.name,
            )
    return closed, still_open


def _superseded(items: list[OpenIntent]) -> dict[int, int]:
    """Open cancels that a later, still open force_cancel of the same record escalated:
    cancel intent id → force_cancel intent id."""
    forced = {
        i.intent.session_id: i.intent.id
        for i in items
        if i.intent.action is Action.FORCE_CANCEL and i.intent.id is not None
    }
    return {
        i.intent.id: forced[i.intent.session_id]
        for i in items
        if i.intent.action is Action.CANCEL
        and i.intent.id is not None
        and i.intent.session_id in forced
        and forced[i.intent.session_id] > i.intent.id
    }


async def _call_again(
    run: TargetRun, intent: AuditEvent, record: Session, why: str
) -> Outcome | None:
    """Make the intent's call again, with the guards of a first call; its outcome or None."""
    action = intent.action
    assert action is not None
    decision = Decision(
        session=record, verdict=Verdict.ACT, reason=why, code="settle", action=action
    )
    if not await may_start(run) or await lease_lost(run):
        return None
    receipt = await call(run, intent, decision, lambda: run.provider.act(action, record))
    if receipt is None:
        return None  # the error was recorded as the intent's outcome
    outcome, reason = receipt_outcome(run, receipt, decision, action)
    await close(
        run,
        intent,
        decision,
        outcome,
        f"settled: {reason}",
        status=receipt.status,
        request_id=receipt.request_id,
    )
    return outcome


async def _settle(run: TargetRun, item: OpenIntent, *, escalated: bool = False) -> Settlement:
    """Ask the provider where the intent's action stands. A cancel a force_cancel escalated
    does not time out while the force_cancel is open: both settle from the record's state."""
    intent = item.intent
    stub = Session(
        target=run.target.name,
        provider=run.provider.name,
        id=intent.session_id or "",
        name=intent.session_name or "",
        kind=intent.session_kind or "",
        state=State.UNKNOWN,
        provider_state="",
    )
    waited = run.rt.clock.now() - (item.accepted_at or intent.at)
    if escalated:
        waited = timedelta(0)
    action = intent.action
    if action in (Action.WARN, Action.WITHDRAW):
        return await _settle_warning(run, action, stub)
    if action is None or action not in run.provider.specs:
        return Settlement(outcome=Outcome.FAILED, reason=f"{run.provider.name} has no {action}")
    return await run.provider.settle(
        action, stub, accepted=item.accepted_at is not None, waited=waited
    )


async def _settle_warning(run: TargetRun, action: Action, stub: Session) -> Settlement:
    """A native warning write interrupted: is the warning visible (warn) or gone (withdraw)?"""
    fresh = await run.provider.get_session(stub)
    if fresh is None:
        return Settlement(outcome=Outcome.ALREADY_ABSENT, reason="the session is gone")
    shown = fresh.warning is not None
    if shown == (action is Action.WARN):
        return Settlement(outcome=Outcome.EXECUTED, reason=f"the {action} is in place")
    return Settlement(outcome=Outcome.FAILED, reason=f"the {action} did not take effect")


async def _record(run: TargetRun, intent: AuditEvent, outcome: Outcome, reason: str) -> bool:
    """Write an outcome of an earlier intent under our lease; False when the lease is lost."""
    event = run.events.outcome(intent, outcome, reason)
    try:
        await db(run.rt.store.audit.append, [event], fence=run.fence)
    except LeaseLost as exc:
        run.halt(str(exc))
        return False
    # Counted in the metrics but not in this sweep's outcomes: closing an earlier intent is
    # bookkeeping, not a failure of this sweep.
    metrics.ACTIONS.labels(run.target.name, str(intent.action or "-"), str(outcome)).inc()
    log.info(
        "intent %s on %s (%s): %s (%s)",
        intent.id,
        intent.session_name,
        intent.session_id,
        outcome,
        reason,
        extra={"session_id": intent.session_id, "session_name": intent.session_name},
    )
    return True
