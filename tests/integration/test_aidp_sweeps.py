"""Whole sweeps on the aidp provider and the fake AI Data Platform, on a frozen clock.

janitor's real sweep (``run_sweep``) runs against the in-process fake (signatures verified,
etags, ``if-match``); the tests assert on what the platform received and on the audit trail:

* a grace policy warns by renaming the session once, then deletes it after the grace, with
  the etag of the re-check as ``if-match`` and the server's ``opc-request-id`` in the row;
* the user comes back during the grace: the name is restored exactly, nothing is deleted;
* the user renames the session between the re-check and the DELETE: 412, ``skipped_changed``,
  the user's name kept;
* a ``notify`` policy shows the same native warning, as a provider write with its own rows;
* two sessions on one kernel: deleting one would end the other's kernel, so it is held back.
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
from janitor.runtime import Runtime
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import make_config
from tests.fakes.aidp import (
    AidpServer,
    FakeSession,
    Fault,
    aidp_config,
    shared_profile,
    signing_key,
)
from tests.fakes.oci_signing import Verifier

TARGET = "aidp"
IDLE = {
    "name": "idle-notebooks",
    "match": {"state": ["idle"], "idle_for": "1h", "max_connections": 0},
    "action": "delete",
    "mode": "enforce",
}
GRACE = {**IDLE, "grace": "30m"}


@dataclass
class World:
    """A store and the fake platform; sweeps over them on a frozen clock."""

    store: Store
    clock: FrozenClock
    platform: AidpServer
    settings: dict[str, Any] = field(default_factory=dict)

    def apply(self, *specs: dict[str, Any]) -> None:
        """Store policies the way ``policy apply`` does."""
        self.store.policies.apply(
            [PolicySpec.model_validate(s) for s in specs], actor="test", now=self.clock.now()
        )

    def sweep(self) -> SweepReport:
        """One daemon sweep; the clock moves on a minute afterwards."""
        target = aidp_config("http://aidp.test/", shared_profile(), name=TARGET)

        async def main() -> SweepReport:
            config = make_config("sqlite://", [target.model_dump(mode="json")], **self.settings)
            rt = Runtime.build(
                config,
                clock=self.clock,
                store=self.store,
                transports={TARGET: self.platform.transport()},
            )
            try:
                return await run_sweep(rt)
            finally:
                for provider in rt.providers.values():
                    await provider.aclose()

        report = asyncio.run(main())
        self.clock.advance(timedelta(minutes=1))
        return report

    def rows(self, kind: AuditKind | None = None) -> list[AuditEvent]:
        """The audit rows of the target (of one kind)."""
        return self.store.audit.events(target=TARGET, kinds=[str(kind)] if kind else [])

    def session(self, name: str, **kw: Any) -> FakeSession:
        """An ACTIVE session whose kernel has been idle for three hours."""
        return self.platform.add(name, idle_for=kw.pop("idle_for", timedelta(hours=3)), **kw)

    def deletes(self) -> list[str]:
        """Paths of the DELETE requests that reached the platform."""
        return [path for _, _, path in self.platform.requests("act")]


@pytest.fixture
def world(sqlite_store: Store, clock: FrozenClock) -> World:
    """The fake platform trusting janitor's test key, on SQLite."""
    verifier = Verifier()
    verifier.trust(signing_key())
    return World(
        store=sqlite_store, clock=clock, platform=AidpServer(verifier=verifier, clock=clock)
    )


def test_a_warning_renames_the_session_then_it_is_deleted_after_the_grace(world: World) -> None:
    session = world.session("Quarterly churn (final)")
    world.apply(GRACE)

    first = world.sweep()
    assert not first.failed
    assert world.platform.sessions[session.ref].name == (
        "[idle: cleanup at 12:30 UTC] Quarterly churn (final)"
    )
    warn_intent = [r for r in world.rows(AuditKind.INTENT) if r.action is Action.WARN]
    assert len(warn_intent) == 1
    (renamed,) = [r for r in world.rows(AuditKind.OUTCOME) if r.action is Action.WARN]
    assert renamed.outcome is Outcome.EXECUTED
    assert renamed.provider_request_id
    assert "/srv-" in renamed.provider_request_id

    for _ in range(3):  # within the grace: nothing more is written
        world.sweep()
    assert world.platform.renames() == 1, "never renamed twice, never stacked"
    assert world.deletes() == []

    world.clock.advance(timedelta(minutes=30))
    world.sweep()

    assert session.ref not in world.platform.sessions
    assert world.platform.deletes[session.ref] == 1
    delete = [r for r in world.rows(AuditKind.OUTCOME) if r.action is Action.DELETE]
    assert [r.outcome for r in delete] == [Outcome.EXECUTED]
    assert delete[0].session_id == session.ref
    assert delete[0].session_name == "Quarterly churn (final)", "the user's name, not janitor's"
    assert delete[0].http_status == 204
    sent = [rid for m, _, _, rid in world.platform.log if m == "DELETE"]
    assert delete[0].provider_request_id is not None
    assert delete[0].provider_request_id.startswith(f"{sent[0]}/srv-")
    assert world.store.audit.verify().ok


def test_the_user_returns_during_the_grace_and_gets_the_exact_name_back(world: World) -> None:
    original = "  Ünïcode notebook [draft] — v2 "
    session = world.session(original)
    world.apply(GRACE)
    world.sweep()
    assert world.platform.sessions[session.ref].name != original

    world.platform.touch(session.ref)  # the user runs a cell
    world.sweep()

    assert world.platform.sessions[session.ref].name == original
    assert world.deletes() == []
    withdrawn = [r for r in world.rows(AuditKind.OUTCOME) if r.action is Action.WITHDRAW]
    assert [r.outcome for r in withdrawn] == [Outcome.EXECUTED]
    world.clock.advance(timedelta(minutes=45))  # past the old grace, but active 46m ago
    world.sweep()
    assert world.deletes() == []
    assert world.platform.renames() == 2, "warned once, withdrawn once"


def test_a_rename_between_the_recheck_and_the_delete_is_412_and_skipped(world: World) -> None:
    session = world.session("analysis")
    world.apply(IDLE)
    world.platform.inject(
        Fault(op="act", before=lambda: world.platform.user_renames(session.ref, "analysis (mine)"))
    )

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    assert world.platform.sessions[session.ref].name == "analysis (mine)"
    assert len(world.deletes()) == 1, "one DELETE, answered 412, never retried"
    (outcome,) = world.rows(AuditKind.OUTCOME)
    assert outcome.outcome is Outcome.SKIPPED_CHANGED
    assert outcome.http_status == 412
    assert "PreconditionFailed" in outcome.reason
    assert outcome.provider_request_id is not None


def test_a_notify_policy_shows_the_native_warning_once(world: World) -> None:
    session = world.session("exploration")
    world.apply({**IDLE, "name": "tell-them", "action": "notify"})

    world.sweep()
    world.sweep()

    assert world.platform.sessions[session.ref].name == "[idle: may be cleaned up] exploration"
    assert world.platform.renames() == 1
    assert world.deletes() == []
    native = [r for r in world.rows(AuditKind.INTENT) if r.action is Action.WARN]
    assert len(native) == 1, "a provider write, written ahead like an action"


def test_a_session_sharing_its_kernel_with_a_kept_one_is_held_back(world: World) -> None:
    notebook = world.session("shared.ipynb")
    world.session("keep-console", kernel_id=notebook.kernel_id)
    world.apply({**IDLE, "exempt": {"name": ["keep-*"]}})

    world.sweep()

    assert world.deletes() == []
    assert notebook.ref in world.platform.sessions
    waits = [r for r in world.rows(AuditKind.WAIT) if r.session_id == notebook.ref]
    assert waits
    assert "shares its kernel" in waits[0].reason


def test_a_failed_session_is_deleted_by_a_dead_policy(world: World) -> None:
    failed = world.session("broken", lifecycle="FAILED", execution_state="dead")
    creating = world.session("new", lifecycle="CREATING", execution_state="starting")
    world.apply(
        {"name": "dead", "match": {"state": ["dead"]}, "action": "delete", "mode": "enforce"}
    )

    world.sweep()

    assert world.platform.deletes[failed.ref] == 1
    assert creating.ref in world.platform.sessions
