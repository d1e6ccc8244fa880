"""The provider kit through whole sweeps, with a provider whose actions are not Jupyter's.

The toy provider (tests/fakes/toy.py, not shipped) stops jobs asynchronously (``accepted``,
then ``STOPPING``, then ``STOPPED``, and the record stays listed), cascades a parent's stop
to its children, and warns by renaming. These tests run janitor's real sweep on it and
assert on what the platform received and what the audit trail says:

* settling: ``accepted`` → ``executed`` after two sweeps; ``accepted`` → ``failed`` when the
  job ends in ``ERROR``; not settled by the deadline → ``failed`` and one alert; a crash
  between the call and its outcome reconciled as ``executed`` for a job that stays STOPPED;
* cascades: a parent with three children, one exempt → no call, one ``blocked`` row naming
  the child; none exempt → one call, the blast radius counting four;
* native warnings: shown once across three sweeps even when the webhook fails, and
  withdrawn, restoring the exact name, when the user returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
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
from tests.fakes.toy import Fault, Job, ToyProvider, ToyServer, toy_config
from tests.fakes.webhook import WebhookReceiver

TARGET = "toy"
IDLE_STOP = {
    "name": "idle-jobs",
    "match": {"state": ["idle"], "idle_for": "1h"},
    "action": "stop",
    "mode": "enforce",
}


class CrashAfterCall(Exception):
    """Stands for the process dying between the call and its outcome row."""


class CrashHooks(Hooks):
    """Raises at one point of the action path, once."""

    def __init__(self, point: str) -> None:
        self.point: str | None = point

    def at(self, point: str) -> None:
        if point == self.point:
            self.point = None
            raise CrashAfterCall(point)


@dataclass
class World:
    """A store, the toy platform, a webhook, and sweeps over them on a frozen clock."""

    store: Store
    clock: FrozenClock
    server: ToyServer
    webhook: WebhookReceiver = field(default_factory=WebhookReceiver)
    faults: list[Fault] = field(default_factory=list)
    alerts: list[tuple[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)

    def apply(self, *specs: dict[str, Any]) -> None:
        """Store policies the way ``policy apply`` does."""
        self.store.policies.apply(
            [PolicySpec.model_validate(s) for s in specs], actor="test", now=self.clock.now()
        )

    def config(self) -> Config:
        """One toy target (its keys are a Jupyter target's), with the webhook configured."""
        target = {**toy_config(TARGET).model_dump(mode="json"), **self.target}
        target["token"] = "toy-token"
        settings = {"notify": {"webhook_url": "http://hook.test/"}, **self.settings}
        return make_config("sqlite://", [target], **settings)

    def sweep(self, *, hooks: Hooks | None = None, preview: bool = False) -> SweepReport:
        """One daemon sweep (``janitor sweep --dry-run`` with ``preview``); the clock moves on
        a minute afterwards."""

        async def main() -> SweepReport:
            config = self.config()
            rt = Runtime.build(
                config,
                clock=self.clock,
                store=self.store,
                webhook_transport=self.webhook.transport(),
                sentry=lambda kind, message, tags: self.alerts.append((kind, message)),
                hooks=hooks,
            )
            await rt.providers[TARGET].aclose()
            rt.providers[TARGET] = ToyProvider.connect(
                config.target(TARGET), self.clock, transport=self.server.transport(self.faults)
            )
            try:
                if preview:
                    return await run_sweep(rt, dry_run=True, record=False)
                return await run_sweep(rt)
            finally:
                await rt.providers[TARGET].aclose()

        report = asyncio.run(main())
        self.clock.advance(timedelta(minutes=1))
        return report

    def rows(self, kind: AuditKind | None = None) -> list[AuditEvent]:
        """The audit rows of the target (of one kind)."""
        kinds = [str(kind)] if kind else []
        return self.store.audit.events(target=TARGET, kinds=kinds)

    def outcomes(self, session_id: str) -> list[Outcome | None]:
        """The outcome rows of one session, in order."""
        return [r.outcome for r in self.rows(AuditKind.OUTCOME) if r.session_id == session_id]

    def job(self, name: str, **kw: Any) -> Job:
        """A running job idle for three hours."""
        return self.server.add(name, idle_for=kw.pop("idle_for", timedelta(hours=3)), **kw)

    def stops(self) -> int:
        """Stop requests that reached the platform."""
        return sum(1 for method, op in self.server.log if method == "POST" and op == "act")

    def renames(self) -> int:
        """Rename (PATCH) requests that reached the platform."""
        return sum(1 for method, _ in self.server.log if method == "PATCH")


@pytest.fixture
def world(sqlite_store: Store, clock: FrozenClock) -> World:
    """The toy world on SQLite (the store's behaviour on both databases is tested elsewhere)."""
    return World(store=sqlite_store, clock=clock, server=ToyServer(clock=clock))


# --- settling -----------------------------------------------------------------------------


def test_an_accepted_stop_is_executed_once_the_job_has_stopped(world: World) -> None:
    job = world.job("etl-nightly")
    world.apply(IDLE_STOP)

    first = world.sweep()
    assert first.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert not first.failed
    assert world.server.jobs[job.id].state == "STOPPING"

    second = world.sweep()  # still stopping: open, no new call
    assert second.targets[0].settling == 1
    assert world.outcomes(job.id) == [Outcome.ACCEPTED]

    world.server.finish(job.id)
    third = world.sweep()
    assert third.targets[0].reconciled == 1
    assert world.outcomes(job.id) == [Outcome.ACCEPTED, Outcome.EXECUTED]
    assert world.stops() == 1
    assert world.server.jobs[job.id].state == "STOPPED", "the record stays, stopped"
    assert world.store.audit.pending_intents(TARGET) == []
    fourth = world.sweep()  # a STOPPED job is never stopped again
    assert fourth.targets[0].outcomes == {}
    assert world.stops() == 1
    assert world.store.audit.verify().ok


def test_an_accepted_stop_that_ends_in_error_is_failed(world: World) -> None:
    job = world.job("etl")
    world.apply(IDLE_STOP)
    world.sweep()
    world.server.finish(job.id, state="ERROR")

    world.sweep()

    [settled] = [r for r in world.rows(AuditKind.OUTCOME) if r.outcome is Outcome.FAILED]
    assert settled.session_id == job.id
    assert "ended in ERROR" in settled.reason
    assert world.store.audit.pending_intents(TARGET) == []


def test_a_stop_that_does_not_settle_in_time_fails_with_one_alert(world: World) -> None:
    job = world.job("stuck")
    world.target = {"settle_timeout": "10m"}
    world.apply(IDLE_STOP)
    world.sweep()
    for _ in range(3):  # within the deadline: open, no alert
        world.sweep()
    assert world.alerts == []

    world.clock.advance(timedelta(minutes=10))
    world.sweep()
    world.sweep()

    assert world.outcomes(job.id) == [Outcome.ACCEPTED, Outcome.FAILED]
    assert "did not settle within 10m" in world.rows(AuditKind.OUTCOME)[-1].reason
    assert [kind for kind, _ in world.alerts] == ["settle_timeout"]
    assert world.stops() == 1, "never re-issued"


def test_a_crash_between_call_and_outcome_is_reconciled_as_executed(world: World) -> None:
    job = world.job("etl")
    world.apply(IDLE_STOP)
    crashed = world.sweep(hooks=CrashHooks("after_call"))
    assert "CrashAfterCall" in (crashed.targets[0].error or "")  # stopped right there
    assert world.outcomes(job.id) == []  # the intent is there, its outcome is not
    world.server.finish(job.id)

    report = world.sweep()

    assert report.targets[0].reconciled == 1
    [closing] = world.rows(AuditKind.OUTCOME)
    assert closing.outcome is Outcome.EXECUTED
    assert closing.reason.startswith("reconciled: stop done: the record is STOPPED")
    assert world.stops() == 1
    assert world.server.jobs[job.id].state == "STOPPED"


def test_a_crash_while_the_stop_is_under_way_is_accepted_then_settled(world: World) -> None:
    job = world.job("etl")
    world.apply(IDLE_STOP)
    world.sweep(hooks=CrashHooks("after_call"))

    world.sweep()  # STOPPING: under way, so accepted (and still open)
    assert world.outcomes(job.id) == [Outcome.ACCEPTED]
    world.server.finish(job.id)
    world.sweep()
    assert world.outcomes(job.id) == [Outcome.ACCEPTED, Outcome.EXECUTED]
    assert world.stops() == 1


def test_a_dry_run_holds_back_a_job_whose_intent_is_open(world: World) -> None:
    job = world.job("etl")
    world.apply(IDLE_STOP)
    world.sweep(hooks=CrashHooks("after_intent"))  # the intent is written, the call never made
    assert world.server.jobs[job.id].state == "RUNNING"

    preview = world.sweep(preview=True)  # reconciles nothing, but holds back what a sweep would

    assert preview.targets[0].settling == 1
    assert preview.targets[0].outcomes == {}, "no would_act while the intent is open"
    assert world.stops() == 0
    world.sweep()  # the daemon reconciles (did not take effect) and decides anew
    assert world.outcomes(job.id) == [Outcome.FAILED, Outcome.ACCEPTED]


# --- cascades -----------------------------------------------------------------------------


def _family(world: World, *, exempt_child: bool) -> tuple[Job, list[Job]]:
    parent = world.job("pipeline")
    children = [
        world.job(f"step-{i}", parent=parent.id, idle_for=timedelta(hours=3)) for i in range(3)
    ]
    if exempt_child:
        children[1].name = "keep-step-1"
    return parent, children


def test_a_cascade_onto_an_exempt_child_blocks_the_parent(world: World) -> None:
    parent, children = _family(world, exempt_child=True)
    world.apply({**IDLE_STOP, "exempt": {"name": ["keep-*"]}})

    report = world.sweep()

    blocked = [r for r in world.rows(AuditKind.BLOCKED) if r.session_id == parent.id]
    assert len(blocked) == 1
    assert "keep-step-1" in blocked[0].reason
    assert children[1].id in blocked[0].reason
    assert world.server.jobs[parent.id].state == "RUNNING", "the parent is not stopped"
    assert world.server.jobs[children[1].id].state == "RUNNING", "nor, through it, the child"
    assert world.server.stops[parent.id] == 0
    # the other children match on their own: each gets its own stop, the exempt one none
    intents = {i.session_id for i in world.rows(AuditKind.INTENT)}
    assert intents == {children[0].id, children[2].id}
    assert report.targets[0].outcomes == {Outcome.ACCEPTED: 2}
    world.sweep()
    assert len([r for r in world.rows(AuditKind.BLOCKED) if r.session_id == parent.id]) == 1


def test_a_cascade_is_one_call_and_counts_every_record_it_reaches(world: World) -> None:
    parent, children = _family(world, exempt_child=False)
    world.apply({**IDLE_STOP, "max_actions_per_sweep": 4})

    report = world.sweep()

    assert world.stops() == 1
    assert report.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert {j.state for j in world.server.jobs.values()} == {"STOPPING"}
    intents = world.rows(AuditKind.INTENT)
    assert [i.session_id for i in intents] == [parent.id]
    waits = {r.session_id for r in world.rows(AuditKind.WAIT)}
    assert waits == {c.id for c in children}, "the children wait for their parent's stop"


def test_the_blast_radius_counts_the_descendants_of_a_cascade(world: World) -> None:
    _family(world, exempt_child=False)
    world.apply({**IDLE_STOP, "max_actions_per_sweep": 3})  # the parent reaches four

    report = world.sweep()

    assert world.stops() == 0
    assert report.targets[0].blocked
    assert "would act on 4 of 4 sessions" in report.targets[0].blocked[0]


# --- native warnings ----------------------------------------------------------------------

GRACE_STOP = {**IDLE_STOP, "grace": "30m"}


def test_a_native_warning_is_shown_once_across_sweeps_while_the_webhook_fails(
    world: World,
) -> None:
    job = world.job("Quarterly report (final)")
    world.apply(GRACE_STOP)
    world.webhook.status = 503

    for _ in range(3):
        world.sweep()

    assert world.renames() == 1, "shown once, never stacked"
    shown = world.server.jobs[job.id].name
    assert shown.startswith("[idle: ")
    assert shown.endswith("] Quarterly report (final)")
    assert shown.count("[idle:") == 1
    warns = [r for r in world.rows(AuditKind.WARN) if r.session_id == job.id]
    assert len(warns) == 3
    assert all(r.outcome is Outcome.FAILED for r in warns), "undelivered: no grace starts"
    assert world.stops() == 0
    native = [r for r in world.rows(AuditKind.INTENT) if r.action is Action.WARN]
    assert len(native) == 1
    assert world.outcomes(job.id) == [Outcome.EXECUTED]  # the rename's own outcome

    world.webhook.status = 200
    world.sweep()  # delivered now: the grace starts
    world.clock.advance(timedelta(minutes=31))
    world.sweep()
    assert world.stops() == 1
    assert world.renames() == 1


def test_a_withdrawn_warning_restores_the_exact_name_when_the_user_returns(world: World) -> None:
    original = "  Mixed CASE [draft] — ü  "
    job = world.job(original)
    world.apply(GRACE_STOP)
    world.sweep()
    assert world.server.jobs[job.id].name != original

    world.server.touch(job.id)  # the user returns within the grace
    world.sweep()

    assert world.server.jobs[job.id].name == original
    assert world.stops() == 0
    withdraws = [r for r in world.rows(AuditKind.INTENT) if r.action is Action.WITHDRAW]
    assert len(withdraws) == 1
    assert world.outcomes(job.id)[-1] is Outcome.EXECUTED
    world.sweep()
    assert world.renames() == 2, "nothing more to withdraw"


def test_no_warning_is_shown_or_withdrawn_while_paused(world: World) -> None:
    job = world.job("nb")
    world.apply(GRACE_STOP)
    world.sweep()
    world.store.pause.set(True, reason="incident", actor="ops", now=NOW)
    world.server.touch(job.id)
    world.sweep()
    assert world.renames() == 1, "the withdraw waits for the resume"
    world.store.pause.set(False, reason="", actor="ops", now=NOW)
    world.sweep()
    assert world.renames() == 2
    assert world.server.jobs[job.id].name == "nb"
