"""Whole sweeps of an ESS target against the fake scheduler, asserting on what the scheduler
received and on the audit trail:

* a RUNNING request past its limit is cancelled, goes through CANCELLING and is audited
  CANCELLED (``executed``) by a later sweep, never cancelled twice; one that ends in ERROR
  instead is ``failed`` naming ERROR; one that ended between the re-check and the call is
  ``skipped_changed`` naming its state; a crash between the call and its outcome is
  reconciled from the request's state, never by calling again;
* a parent with three children is cancelled with one call; a parent whose child belongs to an
  exempt submitter is not cancelled at all; a request whose submitter is exempt is untouched;
* a WAIT request scheduled for later counts its day from its requested start;
* the list of unfinished requests churns: a listing half the size of the last one blocks
  nothing (no population guard for ESS);
* an OAuth2 target gets one token for many sweeps, a new one before it expires and after a
  revocation;
* a cancel stuck in CANCELLING is escalated to ``force_cancel``, which closes it: this needs a
  change of the kit (see the test's xfail reason).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from janitor.clock import FrozenClock
from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.runtime import Hooks, Runtime
from janitor.settings import Config
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import NOW, make_config
from tests.fakes.ess import EssServer, Fault, Request, ess_target

TARGET = "ess-prod"
STUCK_RUNNING = {
    "name": "stuck-running",
    "match": {"provider_state": ["RUNNING"], "in_state_for": "6h"},
    "action": "cancel",
    "mode": "enforce",
}
STUCK_WAITING = {
    "name": "stuck-waiting",
    "match": {"provider_state": ["WAIT"], "in_state_for": "1d"},
    "action": "cancel",
    "mode": "enforce",
}
STUCK_CANCELLING = {
    "name": "stuck-cancelling",
    "match": {"provider_state": ["CANCELLING"], "in_state_for": "30m"},
    "action": "force_cancel",
    "mode": "enforce",
}


class CrashHooks(Hooks):
    """Raises at one point of the action path, once (the process dying there)."""

    def __init__(self, point: str) -> None:
        self.point: str | None = point

    def at(self, point: str) -> None:
        if point == self.point:
            self.point = None
            raise RuntimeError(f"crashed at {point}")


@dataclass
class World:
    """A store, the fake scheduler, and daemon sweeps over them on a frozen clock."""

    store: Store
    clock: FrozenClock
    server: EssServer
    secrets: Path
    target: dict[str, Any] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, *specs: dict[str, Any]) -> None:
        """Store policies the way ``policy apply`` does."""
        self.store.policies.apply(
            [PolicySpec.model_validate(s) for s in specs], actor="test", now=self.clock.now()
        )

    def config(self) -> Config:
        """One ESS target on the fake."""
        return make_config(
            "sqlite://", [ess_target(self.secrets, self.server, name=TARGET, **self.target)]
        )

    def sweep(self, *, hooks: Hooks | None = None, check: bool = True) -> SweepReport:
        """One daemon sweep through the registry's provider; the clock moves on a minute."""

        async def main() -> SweepReport:
            rt = Runtime.build(
                self.config(),
                clock=self.clock,
                store=self.store,
                transports={TARGET: self.server.transport()},
                sentry=lambda kind, message, tags: self.alerts.append((kind, message)),
                hooks=hooks,
            )
            try:
                return await run_sweep(rt)
            finally:
                await rt.providers[TARGET].aclose()

        report = asyncio.run(main())
        if check:
            assert report.targets[0].error is None, report.targets[0].error
        self.clock.advance(timedelta(minutes=1))
        return report

    def rows(self, kind: AuditKind | None = None) -> list[AuditEvent]:
        """The target's audit rows (of one kind)."""
        return self.store.audit.events(target=TARGET, kinds=[str(kind)] if kind else [])

    def outcomes(self, request: Request) -> list[tuple[Action | None, Outcome | None]]:
        """(action, outcome) of the request's outcome rows, in order."""
        return [
            (r.action, r.outcome)
            for r in self.rows(AuditKind.OUTCOME)
            if r.session_id == str(request.id)
        ]

    def posts(self, verb: str = "cancel") -> list[str]:
        """The request ids ``POST .../{id}/{verb}`` reached the scheduler for."""
        return [
            path.split("/")[-2] for path in self.server.calls("act") if path.endswith("/" + verb)
        ]


@pytest.fixture
def world(sqlite_store: Store, clock: FrozenClock, tmp_path: Path) -> World:
    """The ESS world on SQLite (the store's behaviour on both databases is tested elsewhere)."""
    return World(
        store=sqlite_store,
        clock=clock,
        server=EssServer(clock=clock, page_size=3),
        secrets=tmp_path,
    )


# --- cancel and settle ------------------------------------------------------------------------


def test_a_stuck_request_is_cancelled_and_audited_cancelled_once_it_settles(world: World) -> None:
    stuck = world.server.add("GenerateReport", state="RUNNING", since=timedelta(hours=7))
    young = world.server.add("ImportInvoices", state="RUNNING", since=timedelta(hours=1))
    world.apply(STUCK_RUNNING)

    first = world.sweep()
    assert first.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert world.posts() == [str(stuck.id)]
    assert stuck.state == "CANCELLING"
    assert young.state == "RUNNING"

    second = world.sweep()  # still CANCELLING: open, no new call
    assert second.targets[0].settling == 1
    assert world.outcomes(stuck) == [(Action.CANCEL, Outcome.ACCEPTED)]

    world.server.finish(stuck.id)
    third = world.sweep()  # CANCELLED requests are no longer listed: settled from the audit
    assert third.targets[0].reconciled == 1
    assert world.outcomes(stuck) == [
        (Action.CANCEL, Outcome.ACCEPTED),
        (Action.CANCEL, Outcome.EXECUTED),
    ]
    settled = world.rows(AuditKind.OUTCOME)[-1]
    assert "the record is CANCELLED" in settled.reason
    assert world.store.audit.pending_intents(TARGET) == []

    world.sweep()
    assert world.posts() == [str(stuck.id)], "cancelled once"
    assert world.store.audit.verify().ok
    intent = next(r for r in world.rows(AuditKind.INTENT) if r.session_id == str(stuck.id))
    assert intent.session_name == "GenerateReport"
    accepted = world.rows(AuditKind.OUTCOME)[0]
    assert accepted.provider_request_id is not None
    assert accepted.provider_request_id.startswith("ecid-")


def test_a_cancel_that_ends_in_error_is_failed_naming_the_state(world: World) -> None:
    stuck = world.server.add(state="RUNNING", since=timedelta(hours=7))
    world.server.cancel_ends_in = "ERROR"
    world.apply(STUCK_RUNNING)
    world.sweep()
    world.server.finish(stuck.id)

    world.sweep()

    assert world.outcomes(stuck) == [
        (Action.CANCEL, Outcome.ACCEPTED),
        (Action.CANCEL, Outcome.FAILED),
    ]
    assert "ended in ERROR" in world.rows(AuditKind.OUTCOME)[-1].reason
    assert world.store.audit.pending_intents(TARGET) == []


def test_a_request_that_ended_before_the_call_is_skipped_naming_its_state(world: World) -> None:
    stuck = world.server.add(state="RUNNING", since=timedelta(hours=7))
    world.server.faults.append(
        Fault(op="act", before=lambda: world.server.set_state(stuck.id, "SUCCEEDED"))
    )
    world.apply(STUCK_RUNNING)

    world.sweep()

    assert world.outcomes(stuck) == [(Action.CANCEL, Outcome.SKIPPED_CHANGED)]
    row = world.rows(AuditKind.OUTCOME)[-1]
    assert "already ended: it is SUCCEEDED" in row.reason
    assert row.http_status == 400
    assert stuck.cancels == 0


def test_a_crash_after_the_cancel_is_reconciled_from_the_request_s_state(world: World) -> None:
    stuck = world.server.add(state="RUNNING", since=timedelta(hours=7))
    world.apply(STUCK_RUNNING)
    world.sweep(hooks=CrashHooks("after_call"), check=False)  # the outcome row is never written
    assert stuck.state == "CANCELLING"
    assert world.outcomes(stuck) == []

    world.sweep()  # CANCELLING: the cancel is under way, so it was accepted
    assert world.outcomes(stuck) == [(Action.CANCEL, Outcome.ACCEPTED)]
    world.server.finish(stuck.id)
    world.sweep()

    assert world.outcomes(stuck) == [
        (Action.CANCEL, Outcome.ACCEPTED),
        (Action.CANCEL, Outcome.EXECUTED),
    ]
    assert world.posts() == [str(stuck.id)], "never re-issued"


# --- parents and exemptions -------------------------------------------------------------------


def _family(world: World, *, child_submitter: str = "alice") -> tuple[Request, list[Request]]:
    parent = world.server.add("CloseThePeriod", state="RUNNING", since=timedelta(hours=8))
    children = [
        world.server.add(f"Step{i}", state="RUNNING", since=timedelta(hours=7), parent=parent)
        for i in range(3)
    ]
    children[1].submitter = child_submitter
    return parent, children


def test_a_parent_with_three_children_is_cancelled_with_one_call(world: World) -> None:
    parent, children = _family(world)
    world.apply({**STUCK_RUNNING, "max_actions_per_sweep": 4})

    report = world.sweep()

    assert world.posts() == [str(parent.id)], "one POST, to the parent"
    assert report.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert {r.state for r in (parent, *children)} == {"CANCELLING"}
    assert [i.session_id for i in world.rows(AuditKind.INTENT)] == [str(parent.id)]
    waits = {r.session_id for r in world.rows(AuditKind.WAIT)}
    assert waits == {str(c.id) for c in children}, "the children wait for their parent's cancel"

    world.server.finish(parent.id)
    world.sweep()
    assert world.outcomes(parent)[-1] == (Action.CANCEL, Outcome.EXECUTED)
    assert {r.state for r in (parent, *children)} == {"CANCELLED"}
    assert world.posts() == [str(parent.id)]


def test_the_blast_radius_counts_the_children_a_parent_s_cancel_reaches(world: World) -> None:
    _family(world)
    world.apply({**STUCK_RUNNING, "max_actions_per_sweep": 3})

    report = world.sweep()

    assert world.posts() == []
    assert "would act on 4 of 4 sessions" in report.targets[0].blocked[0]


def test_a_request_whose_submitter_is_exempt_is_untouched(world: World) -> None:
    payroll = world.server.add(
        "PayrollRun", state="RUNNING", since=timedelta(hours=9), submitter="svc_payroll"
    )
    other = world.server.add("Report", state="RUNNING", since=timedelta(hours=9))
    world.apply({**STUCK_RUNNING, "exempt": {"owner": ["svc_*"]}})

    world.sweep()
    world.sweep()

    assert world.posts() == [str(other.id)]
    assert payroll.state == "RUNNING"
    [skip] = [r for r in world.rows(AuditKind.SKIP) if r.session_id == str(payroll.id)]
    assert "svc_payroll" in skip.reason
    assert world.outcomes(payroll) == []


def test_a_parent_whose_child_is_exempt_is_not_cancelled(world: World) -> None:
    parent, children = _family(world, child_submitter="svc_payroll")
    world.apply({**STUCK_RUNNING, "exempt": {"owner": ["svc_*"]}})

    world.sweep()

    assert str(parent.id) not in world.posts()
    assert children[1].state == "RUNNING", "the cascade would have reached it"
    [blocked] = [r for r in world.rows(AuditKind.BLOCKED) if r.session_id == str(parent.id)]
    assert str(children[1].id) in blocked.reason
    assert sorted(world.posts()) == sorted([str(children[0].id), str(children[2].id)])


# --- waiting requests, churn ------------------------------------------------------------------


def test_a_request_scheduled_for_later_counts_its_day_from_its_requested_start(
    world: World,
) -> None:
    later = world.server.add(
        "MonthEnd", state="WAIT", since=timedelta(days=3), requested_start=NOW + timedelta(hours=2)
    )
    overdue = world.server.add("Nightly", state="WAIT", since=timedelta(days=2))
    world.apply(STUCK_WAITING)

    world.sweep()
    assert world.posts() == [str(overdue.id)], "waiting two days; the other is not due yet"

    world.clock.advance(timedelta(hours=25))  # 23 hours past its requested start
    world.sweep()
    assert str(later.id) not in world.posts()

    world.clock.advance(timedelta(hours=1))
    world.sweep()
    assert world.posts() == [str(overdue.id), str(later.id)]
    assert later.state == "CANCELLED", "a waiting request is cancelled at once"


def test_a_shrinking_list_of_unfinished_requests_blocks_nothing(world: World) -> None:
    requests = [world.server.add(state="RUNNING", since=timedelta(hours=1)) for _ in range(10)]
    stuck = world.server.add(state="RUNNING", since=timedelta(hours=5, minutes=59))
    world.apply(STUCK_RUNNING)
    world.sweep()
    for request in requests:
        world.server.set_state(request.id, "SUCCEEDED")  # ten of eleven finished

    report = world.sweep()

    assert report.targets[0].blocked == []
    assert world.posts() == [str(stuck.id)]


# --- OAuth2 -----------------------------------------------------------------------------------


def test_an_oauth2_target_keeps_its_token_across_sweeps_and_renews_it(world: World) -> None:
    world.target = {"auth": "oauth2"}
    stuck = world.server.add(state="RUNNING", since=timedelta(hours=7))
    world.apply(STUCK_RUNNING)
    tokens: list[int] = []

    async def daemon() -> None:  # one runtime, several sweeps: how the daemon runs
        rt = Runtime.build(
            world.config(),
            clock=world.clock,
            store=world.store,
            transports={TARGET: world.server.transport()},
        )
        try:
            for minutes in (0, 5, 5, 44, 2):  # the token is due after 55 of its 60 minutes
                world.clock.advance(timedelta(minutes=minutes))
                report = await run_sweep(rt)
                assert report.targets[0].error is None
                tokens.append(world.server.token_requests)
            world.server.revoke_tokens()
            await run_sweep(rt)
            tokens.append(world.server.token_requests)
        finally:
            await rt.providers[TARGET].aclose()

    asyncio.run(daemon())

    assert tokens == [1, 1, 1, 1, 2, 3], "cached, refreshed before expiry, replaced after a 401"
    assert world.posts() == [str(stuck.id)]
    assert world.store.audit.verify().ok


# --- escalation -------------------------------------------------------------------------------


def test_a_cancel_stuck_in_cancelling_is_escalated_to_force_cancel_which_closes_it(
    world: World,
) -> None:
    stuck = world.server.add(
        "RemoteExtract", state="RUNNING", since=timedelta(hours=7), asynchronous=True
    )
    world.apply(STUCK_RUNNING, STUCK_CANCELLING)
    world.sweep()
    assert stuck.state == "CANCELLING"

    world.clock.advance(timedelta(minutes=31))  # CANCELLING for 32 minutes, cancel still open
    world.sweep()

    assert world.posts("forceCancel") == [str(stuck.id)]
    assert stuck.state == "CANCELLED"
    world.sweep()
    assert sorted(world.outcomes(stuck)) == sorted(
        [
            (Action.CANCEL, Outcome.ACCEPTED),
            (Action.FORCE_CANCEL, Outcome.ACCEPTED),
            (Action.FORCE_CANCEL, Outcome.EXECUTED),
            (Action.CANCEL, Outcome.EXECUTED),
        ]
    )
    assert world.store.audit.pending_intents(TARGET) == []
    assert world.alerts == [], "no settle timeout: the cancel was closed, not timed out"
    assert world.posts() == [str(stuck.id)]
