"""Carrying out one decision safely (DESIGN 4, items 2-3).

For each destructive action, in this order:

1. no new action once shutdown began, the target halted, or janitor is paused;
2. renew the lease if due, then commit an ``intent`` row under the lease's fencing token
   (no committed intent, no provider call);
3. check the kill switch once more and re-read the policies' revision and the session's keep,
   in one read transaction (all before the re-check, so no database round trip widens the
   gap between the re-check and the call);
4. re-read the session and decide again on the fresh record with the current policies and
   keep; anything changed (state, provider state, activity, connections, etag, kind, the
   policy or its version, a keep added since the listing) → ``skipped_changed``; otherwise
   call the provider at once (with the etag
   where it has one) -- unless a pause since the intent outlasted a third of the lease's TTL
   and the lease turns out lost (``blocked``; the lease is renewed only then, so normally no
   round trip lies there);
5. commit the ``outcome`` under the same fence: executed, accepted (an asynchronous action,
   settled by later sweeps), already_absent (404), skipped_changed (409/412, "not now"),
   failed (refused), or unknown (timeout, 5xx, cut by shutdown or the sweep timeout).

Native warnings (:mod:`janitor.warnings`) use the same write-ahead call path. Open intents
are closed by :mod:`janitor.reconcile` before the target's next sweep acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from janitor import metrics
from janitor.context import TargetRun, pause_reason, paused_because, unreadable_kill_switch
from janitor.errors import (
    ActionRejected,
    CircuitOpen,
    LeaseLost,
    OutcomeUnknown,
    ProviderError,
    StoreError,
)
from janitor.model import Action, AuditEvent, Decision, Keep, Outcome, Session, Verdict
from janitor.policy.engine import decide
from janitor.policy.spec import Policy
from janitor.providers.base import Receipt
from janitor.runtime import db

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A re-check slower than this (seconds) is followed by another look at the kill switch.
SLOW_RECHECK = 0.5
#: The fields whose change between the listing and the re-check ends an intent.
COMPARED_FIELDS = (
    "id",
    "state",
    "provider_state",
    "last_activity",
    "connections",
    "etag",
    "kind",
    "activity",
)


async def execute(run: TargetRun, decision: Decision) -> None:
    """Carry out one enforced, destructive ACT decision with every guard of the docstring."""
    action = decision.action
    assert action is not None
    assert action.destructive
    if not await may_start(run):
        return
    intent = await write_intent(run, decision, action, f"about to {action}: {decision.reason}")
    if intent is None:
        return
    run.rt.hooks.at("after_intent")
    # The kill switch, the policies and the keep are read (in one transaction, after the
    # intent) before the re-check GET, so no database round trip lies between the fresh read
    # and the call: that gap is the residual race window a provider without preconditions
    # leaves open (T8).
    reads, problem = await _before_call(run, decision)
    if problem is not None:
        await close(run, intent, decision, problem[0], problem[1])
        return
    assert reads is not None
    started = time.monotonic()
    fresh, problem = await _recheck(run, decision, *reads)
    if problem is None and time.monotonic() - started > SLOW_RECHECK:
        # A slow re-check (retries, a sluggish provider) would stretch the kill switch's
        # latency past a second: look again. Its round trip is small next to the GET's.
        pause = await pause_reason(run)
        problem = (Outcome.BLOCKED, pause) if pause else None
    if problem is not None:
        await close(run, intent, decision, problem[0], problem[1])
        return
    assert fresh is not None
    run.rt.hooks.at("before_call")
    lost = await lease_lost(run)
    if lost:
        await close(run, intent, decision, Outcome.BLOCKED, lost)
        return
    receipt = await call(run, intent, decision, lambda: run.provider.act(action, fresh))
    if receipt is None:
        return
    run.rt.hooks.at("after_call")
    outcome, reason = receipt_outcome(run, receipt, decision, action)
    await close(
        run, intent, decision, outcome, reason, status=receipt.status, request_id=receipt.request_id
    )


async def may_start(run: TargetRun) -> bool:
    """False (and the target halted) once shutdown began or janitor is paused."""
    if run.rt.lifecycle.is_stopping:
        run.halt("janitor is shutting down")
    if run.halted is None:
        pause = await pause_reason(run)
        if pause:
            run.halt(pause)
    return run.halted is None


async def write_intent(
    run: TargetRun, decision: Decision, action: Action, reason: str
) -> AuditEvent | None:
    """Commit the intent row under the lease's fence; None (target halted) when it cannot be."""
    assert run.lease is not None, "provider writes need the target's lease"
    event = run.events.intent(decision, reason, action=action)
    try:
        await run.lease.ensure()
        stored = await db(run.rt.store.audit.append, [event], fence=run.lease.fence)
    except LeaseLost as exc:
        run.halt(str(exc))
        return None
    except StoreError as exc:
        run.store_failed = True
        run.halt(f"the intent could not be recorded, so nothing is done: {exc}")
        return None
    return stored[0]


async def lease_lost(run: TargetRun) -> str | None:
    """Why the call may not be made because the lease is not surely ours, or None.

    The intent was fenced, but a pause (GC, SIGSTOP, a suspended VM) between it and the call
    may have outlasted the lease: renew it if a third of its TTL has passed, so a replica
    frozen past its lease before this point does not call with a stale fencing token. A
    pause after this check, before the request leaves, remains a residual window that only
    a provider-side precondition (etag) can close.
    """
    assert run.lease is not None
    try:
        await run.lease.ensure()
    except LeaseLost as exc:
        run.halt(str(exc))
        return f"not done, the lease was lost before the call: {exc}"
    except StoreError as exc:
        run.store_failed = True
        run.halt(f"the lease cannot be renewed, so nothing is done: {exc}")
        return f"not done, the lease cannot be renewed: {exc}"
    return None


async def _before_call(
    run: TargetRun, decision: Decision
) -> tuple[tuple[list[Policy], Keep | None] | None, tuple[Outcome, str] | None]:
    """The policies and the session's keep as they are now, or the outcome that ends this
    intent: blocked when janitor is paused or its kill switch cannot be read, failed when
    changed policies cannot be loaded."""
    now = run.rt.clock.now()
    try:
        reads = await db(run.rt.store.before_call, run.target.name, decision.session.id, now)
    except StoreError as exc:
        return None, (Outcome.BLOCKED, unreadable_kill_switch(exc))
    pause = paused_because(reads.pause)
    if pause:
        return None, (Outcome.BLOCKED, pause)
    try:
        policies = await run.policies.at(reads.revision)
    except StoreError as exc:
        return None, (Outcome.FAILED, f"policies could not be re-read: {exc}")
    return (policies, reads.keep), None


async def _recheck(
    run: TargetRun, decision: Decision, policies: list[Policy], keep: Keep | None
) -> tuple[Session | None, tuple[Outcome, str] | None]:
    """The fresh session, or the outcome that ends this intent."""
    try:
        fresh = await run.provider.get_session(decision.session)
    except ProviderError as exc:
        if isinstance(exc, CircuitOpen):
            await breaker_open(run, exc)
        return None, (Outcome.FAILED, f"the re-check failed, so nothing is done: {exc}")
    if fresh is None:
        return None, (Outcome.ALREADY_ABSENT, "the session was already gone at the re-check")
    changed = describe_change(decision.session, fresh)
    if changed:
        return None, (Outcome.SKIPPED_CHANGED, f"changed since the listing: {changed}")
    again = decide(fresh, policies, run.rt.clock.now(), run.previous.get(fresh.id), keep=keep)
    if (
        again.verdict is not Verdict.ACT
        or again.policy != decision.policy
        or again.action != decision.action
        or again.dry_run
    ):
        return None, (
            Outcome.SKIPPED_CHANGED,
            f"the decision changed at the re-check: {again.verdict}, {again.reason}",
        )
    return fresh, None


def describe_change(before: Session, after: Session) -> str:
    """What changed between the listed and the fresh record ('' if nothing that matters)."""
    changes = []
    for name in COMPARED_FIELDS:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes.append(f"{name} {old} → {new}")
    if after.anomalies:
        changes.append("the fresh record is not trusted: " + "; ".join(after.anomalies))
    return ", ".join(changes)


async def call(
    run: TargetRun,
    intent: AuditEvent,
    decision: Decision,
    request: Callable[[], Awaitable[Receipt]],
) -> Receipt | None:
    """Make the provider call of ``intent``; on an error, close the intent and return None.

    A call cut by the sweep timeout or by shutdown is recorded ``unknown`` before the
    cancellation goes on.
    """
    try:
        return await bounded(run, request())
    except ProviderError as exc:
        if isinstance(exc, CircuitOpen):
            await breaker_open(run, exc)
        outcome, prefix = _error_outcome(exc)
        await close(
            run,
            intent,
            decision,
            outcome,
            f"{prefix}: {exc}",
            status=exc.status,
            request_id=exc.request_id,
            error=str(exc),
        )
        return None
    except asyncio.CancelledError:
        cut = "the call was cut off (sweep timeout or shutdown)"
        await asyncio.shield(close(run, intent, decision, Outcome.UNKNOWN, cut))
        raise


def _error_outcome(exc: ProviderError) -> tuple[Outcome, str]:
    """The outcome of a failed call: unknown if it may have happened, else failed."""
    if isinstance(exc, OutcomeUnknown):
        return Outcome.UNKNOWN, "result not known"
    if isinstance(exc, ActionRejected):
        return Outcome.FAILED, "the provider refused"
    return Outcome.FAILED, "not done"


async def breaker_open(run: TargetRun, exc: CircuitOpen) -> None:
    """An error storm opened the target's circuit breaker: no more actions there this sweep."""
    run.halt(str(exc))
    await run.rt.alerter.raise_(
        f"circuit_open:{run.target.name}",
        "circuit_open",
        f"{exc}; no further actions on target {run.target.name} this sweep",
        target=run.target.name,
    )


def receipt_outcome(
    run: TargetRun, receipt: Receipt, decision: Decision, action: Action
) -> tuple[Outcome, str]:
    """The outcome a provider's receipt means for ``action`` (its spec says if it settles)."""
    if receipt.absent:
        return Outcome.ALREADY_ABSENT, "the provider says the session is already gone"
    if receipt.changed:
        return Outcome.SKIPPED_CHANGED, f"not done: {receipt.detail or 'the session changed'}"
    spec = run.provider.specs.get(action)
    if receipt.accepted or (spec is not None and spec.asynchronous):
        return Outcome.ACCEPTED, f"{action} accepted, settling: {decision.reason}"
    return Outcome.EXECUTED, f"{action} done: {decision.reason}"


async def bounded(run: TargetRun, pending: Awaitable[T]) -> T:
    """Await ``pending``; once shutdown begins, give it at most the shutdown grace."""
    task = asyncio.ensure_future(pending)
    stopping = asyncio.ensure_future(run.rt.lifecycle.stopping.wait())
    try:
        done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        try:
            return await asyncio.wait_for(task, run.rt.lifecycle.grace)
        except TimeoutError:
            raise OutcomeUnknown(
                "cut off by shutdown after the grace period", target=run.target.name
            ) from None
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopping.cancel()


async def close(
    run: TargetRun,
    intent: AuditEvent,
    decision: Decision,
    outcome: Outcome,
    reason: str,
    *,
    status: int | None = None,
    request_id: str | None = None,
    error: str | None = None,
    tally: bool = True,
) -> None:
    """Write the outcome row of ``intent`` under the lease's fence and update the memory.

    A holder that lost its lease writes nothing: its successor reconciles the intent, and a
    stale holder never adds a second outcome to an intent already closed. ``tally=False``
    keeps the outcome out of the sweep's report (a native warning write is not an action).
    """
    event = run.events.outcome(
        intent, outcome, reason, status=status, request_id=request_id, error=error
    )
    action = intent.action
    if tally:
        run.count(outcome, action)
    else:
        metrics.ACTIONS.labels(run.target.name, str(action), str(outcome)).inc()
    spec = run.provider.specs.get(action) if action is not None else None
    gone = outcome is Outcome.ALREADY_ABSENT or (
        outcome is Outcome.EXECUTED and spec is not None and spec.removes_record
    )
    if gone:
        run.memory.pop(decision.session.id, None)
    _log_outcome(run, decision, action, outcome, reason)
    if run.lease is not None:
        # A call longer than the lease's TTL let it expire: renew it (only while nobody took
        # it over, so the token is unchanged) rather than lose the outcome. If the database
        # cannot renew it now, the write below is still tried: its fence check decides.
        with contextlib.suppress(StoreError):
            await run.lease.ensure()
    try:
        await db(run.rt.store.audit.append, [event], fence=run.fence)
    except LeaseLost as exc:
        log.warning(
            "outcome of intent %s not recorded, the lease is lost (the new holder reconciles "
            "it): %s",
            intent.id,
            exc,
        )
        run.halt(str(exc))
    except StoreError as exc:
        log.error(
            "outcome of intent %s could not be recorded (it will be reconciled): %s", intent.id, exc
        )
        run.store_failed = True
        run.halt("the database is failing")


def _log_outcome(
    run: TargetRun, decision: Decision, action: Action | None, outcome: Outcome, reason: str
) -> None:
    bad = outcome in (Outcome.FAILED, Outcome.UNKNOWN)
    session = decision.session
    log.log(
        logging.ERROR if bad else logging.INFO,
        "%s %s %s (%s): %s",
        outcome,
        action,
        session.name,
        session.id,
        reason,
        extra={"session_id": session.id, "session_name": session.name},
    )
    if bad:
        run.rt.alerter.report(
            "action_failed",
            f"{action} {outcome} on target {run.target.name}: {reason}",
            target=run.target.name,
            action=str(action),
            outcome=str(outcome),
        )
