"""One sweep: lease → reconcile → list → decide → record → guard → warn → act → outcome.

Targets are swept concurrently, each under its own lease; a failure on one never touches
another. Within a target (see :mod:`janitor.actions` for the per-action steps):

* a failed or partial listing blocks every action on that target for the sweep;
* malformed records are skipped with an ``invalid_record`` row;
* clock skew beyond the tolerance and a suspicious drop of the population block the target;
* blast-radius limits block a policy (or the target) as a whole, with one ``blocked`` row;
* dry-run decisions produce ``would_act`` rows and touch nothing.

``janitor sweep --dry-run`` and ``explain`` use the same path with ``record=False``: no
lease, no observations, marks or warnings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from janitor import guards, memory, metrics
from janitor.actions import (
    LeaseKeeper,
    PolicyCache,
    TargetRun,
    execute,
    pause_reason,
    reconcile,
)
from janitor.errors import JanitorError, LeaseLost, ProviderError, StoreError
from janitor.logcontext import bind
from janitor.model import (
    AuditEvent,
    AuditKind,
    Decision,
    History,
    Listing,
    Outcome,
    State,
    Verdict,
)
from janitor.policy.engine import decide
from janitor.policy.spec import Policy
from janitor.runtime import Runtime, db
from janitor.settings import TargetConfig

log = logging.getLogger(__name__)


@dataclass
class TargetReport:
    """What happened on one target in one sweep."""

    target: str
    listed: bool = False
    error: str | None = None
    lease_holder: str | None = None
    sessions: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, int] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    warned: int = 0
    reconciled: int = 0
    halted: str | None = None
    store_failed: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when the target could not be swept or an action failed."""
        bad = self.outcomes.get(Outcome.FAILED, 0) + self.outcomes.get(Outcome.UNKNOWN, 0)
        return self.error is not None or self.lease_holder is not None or bad > 0


@dataclass
class SweepReport:
    """A sweep over all (or one) targets."""

    sweep_id: str
    started_at: datetime
    dry_run: bool
    targets: list[TargetReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when any target failed: ``janitor sweep`` exits 1."""
        return any(t.failed for t in self.targets)

    def summary(self) -> dict[str, object]:
        """A JSON-compatible summary (stored with the sweep and printed by the CLI)."""
        return {
            "sweep_id": self.sweep_id,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "failed": self.failed,
            "targets": [
                {
                    "target": t.target,
                    "listed": t.listed,
                    "error": t.error,
                    "lease_holder": t.lease_holder,
                    "sessions": dict(t.sessions),
                    "verdicts": dict(t.verdicts),
                    "outcomes": {str(k): v for k, v in t.outcomes.items()},
                    "blocked": t.blocked,
                    "warned": t.warned,
                    "reconciled": t.reconciled,
                    "halted": t.halted,
                    "seconds": round(t.seconds, 3),
                }
                for t in self.targets
            ],
        }


async def run_sweep(
    rt: Runtime, *, dry_run: bool = False, only: str | None = None, record: bool = True
) -> SweepReport:
    """Sweep every target (or ``only``); ``dry_run`` forces every policy into dry-run."""
    targets = [rt.config.target(only)] if only else list(rt.config.targets)
    dry_run = dry_run or rt.config.settings.dry_run
    report = SweepReport(sweep_id=str(uuid.uuid4()), started_at=rt.clock.now(), dry_run=dry_run)
    started = time.monotonic()
    with bind(sweep_id=report.sweep_id):
        await _start(rt, report)
        report.targets = list(
            await asyncio.gather(
                *(
                    sweep_target(rt, t, report.sweep_id, dry_run=dry_run, record=record)
                    for t in targets
                )
            )
        )
        report.seconds = time.monotonic() - started
        await _finish(rt, report)
    return report


async def _start(rt: Runtime, report: SweepReport) -> None:
    try:
        await db(
            rt.store.sweeps.start,
            report.sweep_id,
            at=report.started_at,
            actor=rt.actor,
            dry_run=report.dry_run,
        )
    except StoreError as exc:
        log.error("sweep %s cannot be recorded: %s", report.sweep_id, exc)


async def _finish(rt: Runtime, report: SweepReport) -> None:
    status = "failed" if report.failed else "ok"
    try:
        await db(
            rt.store.sweeps.finish,
            report.sweep_id,
            at=rt.clock.now(),
            status=status,
            summary=report.summary(),
        )
        rows, head = await db(rt.store.audit.head)
    except StoreError as exc:
        log.error("sweep %s end cannot be recorded: %s", report.sweep_id, exc)
        return
    metrics.record_audit_head(rows, head)
    log.info(
        "sweep %s finished in %.2fs (%s); audit chain head %s after %d rows",
        report.sweep_id,
        report.seconds,
        status,
        head,
        rows,
    )


async def sweep_target(
    rt: Runtime, target: TargetConfig, sweep_id: str, *, dry_run: bool, record: bool
) -> TargetReport:
    """Sweep one target; every error is caught here and reported, never raised."""
    report = TargetReport(target=target.name)
    started = time.monotonic()
    with bind(target=target.name):
        try:
            await _sweep_target(rt, target, sweep_id, report, dry_run=dry_run, record=record)
        except StoreError as exc:
            report.error, report.store_failed = report.error or str(exc), True
            log.error("sweep of target %s stopped, the database failed: %s", target.name, exc)
        except JanitorError as exc:
            report.error = report.error or str(exc)
            log.error("sweep of target %s stopped: %s", target.name, exc)
        except Exception as exc:
            # A bug (say, garbage a provider does not expect) stops this target only: were
            # it raised, gather() would drop the other targets' reports and leave their
            # sweeps running unsupervised. The rest of this target's sweep is abandoned.
            report.error = report.error or f"internal error: {type(exc).__name__}: {exc}"
            log.exception("sweep of target %s stopped by an internal error", target.name)
        report.seconds = time.monotonic() - started
        _observe(target.name, report)
        log.info("%s", describe(report))
    return report


def describe(report: TargetReport) -> str:
    """One line about a target's sweep, for the log."""
    if report.lease_holder:
        return f"target {report.target}: swept by {report.lease_holder}, skipped"
    if not report.listed:
        return f"target {report.target}: not listed: {report.error}"
    states = ", ".join(f"{n} {s}" for s, n in sorted(report.sessions.items())) or "none"
    outcomes = ", ".join(f"{n} {o}" for o, n in sorted(report.outcomes.items())) or "no actions"
    extra = f"; {len(report.blocked)} blocked" if report.blocked else ""
    extra += f"; {report.warned} warned" if report.warned else ""
    extra += f"; halted: {report.halted}" if report.halted else ""
    return (
        f"target {report.target}: {sum(report.sessions.values())} sessions ({states}) -> "
        f"{outcomes}{extra} in {report.seconds:.2f}s"
    )


def _observe(target: str, report: TargetReport) -> None:
    metrics.SWEEP_DURATION.labels(target).observe(report.seconds)
    result = "skipped" if report.lease_holder else "failed" if report.failed else "ok"
    metrics.SWEEPS.labels(target, result).inc()
    if report.listed:
        for state in ("idle", "busy", "pending", "stopping", "dead", "ended", "unknown"):
            metrics.SESSIONS_SEEN.labels(target, state).set(report.sessions.get(state, 0))
    if not report.failed:
        metrics.LAST_SUCCESS.labels(target).set(time.time())


async def _sweep_target(
    rt: Runtime,
    target: TargetConfig,
    sweep_id: str,
    report: TargetReport,
    *,
    dry_run: bool,
    record: bool,
) -> None:
    lease = None
    if not dry_run:
        lease = await _take_lease(rt, target, report)
        if lease is None:
            return
    try:
        run = await _prepare(rt, target, sweep_id, lease, dry_run=dry_run)
        if lease is not None:
            report.reconciled = await reconcile(run)
        listing = await _list(run, report)
        if listing is None:
            return
        await _process(run, listing, report, record=record)
    finally:
        if lease is not None:
            await _release(lease)


async def _take_lease(
    rt: Runtime, target: TargetConfig, report: TargetReport
) -> LeaseKeeper | None:
    name = f"target:{target.name}"
    ttl = rt.config.settings.lease_ttl
    info = await db(rt.store.leases.acquire, name, rt.holder, ttl)
    if info is None:
        holder = await db(rt.store.leases.get, name)
        report.lease_holder = holder.holder if holder else "unknown"
        metrics.LEASE_HELD.labels(target.name).set(0)
        log.info("target %s is swept by %s now; skipped", target.name, report.lease_holder)
        return None
    metrics.LEASE_HELD.labels(target.name).set(1)
    return LeaseKeeper(rt, name, info, ttl)


async def _release(lease: LeaseKeeper) -> None:
    try:
        await lease.release()
    except StoreError as exc:
        log.warning("lease %s not released (it expires by itself): %s", lease.name, exc)


async def _prepare(
    rt: Runtime, target: TargetConfig, sweep_id: str, lease: LeaseKeeper | None, *, dry_run: bool
) -> TargetRun:
    revision = await db(rt.store.policies.revision)
    policies = await db(rt.store.policies.load)
    previous = await db(rt.store.observations.load, target.name)
    return TargetRun(
        rt=rt,
        target=target,
        provider=rt.providers[target.name],
        sweep_id=sweep_id,
        dry_run=dry_run,
        lease=lease,
        policies=PolicyCache(rt, policies, revision),
        previous=previous,
        memory=dict(previous),
    )


async def _list(run: TargetRun, report: TargetReport) -> Listing | None:
    """The complete listing, or None after recording why there is none."""
    key = f"target_failed:{run.target.name}"
    try:
        listing = await run.provider.list_sessions()
    except ProviderError as exc:
        report.error = f"listing failed: {exc}"
        await _append(
            run,
            [
                run.event(
                    AuditKind.LIST_FAILED,
                    f"listing failed, no action on this target this sweep: {exc}",
                    http_status=exc.status,
                    error=str(exc),
                    provider_request_id=exc.request_id,
                )
            ],
        )
        await run.rt.alerter.raise_(
            key,
            "target_failed",
            f"target {run.target.name} cannot be listed: {exc}",
            target=run.target.name,
        )
        return None
    run.rt.alerter.clear(key)
    run.rt.alerter.clear(f"circuit_open:{run.target.name}")  # the listing got through it
    report.listed = True
    report.sessions = Counter(str(s.state) for s in listing.sessions)
    return listing


async def _process(run: TargetRun, listing: Listing, report: TargetReport, *, record: bool) -> None:
    now = run.rt.clock.now()
    policies = run.policies.policies
    # decide() is pure but costs ~20 µs per session and policy: off the loop, so a large
    # fleet never stalls the heartbeat (/healthz) or the watchdog.
    decisions = await asyncio.to_thread(_decide_all, run, listing, policies, now)
    block = _target_block(run, listing)
    blast = guards.blast_radius(
        decisions,
        {p.name: p for p in policies},
        guards.Limits(
            count=run.target.max_actions_per_sweep, percent=run.target.max_actions_percent
        ),
        population=len(listing.sessions),
    )
    decisions = _hold_shared_parents(run, decisions, blast)
    report.verdicts = Counter(str(d.verdict) for d in decisions)
    rows = _decision_rows(run, decisions, record=record)
    rows += _invalid_rows(run, listing, now, record=record)
    rows += await _blocked_rows(run, decisions, blast, block, report)
    if record:
        for decision in decisions:
            session = decision.session
            run.memory[session.id] = memory.advance(
                run.previous.get(session.id), session, decision, now
            )
        rows += _unmark_rows(run, decisions)
    await _append(run, rows)
    if block is None and not run.dry_run and await _may_proceed(run, decisions):
        acting = [d for d in decisions if blast.blocks(d) is None]
        if record:
            report.warned = await _warn_all(run, acting)
        await _act_all(run, [d for d in acting if d.verdict is Verdict.ACT and not d.dry_run])
    report.outcomes, report.halted = run.outcomes, run.halted  # kept if the save below fails
    report.store_failed = report.store_failed or run.store_failed
    if report.store_failed and report.error is None:  # the sweep failed: say why (exit 1)
        report.error = run.halted or "the database failed during the sweep"
    if record:
        # Saved once, after acting: a sweep cut short loses only this sweep's update of the
        # memory (a streak one shorter, a warning sent again), never a safety property.
        await _save_memory(run, listing)


def _hold_shared_parents(
    run: TargetRun, decisions: list[Decision], blast: guards.BlastRadius
) -> list[Decision]:
    """Acts that would also end a kept session's kernel wait instead (guards.shared_parents)."""
    acting = {
        d.session.id
        for d in decisions
        if d.verdict is Verdict.ACT
        and not (d.dry_run or run.dry_run)
        and d.action is not None
        and d.action.destructive
        and blast.blocks(d) is None
    }
    held = guards.shared_parents(decisions, acting)
    return [
        replace(
            d,
            verdict=Verdict.WAIT,
            code="shared_parent",
            reason=f"held back: {held[d.session.id]} ({d.reason})",
        )
        if d.session.id in held
        else d
        for d in decisions
    ]


def _decide_all(
    run: TargetRun, listing: Listing, policies: Sequence[Policy], now: datetime
) -> list[Decision]:
    return [decide(s, policies, now, run.previous.get(s.id)) for s in listing.sessions]


async def _may_proceed(run: TargetRun, decisions: Sequence[Decision]) -> bool:
    """False when the kill switch is on: no warnings, notifications or actions this sweep."""
    if not any(d.verdict in (Verdict.WARN, Verdict.ACT) for d in decisions):
        return True
    reason = await pause_reason(run)
    if reason is not None:
        run.halt(reason)
        return False
    return True


def _target_block(run: TargetRun, listing: Listing) -> str | None:
    """A reason no action may happen on this target this sweep (skew, population drop)."""
    skew = guards.skew_block(listing.server_skew, run.target.skew_tolerance)
    if skew:
        return skew
    remembered = sum(
        1 for h in run.previous.values() if not (h.last_key or "").startswith("invalid|")
    )
    return guards.population_block(
        len(listing.sessions), remembered, max_drop_percent=run.target.max_population_drop_percent
    )


def _decision_rows(
    run: TargetRun, decisions: Sequence[Decision], *, record: bool
) -> list[AuditEvent]:
    """would_act rows for dry-run acts; skip/wait rows when a session's reason changed."""
    rows = []
    for decision in decisions:
        previous = run.previous.get(decision.session.id)
        unchanged = previous is not None and previous.last_key == decision.key
        dry = decision.dry_run or run.dry_run
        if decision.verdict is Verdict.ACT and dry:
            if not (record and unchanged):
                rows.append(
                    run.event(
                        AuditKind.OUTCOME,
                        f"would {decision.action}: {decision.reason}",
                        decision=decision,
                        outcome=Outcome.WOULD_ACT,
                    )
                )
                run.count(Outcome.WOULD_ACT, decision.action)
        elif decision.verdict is Verdict.WARN and run.dry_run:
            if not (record and unchanged):
                rows.append(
                    run.event(
                        AuditKind.WARN,
                        f"would warn: {decision.reason}",
                        decision=decision,
                        outcome=Outcome.WOULD_ACT,
                    )
                )
        elif decision.verdict in (Verdict.SKIP, Verdict.WAIT) and record and not unchanged:
            kind = AuditKind.SKIP if decision.verdict is Verdict.SKIP else AuditKind.WAIT
            rows.append(run.event(kind, decision.reason, decision=decision))
    return rows


def _invalid_rows(
    run: TargetRun, listing: Listing, now: datetime, *, record: bool
) -> list[AuditEvent]:
    """An invalid_record row per malformed record, once per record and reason."""
    rows = []
    for item in listing.invalid:
        key = f"invalid|{item.reason}"
        previous = run.previous.get(item.id) if item.id else None
        if record and item.id:
            run.memory[item.id] = History(
                first_seen=previous.first_seen if previous else now,
                state=State.UNKNOWN,
                state_since=previous.state_since if previous else now,
                last_key=key,
            )
        if record and previous is not None and previous.last_key == key:
            continue
        rows.append(
            run.event(
                AuditKind.INVALID_RECORD, f"record skipped: {item.reason}", session_id=item.id
            )
        )
    if listing.invalid:
        log.warning(
            "%d malformed records skipped on target %s", len(listing.invalid), run.target.name
        )
    return rows


async def _blocked_rows(
    run: TargetRun,
    decisions: Sequence[Decision],
    blast: guards.BlastRadius,
    block: str | None,
    report: TargetReport,
) -> list[AuditEvent]:
    """One blocked row per blocked policy or target; an alert when enforcement was blocked."""
    acting = [
        d for d in decisions if d.verdict in (Verdict.ACT, Verdict.WARN) and d.policy is not None
    ]
    blocks: list[tuple[str, str | None, list[Decision]]] = []
    if block is not None:
        blocks.append((block, None, acting))
    else:
        for name, reason in sorted(blast.policies.items()):
            blocks.append((reason, name, [d for d in acting if d.policy and d.policy.name == name]))
        if blast.target is not None:
            blocks.append((blast.target, None, [d for d in acting if blast.blocks(d)]))
    rows, alerted = [], set()
    for reason, policy, affected in blocks:
        if not affected:
            continue
        enforced = any(not (d.dry_run or run.dry_run) for d in affected)
        report.blocked.append(reason)
        if block is None:
            metrics.BLAST_RADIUS_BLOCKS.labels(
                run.target.name, "policy" if policy else "target"
            ).inc()
        rows.append(
            run.event(
                AuditKind.BLOCKED,
                reason,
                outcome=Outcome.BLOCKED,
                policy=policy,
                dry_run=not enforced,
            )
        )
        if enforced:
            key = f"blocked:{run.target.name}:{policy or '*'}"
            alerted.add(key)
            await run.rt.alerter.raise_(key, "blocked", reason, target=run.target.name)
        else:
            log.warning("dry-run preview on target %s: %s", run.target.name, reason)
    run.rt.alerter.clear_prefix(f"blocked:{run.target.name}:", alerted)
    return rows


def _unmark_rows(run: TargetRun, decisions: Sequence[Decision]) -> list[AuditEvent]:
    rows = []
    for decision in decisions:
        sid = decision.session.id
        previous, current = run.previous.get(sid), run.memory.get(sid)
        if current is not None and memory.unmarked(previous, current):
            assert previous is not None
            assert previous.mark is not None
            rows.append(
                run.event(
                    AuditKind.UNMARK,
                    f"mark of policy {previous.mark.policy} cleared: {decision.reason}",
                    decision=decision,
                    policy=previous.mark.policy,
                )
            )
    return rows


async def _warn_all(run: TargetRun, decisions: Sequence[Decision]) -> int:
    delivered = 0
    for decision in decisions:
        if decision.verdict is not Verdict.WARN or decision.policy is None:
            continue
        if await _warn(run, decision):
            delivered += 1
    return delivered


async def _warn(run: TargetRun, decision: Decision) -> bool:
    assert decision.policy is not None
    policy = _policy(run.policies.policies, decision.policy.name)
    now = run.rt.clock.now()
    act_after = now + policy.grace if policy and policy.grace else None
    problem = await run.rt.warner.warn(
        run.provider,
        decision.session,
        policy=decision.policy.name,
        action=str(decision.action),
        reason=decision.reason,
        act_after=act_after,
    )
    sid = decision.session.id
    if problem is None and sid in run.memory:
        run.memory[sid] = memory.warned(run.memory[sid], now)
    text = problem or f"warned: {decision.reason}"
    await _append(
        run,
        [
            run.event(
                AuditKind.WARN,
                text,
                decision=decision,
                outcome=Outcome.FAILED if problem else None,
                error=problem,
            )
        ],
    )
    return problem is None


def _policy(policies: Sequence[Policy], name: str) -> Policy | None:
    return next((p for p in policies if p.name == name), None)


async def _act_all(run: TargetRun, decisions: Sequence[Decision]) -> None:
    slots = asyncio.Semaphore(run.target.max_concurrency)

    async def one(decision: Decision) -> None:
        async with slots:
            if run.halted is None:
                await execute(run, decision)

    await asyncio.gather(*(one(d) for d in decisions))


async def _append(run: TargetRun, rows: list[AuditEvent]) -> None:
    if rows:
        await db(run.rt.store.audit.append, rows)


async def _save_memory(run: TargetRun, listing: Listing) -> None:
    listed = {s.id: s.name for s in listing.sessions}
    listed.update({i.id: i.id for i in listing.invalid if i.id})
    entries: list[tuple[str, str, History]] = [
        (sid, listed[sid], history) for sid, history in run.memory.items() if sid in listed
    ]
    fence = run.lease.fence if run.lease is not None else None
    try:
        await db(run.rt.store.observations.save, run.target.name, entries, fence=fence)
    except LeaseLost as exc:
        run.halt(str(exc))
        log.warning("memory of target %s not saved, the lease is lost: %s", run.target.name, exc)
