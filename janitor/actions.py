"""Carrying out one decision safely, and reconciling interrupted ones (DESIGN 4, items 2-3, 7).

For each destructive action, in this order:

1. no new action once shutdown began, the target halted, or janitor is paused;
2. renew the lease if due, then commit an ``intent`` row under the lease's fencing token
   (no committed intent, no provider call);
3. check the kill switch once more and re-read the policies (both before the re-check, so no
   database round trip widens the gap between the re-check and the call);
4. re-read the session and decide again on the fresh record with the current policies;
   anything changed (state, activity, connections, etag, policy version) → ``skipped_changed``;
   otherwise call the provider at once (with the etag where it has one) -- unless a pause
   since the intent outlasted a third of the lease's TTL and the lease turns out lost
   (``blocked``; the lease is renewed only then, so normally no round trip lies there);
5. commit the ``outcome``: executed, already_absent (404), skipped_changed (409/412),
   failed (refused), or unknown (timeout, 5xx, cut by shutdown).

An intent without a final outcome (the process died, or the outcome was ``unknown``) is
reconciled before the next sweep of its target acts: the session is re-read and the intent
closed as ``already_absent`` or ``failed``; the action is never re-issued blindly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from janitor import memory, metrics
from janitor.errors import (
    ActionRejected,
    CircuitOpen,
    LeaseLost,
    OutcomeUnknown,
    ProviderError,
    StoreError,
)
from janitor.model import (
    Action,
    AuditEvent,
    AuditKind,
    Decision,
    History,
    Outcome,
    Session,
    State,
    Verdict,
)
from janitor.policy.engine import decide
from janitor.policy.spec import Policy
from janitor.providers.base import Provider, Receipt
from janitor.runtime import Runtime, db
from janitor.settings import TargetConfig
from janitor.store.audit import Fence
from janitor.store.state import LeaseInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

#: A re-check slower than this (seconds) is followed by another look at the kill switch.
SLOW_RECHECK = 0.5


class LeaseKeeper:
    """Holds a target's lease: renews it when a third of its TTL has passed."""

    def __init__(self, rt: Runtime, name: str, info: LeaseInfo, ttl: timedelta) -> None:
        self.rt = rt
        self.name = name
        self.info = info
        self.ttl = ttl
        self._renewed = time.monotonic()

    @property
    def fence(self) -> Fence:
        """The fence intents are written under."""
        return Fence(lease=self.name, holder=self.info.holder, token=self.info.token)

    async def ensure(self) -> None:
        """Renew if due; raise LeaseLost when someone else took the lease over."""
        if time.monotonic() - self._renewed < self.ttl.total_seconds() / 3:
            return
        info = await db(
            self.rt.store.leases.renew, self.name, self.info.holder, self.info.token, self.ttl
        )
        if info is None:
            raise LeaseLost(f"lease {self.name} was taken over while we held it")
        self.info, self._renewed = info, time.monotonic()

    async def release(self) -> None:
        """Give the lease up for the next sweep, whoever runs it."""
        await db(self.rt.store.leases.release, self.name, self.info.holder)


class PolicyCache:
    """The stored policies, re-read only when their revision changes."""

    def __init__(self, rt: Runtime, policies: list[Policy], revision: int) -> None:
        self.rt = rt
        self.policies = policies
        self.revision = revision

    async def current(self) -> list[Policy]:
        """The policies as they are now."""
        revision = await db(self.rt.store.policies.revision)
        if revision != self.revision:
            self.policies = await db(self.rt.store.policies.load)
            self.revision = revision
        return self.policies


@dataclass
class TargetRun:
    """One target's part of a sweep: what the action steps share."""

    rt: Runtime
    target: TargetConfig
    provider: Provider
    sweep_id: str
    dry_run: bool
    lease: LeaseKeeper | None
    policies: PolicyCache
    previous: dict[str, History]
    memory: dict[str, History]
    outcomes: dict[str, int] = field(default_factory=dict)
    halted: str | None = None
    store_failed: bool = False

    def event(
        self,
        kind: AuditKind,
        reason: str,
        *,
        session: Session | None = None,
        decision: Decision | None = None,
        **extra: Any,
    ) -> AuditEvent:
        """An audit event of this run, filled from the session and decision."""
        session = session or (decision.session if decision else None)
        values: dict[str, Any] = {
            "at": self.rt.clock.now(),
            "kind": kind,
            "reason": reason,
            "actor": self.rt.actor,
            "sweep_id": self.sweep_id,
            "target": self.target.name,
            "fencing_token": self.lease.info.token if self.lease else None,
        }
        if session is not None:
            values.update(
                session_id=session.id, session_name=session.name[:255], session_kind=session.kind
            )
        if decision is not None and decision.policy is not None:
            values.update(
                policy=decision.policy.name,
                policy_version=decision.policy.version,
                action=decision.action,
                dry_run=decision.dry_run or self.dry_run,
            )
        values.update(extra)
        return AuditEvent(**values)

    def count(self, outcome: Outcome, action: Action | None) -> None:
        """Count an outcome for the report and the metrics."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        metrics.ACTIONS.labels(self.target.name, str(action or "-"), str(outcome)).inc()

    def halt(self, reason: str) -> None:
        """Stop starting actions on this target for the rest of the sweep."""
        if self.halted is None:
            self.halted = reason
            log.warning("no further actions on target %s this sweep: %s", self.target.name, reason)


def crash_point(rt: Runtime, name: str) -> None:
    """Test hook: exit at once (like kill -9) when ``JANITOR_TEST_CRASH_AT`` names this point.

    ``stop:NAME`` instead stops the whole process (SIGSTOP, once) until it gets SIGCONT: a
    replica frozen at that point, as by a long GC pause or a suspended VM.
    """
    if rt.crash_at == name:
        log.critical("test crash point %s reached: exiting now", name)
        os._exit(137)
    if rt.crash_at == f"stop:{name}":
        rt.crash_at = None
        log.critical("test stop point %s reached: stopping until SIGCONT", name)
        os.kill(os.getpid(), signal.SIGSTOP)


async def execute(run: TargetRun, decision: Decision) -> None:
    """Carry out one enforced ACT decision with every guard of the module docstring."""
    if not await _may_start(run):
        return
    if decision.action is Action.NOTIFY:
        await _notify(run, decision)
        return
    intent = await _write_intent(run, decision)
    if intent is None:
        return
    crash_point(run.rt, "after_intent")
    # The kill switch (and, in _recheck, the policies) are read before the re-check GET, so
    # no database round trip lies between the fresh read and the call: that gap is the
    # residual race window a provider without preconditions leaves open (T8).
    pause = await pause_reason(run)
    if pause:
        await _close(run, intent, decision, Outcome.BLOCKED, pause)
        return
    started = time.monotonic()
    fresh, problem = await _recheck(run, decision)
    if problem is None and time.monotonic() - started > SLOW_RECHECK:
        # A slow re-check (retries, a sluggish provider) would stretch the kill switch's
        # latency past a second: look again. Its round trip is small next to the GET's.
        pause = await pause_reason(run)
        problem = (Outcome.BLOCKED, pause) if pause else None
    if problem is not None:
        await _close(run, intent, decision, problem[0], problem[1])
        return
    assert fresh is not None
    crash_point(run.rt, "before_call")
    lost = await _lease_lost(run)
    if lost:
        await _close(run, intent, decision, Outcome.BLOCKED, lost)
        return
    await _call(run, intent, decision, fresh)


async def _lease_lost(run: TargetRun) -> str | None:
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


async def _may_start(run: TargetRun) -> bool:
    if run.rt.lifecycle.is_stopping:
        run.halt("janitor is shutting down")
    if run.halted is None:
        pause = await pause_reason(run)
        if pause:
            run.halt(pause)
    return run.halted is None


async def pause_reason(run: TargetRun) -> str | None:
    """Why no action may start now (the kill switch is on or unreadable), or None."""
    try:
        state = await db(run.rt.store.pause.get)
    except StoreError as exc:
        return f"the kill switch cannot be read ({exc}); acting is unsafe"
    metrics.PAUSED.set(1 if state.paused else 0)
    if state.paused:
        return f"janitor is paused by {state.actor}" + (f": {state.reason}" if state.reason else "")
    return None


async def _write_intent(run: TargetRun, decision: Decision) -> AuditEvent | None:
    assert run.lease is not None, "destructive actions need the target's lease"
    event = run.event(
        AuditKind.INTENT, f"about to {decision.action}: {decision.reason}", decision=decision
    )
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


async def _recheck(
    run: TargetRun, decision: Decision
) -> tuple[Session | None, tuple[Outcome, str] | None]:
    """The fresh session, or the outcome that ends this intent."""
    try:
        policies = await run.policies.current()
    except StoreError as exc:
        return None, (Outcome.FAILED, f"policies could not be re-read: {exc}")
    try:
        fresh = await run.provider.get_session(decision.session)
    except ProviderError as exc:
        if isinstance(exc, CircuitOpen):
            await _breaker_open(run, exc)
        return None, (Outcome.FAILED, f"the re-check failed, so nothing is done: {exc}")
    if fresh is None:
        return None, (Outcome.ALREADY_ABSENT, "the session was already gone at the re-check")
    changed = describe_change(decision.session, fresh)
    if changed:
        return None, (Outcome.SKIPPED_CHANGED, f"changed since the listing: {changed}")
    again = decide(fresh, policies, run.rt.clock.now(), run.previous.get(fresh.id))
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
    for name in ("id", "state", "provider_state", "last_activity", "connections", "etag", "kind"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            changes.append(f"{name} {old} → {new}")
    if after.anomalies:
        changes.append("the fresh record is not trusted: " + "; ".join(after.anomalies))
    return ", ".join(changes)


async def _call(run: TargetRun, intent: AuditEvent, decision: Decision, fresh: Session) -> None:
    assert decision.action is not None
    try:
        receipt = await _bounded(run, run.provider.act(decision.action, fresh))
    except ProviderError as exc:
        if isinstance(exc, CircuitOpen):
            await _breaker_open(run, exc)
        outcome, prefix = _error_outcome(exc)
        await _close(
            run, intent, decision, outcome, f"{prefix}: {exc}", status=exc.status, error=str(exc)
        )
        return
    except asyncio.CancelledError:
        cut = "the call was cut off (sweep timeout or shutdown)"
        await asyncio.shield(_close(run, intent, decision, Outcome.UNKNOWN, cut))
        raise
    crash_point(run.rt, "after_call")
    outcome, reason = _receipt_outcome(receipt, decision)
    await _close(
        run, intent, decision, outcome, reason, status=receipt.status, request_id=receipt.request_id
    )


def _error_outcome(exc: ProviderError) -> tuple[Outcome, str]:
    """The outcome of a failed call: unknown if it may have happened, else failed."""
    if isinstance(exc, OutcomeUnknown):
        return Outcome.UNKNOWN, "result not known"
    if isinstance(exc, ActionRejected):
        return Outcome.FAILED, "the provider refused"
    return Outcome.FAILED, "not done"


async def _breaker_open(run: TargetRun, exc: CircuitOpen) -> None:
    """An error storm opened the target's circuit breaker: no more actions there this sweep."""
    run.halt(str(exc))
    await run.rt.alerter.raise_(
        f"circuit_open:{run.target.name}",
        "circuit_open",
        f"{exc}; no further actions on target {run.target.name} this sweep",
        target=run.target.name,
    )


def _receipt_outcome(receipt: Receipt, decision: Decision) -> tuple[Outcome, str]:
    if receipt.absent:
        return Outcome.ALREADY_ABSENT, "the provider says the session is already gone"
    if receipt.changed:
        return Outcome.SKIPPED_CHANGED, f"the provider's precondition failed: {receipt.detail}"
    return Outcome.EXECUTED, f"{decision.action} done: {decision.reason}"


async def _bounded(run: TargetRun, call: Awaitable[T]) -> T:
    """Await ``call``; once shutdown begins, give it at most the shutdown grace."""
    task = asyncio.ensure_future(call)
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


async def _close(
    run: TargetRun,
    intent: AuditEvent,
    decision: Decision,
    outcome: Outcome,
    reason: str,
    *,
    status: int | None = None,
    request_id: str | None = None,
    error: str | None = None,
) -> None:
    """Write the outcome row of ``intent`` and update the memory."""
    event = run.event(
        AuditKind.OUTCOME,
        reason,
        decision=decision,
        outcome=outcome,
        intent_id=intent.id,
        http_status=status,
        provider_request_id=request_id,
        error=error,
    )
    run.count(outcome, decision.action)
    if outcome in (Outcome.EXECUTED, Outcome.ALREADY_ABSENT):
        run.memory.pop(decision.session.id, None)
    log_level = logging.ERROR if outcome in (Outcome.FAILED, Outcome.UNKNOWN) else logging.INFO
    log.log(log_level, "%s %s %s: %s", outcome, decision.action, decision.session.id, reason)
    if log_level == logging.ERROR:
        run.rt.alerter.report(
            "action_failed",
            f"{decision.action} {outcome} on target {run.target.name}: {reason}",
            target=run.target.name,
            action=str(decision.action),
            outcome=str(outcome),
        )
    try:
        await db(run.rt.store.audit.append, [event])
    except StoreError as exc:
        log.error(
            "outcome of intent %s could not be recorded (it will be reconciled): %s", intent.id, exc
        )
        run.store_failed = True
        run.halt("the database is failing")


async def _notify(run: TargetRun, decision: Decision) -> None:
    """The non-destructive ``notify`` action: warn once per mark."""
    assert decision.policy is not None
    session = decision.session
    problem = await run.rt.warner.warn(
        run.provider,
        session,
        policy=decision.policy.name,
        action="notify about",
        reason=decision.reason,
        act_after=None,
    )
    outcome = Outcome.FAILED if problem else Outcome.EXECUTED
    run.count(outcome, Action.NOTIFY)
    history = run.memory.get(session.id)
    if problem is None and history is not None:
        run.memory[session.id] = memory.notified(history, decision.policy.name, run.rt.clock.now())
    await db(
        run.rt.store.audit.append,
        [
            run.event(
                AuditKind.OUTCOME,
                problem or f"notified: {decision.reason}",
                decision=decision,
                outcome=outcome,
                error=problem,
            )
        ],
    )


async def reconcile(run: TargetRun) -> int:
    """Close every intent of the target that has no final outcome; return how many."""
    pending = await db(run.rt.store.audit.pending_intents, run.target.name)
    for intent in pending:
        session = Session(
            target=run.target.name,
            provider=run.provider.name,
            id=intent.session_id or "",
            name=intent.session_name or "",
            kind=intent.session_kind or "",
            state=State.UNKNOWN,
            provider_state="",
        )
        try:
            fresh = await run.provider.get_session(session)
        except ProviderError as exc:
            log.warning("intent %s cannot be reconciled yet: %s", intent.id, exc)
            continue
        if fresh is None:
            outcome = Outcome.ALREADY_ABSENT
            reason = (
                "reconciled: the session is gone; the interrupted "
                f"{intent.action} most likely completed"
            )
        else:
            outcome = Outcome.FAILED
            reason = (
                "reconciled: the session is still there, so the interrupted "
                f"{intent.action} did not take effect; it will be decided anew"
            )
        event = replace(
            intent,
            id=None,
            prev_hash=None,
            hash=None,
            at=run.rt.clock.now(),
            kind=AuditKind.OUTCOME,
            outcome=outcome,
            reason=reason,
            intent_id=intent.id,
            sweep_id=run.sweep_id,
            actor=run.rt.actor,
            fencing_token=run.lease.info.token if run.lease else None,
        )
        await db(run.rt.store.audit.append, [event])
        # Counted in the metrics but not in this sweep's outcomes: closing an earlier
        # intent is bookkeeping, not a failure of this sweep.
        metrics.ACTIONS.labels(run.target.name, str(intent.action or "-"), str(outcome)).inc()
        log.info("intent %s on %s reconciled: %s", intent.id, intent.session_id, outcome)
    return len(pending)
