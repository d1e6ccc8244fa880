"""One target's part of a sweep: its mode, lease, policies, memory and audit rows.

:class:`TargetRun` is what the steps of a target's sweep share (the plan, the actions, the
warnings, reconciliation); :class:`Events` builds its audit rows with typed constructors, so
every row of a run carries the same sweep id, target, actor and fencing token.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta

from janitor import metrics
from janitor.errors import LeaseLost, StoreError
from janitor.model import (
    Action,
    AuditEvent,
    AuditKind,
    Decision,
    History,
    Keep,
    Outcome,
    Session,
)
from janitor.policy.spec import Policy
from janitor.providers.base import Provider
from janitor.runtime import Runtime, db
from janitor.store.audit import Fence
from janitor.store.state import LeaseInfo, PauseInfo
from janitor.targets import TargetConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Mode:
    """How a sweep treats its decisions.

    Attributes:
        acts: enforced policies may act; False turns every policy into a dry run.
        records: the sweep writes janitor's memory, marks, warnings and skip rows (a daemon
            sweep); False for ``sweep --dry-run`` and ``explain``, which change nothing.
    """

    acts: bool
    records: bool

    @property
    def dry_run(self) -> bool:
        """True when no policy may act, whatever its own mode."""
        return not self.acts


ENFORCE = Mode(acts=True, records=True)
#: ``dry_run = true`` in the config: the daemon records and remembers, but never acts.
GLOBAL_DRY_RUN = Mode(acts=False, records=True)
#: ``janitor sweep --dry-run`` and ``explain``: nothing is written but the would_act rows.
PREVIEW = Mode(acts=False, records=False)


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
        """The fence intents and outcomes are written under."""
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
        return await self.at(await db(self.rt.store.policies.revision))

    async def at(self, revision: int) -> list[Policy]:
        """The policies at ``revision`` (just read): loaded again only when it changed."""
        if revision != self.revision:
            self.policies = await db(self.rt.store.policies.load)
            self.revision = revision
        return self.policies

    def get(self, name: str) -> Policy | None:
        """The cached policy called ``name``."""
        return next((p for p in self.policies if p.name == name), None)


@dataclass
class TargetRun:
    """One target's part of a sweep: what the planning and action steps share."""

    rt: Runtime
    target: TargetConfig
    provider: Provider
    sweep_id: str
    mode: Mode
    lease: LeaseKeeper | None
    policies: PolicyCache
    previous: dict[str, History]
    memory: dict[str, History]
    keeps: dict[str, Keep] = field(default_factory=dict)  # session id -> its keep, if kept
    outcomes: dict[str, int] = field(default_factory=dict)
    halted: str | None = None
    store_failed: bool = False

    @property
    def dry_run(self) -> bool:
        """True when no policy may act on this target in this sweep."""
        return self.mode.dry_run

    @property
    def events(self) -> Events:
        """The audit row builder of this run."""
        return Events(self)

    @property
    def fence(self) -> Fence | None:
        """The lease fence rows of this run are written under (None without a lease)."""
        return self.lease.fence if self.lease is not None else None

    def count(self, outcome: Outcome, action: Action | None) -> None:
        """Count an outcome for the report and the metrics."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        metrics.ACTIONS.labels(self.target.name, str(action or "-"), str(outcome)).inc()

    def halt(self, reason: str) -> None:
        """Stop starting actions on this target for the rest of the sweep."""
        if self.halted is None:
            self.halted = reason
            log.warning("no further actions on target %s this sweep: %s", self.target.name, reason)


async def pause_reason(run: TargetRun) -> str | None:
    """Why no action may start now (the kill switch is on or unreadable), or None."""
    try:
        state = await db(run.rt.store.pause.get)
    except StoreError as exc:
        return unreadable_kill_switch(exc)
    return paused_because(state)


def unreadable_kill_switch(exc: StoreError) -> str:
    """Why nothing may start when the kill switch could not be read."""
    return f"the kill switch cannot be read ({exc}); acting is unsafe"


def paused_because(state: PauseInfo) -> str | None:
    """Why no action may start under the kill switch's ``state`` (None: it is off); sets the
    ``janitor_paused`` gauge."""
    metrics.PAUSED.set(1 if state.paused else 0)
    if state.paused:
        return f"janitor is paused by {state.actor}" + (f": {state.reason}" if state.reason else "")
    return None


class Events:
    """Typed constructors of one run's audit rows (DESIGN 2.5)."""

    def __init__(self, run: TargetRun) -> None:
        self.run = run

    def _row(
        self,
        kind: AuditKind,
        reason: str,
        *,
        session: Session | None = None,
        session_id: str | None = None,
        policy: str | None = None,
        policy_version: int | None = None,
        action: Action | None = None,
        dry_run: bool = False,
        outcome: Outcome | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        error: str | None = None,
        intent_id: int | None = None,
    ) -> AuditEvent:
        run = self.run
        return AuditEvent(
            at=run.rt.clock.now(),
            kind=kind,
            reason=reason,
            actor=run.rt.actor,
            sweep_id=run.sweep_id,
            target=run.target.name,
            session_id=session.id if session is not None else session_id,
            session_name=session.name[:255] if session is not None else None,
            session_kind=session.kind if session is not None else None,
            policy=policy,
            policy_version=policy_version,
            action=action,
            dry_run=dry_run,
            outcome=outcome,
            http_status=http_status,
            provider_request_id=request_id,
            error=error,
            fencing_token=run.lease.info.token if run.lease else None,
            intent_id=intent_id,
        )

    def about(
        self,
        kind: AuditKind,
        reason: str,
        decision: Decision,
        *,
        action: Action | None = None,
        outcome: Outcome | None = None,
        error: str | None = None,
    ) -> AuditEvent:
        """A row about one decision: its session, policy, version, action and mode."""
        policy = decision.policy
        if policy is None:
            return self._row(kind, reason, session=decision.session, action=action, error=error)
        return self._row(
            kind,
            reason,
            session=decision.session,
            policy=policy.name,
            policy_version=policy.version,
            action=action or decision.action,
            dry_run=decision.dry_run or self.run.dry_run,
            outcome=outcome,
            error=error,
        )

    def intent(
        self, decision: Decision, reason: str, *, action: Action | None = None
    ) -> AuditEvent:
        """The write-ahead ``intent`` row of an action (or of a native warning write)."""
        return self.about(AuditKind.INTENT, reason, decision, action=action)

    def outcome(
        self,
        intent: AuditEvent,
        outcome: Outcome,
        reason: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        error: str | None = None,
    ) -> AuditEvent:
        """The ``outcome`` row of ``intent``: the intent's session, policy and action."""
        row = self._row(
            AuditKind.OUTCOME,
            reason,
            session_id=intent.session_id,
            policy=intent.policy,
            policy_version=intent.policy_version,
            action=intent.action,
            dry_run=intent.dry_run,
            outcome=outcome,
            http_status=status,
            request_id=request_id,
            error=error,
            intent_id=intent.id,
        )
        return replace(row, session_name=intent.session_name, session_kind=intent.session_kind)

    def target_row(
        self,
        kind: AuditKind,
        reason: str,
        *,
        outcome: Outcome | None = None,
        policy: str | None = None,
        dry_run: bool = False,
        session: Session | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        error: str | None = None,
    ) -> AuditEvent:
        """A row about the target (a failed listing, a blocked policy), or one session."""
        return self._row(
            kind,
            reason,
            session=session,
            policy=policy,
            dry_run=dry_run,
            outcome=outcome,
            http_status=http_status,
            request_id=request_id,
            error=error,
        )

    def record(self, session_id: str | None, reason: str) -> AuditEvent:
        """An ``invalid_record`` row: a listed record that could not be read."""
        return self._row(AuditKind.INVALID_RECORD, reason, session_id=session_id)
