"""One sweep: lease → reconcile → list → decide → plan → record → warn → act → remember.

Targets are swept concurrently, each under its own lease; a failure on one never touches
another. Within a target:

* open intents are reconciled or settled first (:mod:`janitor.reconcile`);
* a failed or partial listing blocks every action on that target for the sweep;
* malformed records are skipped with an ``invalid_record`` row;
* the guards (:mod:`janitor.plan`) hold back what must not happen: open intents, cascades
  onto protected children, blast radius, clock skew, population drops, shared parents;
* dry-run decisions produce ``would_act`` rows and touch nothing;
* warnings go out (and native warnings are withdrawn) before actions, all under the kill
  switch; each action follows :mod:`janitor.actions`.

``janitor sweep --dry-run`` and ``explain`` use the same path in :data:`~janitor.context.PREVIEW`
mode: no lease, no observations, marks or warnings.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from janitor import memory, metrics
from janitor.actions import execute
from janitor.context import (
    ENFORCE,
    GLOBAL_DRY_RUN,
    PREVIEW,
    LeaseKeeper,
    Mode,
    PolicyCache,
    TargetRun,
    pause_reason,
)
from janitor.errors import JanitorError, LeaseLost, ProviderError, StoreError
from janitor.history import observed
from janitor.logcontext import bind
from janitor.model import (
    Action,
    AuditEvent,
    AuditKind,
    Decision,
    History,
    Listing,
    Outcome,
    State,
    Verdict,
)
from janitor.plan import CASCADE_BLOCKED, Open, Plan, make_plan
from janitor.policy.engine import CompiledPolicies, decide
from janitor.policy.spec import Policy
from janitor.reconcile import reconcile
from janitor.report import SweepReport, TargetReport
from janitor.runtime import Runtime, db
from janitor.store.history import MISSING, REMOVED, Observed
from janitor.targets import TargetConfig
from janitor.warning import notify, warn_all, withdraw_all

__all__ = ["SweepReport", "TargetReport", "run_sweep", "sweep_target"]

log = logging.getLogger(__name__)


def mode_of(rt: Runtime, *, dry_run: bool, record: bool) -> Mode:
    """The sweep's mode from the CLI's flags and the global ``dry_run`` setting."""
    if not record:
        return PREVIEW
    return GLOBAL_DRY_RUN if dry_run or rt.config.settings.dry_run else ENFORCE


async def run_sweep(
    rt: Runtime, *, dry_run: bool = False, only: str | None = None, record: bool = True
) -> SweepReport:
    """Sweep every target (or ``only``); ``dry_run`` forces every policy into dry-run;
    ``record=False`` writes nothing but the dry-run rows (``janitor sweep --dry-run``)."""
    targets = [rt.config.target(only)] if only else list(rt.config.targets)
    mode = mode_of(rt, dry_run=dry_run, record=record)
    report = SweepReport(
        sweep_id=str(uuid.uuid4()), started_at=rt.clock.now(), dry_run=mode.dry_run
    )
    started = time.monotonic()
    with bind(sweep_id=report.sweep_id):
        await _start(rt, report)
        report.targets = list(
            await asyncio.gather(*(sweep_target(rt, t, report.sweep_id, mode) for t in targets))
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
        report.store_error = f"the sweep cannot be recorded: {exc}"
        log.error("sweep %s cannot be recorded: %s", report.sweep_id, exc)


async def _finish(rt: Runtime, report: SweepReport) -> None:
    status = report.status
    try:
        await db(
            rt.store.sweeps.finish,
            report.sweep_id,
            at=rt.clock.now(),
            status=status,
            summary=report.summary(),
        )
        last_id, head = await db(rt.store.audit.head)
    except StoreError as exc:
        report.store_error = report.store_error or f"the sweep's end cannot be recorded: {exc}"
        log.error("sweep %s end cannot be recorded: %s", report.sweep_id, exc)
        return
    metrics.record_audit_head(last_id, head)
    log.info(
        "sweep %s finished in %.2fs (%s); audit chain head %s at row %d",
        report.sweep_id,
        report.seconds,
        status,
        head,
        last_id,
    )


async def sweep_target(
    rt: Runtime, target: TargetConfig, sweep_id: str, mode: Mode
) -> TargetReport:
    """Sweep one target; every error is caught here and reported, never raised."""
    report = TargetReport(target=target.name)
    started = time.monotonic()
    with bind(target=target.name):
        try:
            await _sweep_target(rt, target, sweep_id, report, mode)
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
        log.info("%s", report.describe())
    return report


def describe(report: TargetReport) -> str:
    """One line about a target's sweep, for the log."""
    return report.describe()


def _observe(target: str, report: TargetReport) -> None:
    metrics.SWEEP_DURATION.labels(target).observe(report.seconds)
    result = "skipped" if report.lease_holder else "failed" if report.failed else "ok"
    metrics.SWEEPS.labels(target, result).inc()
    if report.listed:
        for state in State:
            metrics.SESSIONS_SEEN.labels(target, str(state)).set(report.sessions.get(state, 0))
    if not report.failed:
        metrics.LAST_SUCCESS.labels(target).set(time.time())


async def _sweep_target(
    rt: Runtime, target: TargetConfig, sweep_id: str, report: TargetReport, mode: Mode
) -> None:
    lease = None
    if mode.acts:
        lease = await _take_lease(rt, target, report)
        if lease is None:
            return
    try:
        run = await prepare(rt, target, sweep_id, lease, mode)
        if lease is not None:
            report.reconciled, open_intents = await reconcile(run)
        else:  # a preview reconciles nothing, but holds back what a sweep would
            open_intents = await open_in_store(rt, target.name)
        report.settling = len(open_intents)
        listing = await _list(run, report)
        if listing is None:
            return
        await _process(run, listing, report, open_intents)
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


async def prepare(
    rt: Runtime, target: TargetConfig, sweep_id: str, lease: LeaseKeeper | None, mode: Mode
) -> TargetRun:
    """The run of one target: its policies, its keeps and janitor's memory of its sessions."""
    revision = await db(rt.store.policies.revision)
    policies = await db(rt.store.policies.load)
    previous = await db(rt.store.observations.load, target.name)
    keeps = await db(rt.store.keeps.active, target.name, rt.clock.now())
    return TargetRun(
        rt=rt,
        target=target,
        provider=rt.providers[target.name],
        sweep_id=sweep_id,
        mode=mode,
        lease=lease,
        policies=PolicyCache(rt, policies, revision),
        previous=previous,
        memory=dict(previous),
        keeps=keeps,
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
                run.events.target_row(
                    AuditKind.LIST_FAILED,
                    f"listing failed, no action on this target this sweep: {exc}",
                    http_status=exc.status,
                    error=str(exc),
                    request_id=exc.request_id,
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


async def open_in_store(rt: Runtime, target: str) -> dict[str, Open]:
    """The target's open intents as stored (session id → action and why), read only."""
    items = await db(rt.store.audit.open_intents, target)
    return {
        i.intent.session_id or "": Open(
            action=i.intent.action,
            reason=f"its {i.intent.action} of intent {i.intent.id} is still open",
        )
        for i in items
    }


async def plan_target(
    run: TargetRun,
    listing: Listing,
    open_intents: dict[str, Open],
    *,
    policies: Sequence[Policy] | None = None,
) -> Plan:
    """Decide every listed session and run the guards over the decisions.

    ``policies`` replaces the stored ones (``policy apply --plan`` asks what a draft would do).
    """
    now = run.rt.clock.now()
    policies = run.policies.policies if policies is None else list(policies)
    # decide() is pure but costs ~20 µs per session and policy: off the loop, so a large
    # fleet never stalls the heartbeat (/healthz) or the watchdog.
    decisions = await asyncio.to_thread(_decide_all, run, listing, policies, now)
    return make_plan(
        decisions,
        listing=listing,
        policies=policies,
        target=run.target,
        provider=run.provider,
        previous=run.previous,
        open_intents=open_intents,
        acts=run.mode.acts,
        now=now,
    )


async def _process(
    run: TargetRun, listing: Listing, report: TargetReport, open_intents: dict[str, Open]
) -> None:
    now = run.rt.clock.now()
    plan = await plan_target(run, listing, open_intents)
    decisions = plan.decisions
    report.verdicts = Counter(str(d.verdict) for d in decisions)
    rows = _decision_rows(run, [d for d in decisions if not _quiet(d)])
    rows += _invalid_rows(run, listing, now)
    rows += await _blocked_rows(run, decisions, plan, report)
    if run.mode.records:
        for decision in decisions:
            session = decision.session
            run.memory[session.id] = memory.advance(
                run.previous.get(session.id), session, decision, now
            )
        rows += _unmark_rows(run, decisions)
    await _append(run, rows)
    quiet = _decision_rows(run, [d for d in decisions if _quiet(d)])
    recorded = True
    if plan.block is None and run.mode.acts and await _may_proceed(run, decisions):
        acting = [d for d in decisions if plan.blast.blocks(d) is None]
        acts = [d for d in acting if d.verdict is Verdict.ACT and not d.dry_run]
        # The skip and wait rows are written while the actions run, in step with them, not
        # before them: no action depends on them, and a first sweep has thousands (ADR 0015).
        pace = Pace(len(acts), chunks=-(-len(quiet) // QUIET_CHUNK))
        writing = asyncio.create_task(_append_quiet(run, quiet, pace))
        try:
            if run.mode.records:
                await withdraw_all(run, decisions)
                report.warned = await warn_all(run, acting)
            await _act_all(run, acts, pace.one_done)
        except BaseException:
            writing.cancel()
            raise
        finally:
            pace.all_done()
        recorded = await writing
    else:
        await _append(run, quiet)
    report.outcomes, report.halted = run.outcomes, run.halted  # kept if the save below fails
    report.store_failed = report.store_failed or run.store_failed
    if report.store_failed and report.error is None:  # the sweep failed: say why (exit 1)
        report.error = run.halted or "the database failed during the sweep"
    if run.mode.records and recorded:
        # Saved once, after acting: a sweep cut short loses only this sweep's update of the
        # memory (a streak one shorter, a warning sent again), never a safety property.
        await _save_memory(run, listing, now)


def history_rows(
    previous: Mapping[str, History],
    memory: Mapping[str, History],
    listing: Listing,
    now: datetime,
) -> Iterator[Observed]:
    """The session history log's new rows after a recorded sweep: a listed session whose
    fields changed since they were last logged; a session missing from the listing; a
    session this sweep's action removed (listed at ``now``, gone after it).

    Made one at a time, as the store writes them: a first sweep over 100,000 sessions never
    holds all their observed fields at once."""
    for session in listing.sessions:
        before = previous.get(session.id)
        after = memory.get(session.id)
        if before is None or after is None or before.observed != after.observed:
            yield Observed(session_id=session.id, at=now, fields=observed(session))
        if after is None:  # removed by this sweep's action
            yield Observed(session_id=session.id, at=now, fields=None, gone=REMOVED)
    listed = {s.id for s in listing.sessions}
    for sid, before in previous.items():
        if sid not in listed and before.observed is not None:
            yield Observed(session_id=sid, at=now, fields=None, gone=MISSING)


def _decide_all(
    run: TargetRun, listing: Listing, policies: Sequence[Policy], now: datetime
) -> list[Decision]:
    compiled = CompiledPolicies(policies)  # once per listing: its routes serve every session
    return [
        decide(s, compiled, now, run.previous.get(s.id), keep=run.keeps.get(s.id))
        for s in listing.sessions
    ]


async def _may_proceed(run: TargetRun, decisions: Sequence[Decision]) -> bool:
    """False when the kill switch is on: no warnings, notifications or actions (a withdrawal
    checks the kill switch itself before its intent, like every provider write)."""
    if not any(d.verdict in (Verdict.ACT, Verdict.WARN) for d in decisions):
        return True
    reason = await pause_reason(run)
    if reason is not None:
        run.halt(reason)
        return False
    return True


def _decision_rows(run: TargetRun, decisions: Sequence[Decision]) -> list[AuditEvent]:
    """would_act rows for dry-run acts; skip/wait rows when a session's reason changed."""
    rows = []
    records = run.mode.records
    for decision in decisions:
        previous = run.previous.get(decision.session.id)
        unchanged = records and previous is not None and previous.last_key == decision.key
        if unchanged:
            continue
        dry = decision.dry_run or run.dry_run
        if decision.verdict is Verdict.ACT and dry:
            rows.append(
                run.events.about(
                    AuditKind.OUTCOME,
                    f"would {decision.action}: {decision.reason}",
                    decision,
                    outcome=Outcome.WOULD_ACT,
                )
            )
            run.count(Outcome.WOULD_ACT, decision.action)
        elif decision.verdict is Verdict.WARN and run.dry_run:
            rows.append(
                run.events.about(
                    AuditKind.WARN,
                    f"would warn: {decision.reason}",
                    decision,
                    outcome=Outcome.WOULD_ACT,
                )
            )
        elif decision.code == CASCADE_BLOCKED:
            rows.append(
                run.events.about(
                    AuditKind.BLOCKED, decision.reason, decision, outcome=Outcome.BLOCKED
                )
            )
        elif decision.verdict in (Verdict.SKIP, Verdict.WAIT) and records:
            kind = AuditKind.SKIP if decision.verdict is Verdict.SKIP else AuditKind.WAIT
            rows.append(run.events.about(kind, decision.reason, decision))
    return rows


def _invalid_rows(run: TargetRun, listing: Listing, now: datetime) -> list[AuditEvent]:
    """An invalid_record row per malformed record, once per record and reason."""
    rows = []
    records = run.mode.records
    for item in listing.invalid:
        key = f"invalid|{item.reason}"
        previous = run.previous.get(item.id) if item.id else None
        if records and item.id:
            run.memory[item.id] = History(
                first_seen=previous.first_seen if previous else now,
                state=State.UNKNOWN,
                state_since=previous.state_since if previous else now,
                last_key=key,
            )
        if records and previous is not None and previous.last_key == key:
            continue
        rows.append(run.events.record(item.id, f"record skipped: {item.reason}"))
    if listing.invalid:
        log.warning(
            "%d malformed records skipped on target %s", len(listing.invalid), run.target.name
        )
    return rows


async def _blocked_rows(
    run: TargetRun, decisions: Sequence[Decision], plan: Plan, report: TargetReport
) -> list[AuditEvent]:
    """One blocked row per blocked policy or target; an alert when enforcement was blocked."""
    acting = [
        d for d in decisions if d.verdict in (Verdict.ACT, Verdict.WARN) and d.policy is not None
    ]
    blast, block = plan.blast, plan.block
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
            run.events.target_row(
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
            row = run.events.about(
                AuditKind.UNMARK,
                f"mark of policy {previous.mark.policy} cleared: {decision.reason}",
                decision,
            )
            rows.append(replace(row, policy=previous.mark.policy))
    return rows


async def _act_all(
    run: TargetRun, decisions: Sequence[Decision], done: Callable[[], None] = lambda: None
) -> None:
    """Carry out the decisions, at most ``max_concurrency`` at once; ``done`` after each.

    A task group, not gather: when the sweep is cancelled (its timeout, shutdown), the
    cancellation waits for every call in flight to record its outcome before it goes on.
    """
    slots = asyncio.Semaphore(run.target.max_concurrency)

    async def one(decision: Decision) -> None:
        async with slots:
            if run.halted is not None:
                return
            try:
                if decision.action is Action.NOTIFY:
                    await notify(run, decision)
                else:
                    await execute(run, decision)
            finally:
                done()

    try:
        async with asyncio.TaskGroup() as group:
            for decision in decisions:
                group.create_task(one(decision))
    except* Exception as group:  # noqa: BLE001 (a bug in one action stops the target: name it)
        raise group.exceptions[0] from None


async def _append(run: TargetRun, rows: list[AuditEvent]) -> None:
    if rows:
        await db(run.rt.store.audit.extend, rows)


#: Skip and wait rows per append while actions run: small batches, so the intents and outcomes
#: of the actions queue between them instead of behind thousands of rows.
QUIET_CHUNK = 500


def _quiet(decision: Decision) -> bool:
    """A decision whose row no action waits for: skip or wait (not a cascade block)."""
    return decision.verdict in (Verdict.SKIP, Verdict.WAIT) and decision.code != CASCADE_BLOCKED


class Pace:
    """Spreads the skip and wait rows over a target's actions: the k-th of ``chunks`` chunks
    goes once k/chunks of the ``actions`` are done (at once when there are none), so the
    rows neither hold back the first actions nor pile up after the last."""

    def __init__(self, actions: int, *, chunks: int) -> None:
        self._actions = actions
        self._chunks = max(1, chunks)
        self._done = 0
        self._moved = asyncio.Event()

    def one_done(self) -> None:
        """An action finished (whatever its outcome)."""
        self._done += 1
        self._moved.set()

    def all_done(self) -> None:
        """No more actions will run (all finished, the target halted, or the sweep was cut)."""
        self._done = self._actions
        self._moved.set()

    async def chunk(self, index: int) -> None:
        """Wait until chunk ``index`` (from 0) may be written."""
        while self._done * self._chunks < index * self._actions:
            self._moved.clear()
            await self._moved.wait()


async def _append_quiet(run: TargetRun, rows: list[AuditEvent], pace: Pace) -> bool:
    """Append the skip and wait rows a chunk at a time, in step with the actions; False when
    the store failed (the target halts, as for any store failure during its actions, and its
    memory is not saved, so the next sweep writes the rows again)."""
    try:
        for index, start in enumerate(range(0, len(rows), QUIET_CHUNK)):
            await pace.chunk(index)
            await _append(run, rows[start : start + QUIET_CHUNK])
    except StoreError as exc:
        run.store_failed = True
        run.halt(f"the skip and wait rows could not be recorded, so nothing more is done: {exc}")
        return False
    return True


async def _save_memory(run: TargetRun, listing: Listing, now: datetime) -> None:
    listed = {s.id: s.name for s in listing.sessions}
    listed.update({i.id: i.id for i in listing.invalid if i.id})
    # generators: the store writes them in chunks, within its transaction
    entries = ((sid, listed[sid], history) for sid, history in run.memory.items() if sid in listed)
    changes = history_rows(run.previous, run.memory, listing, now)
    try:
        await db(
            run.rt.store.observations.save,
            run.target.name,
            entries,
            fence=run.fence,
            log=changes,
        )
    except LeaseLost as exc:
        run.halt(str(exc))
        log.warning("memory of target %s not saved, the lease is lost: %s", run.target.name, exc)
