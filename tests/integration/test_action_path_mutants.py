"""The action path where `make mutants` found it unguarded (docs/mutation-testing.md).

In-process sweeps against the simulated Jupyter server (tests/fakes/faults.py); each test
names what a user or an operator would see if the guard broke.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import text

from janitor.clock import FrozenClock
from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.runtime import Runtime, identity
from janitor.store import Store
from tests.fakes.faults import IDLE_POLICY, World, list_sessions, one
from tests.fakes.jupyter import Fault

#: A lease this short is due for renewal a tenth of a second after it was last renewed.
SHORT_LEASE = timedelta(milliseconds=300)
#: Longer than a third of SHORT_LEASE, shorter than actions.SLOW_RECHECK.
RENEWAL_DUE = 0.15


def _one_idle_session(store: Store, clock: FrozenClock) -> tuple[World, str]:
    world = World.create(store, clock)
    world.settings["lease_ttl"] = SHORT_LEASE
    world.apply()
    return world, world.idle("idle.ipynb").id


def _take_over(store: Store) -> Callable[[], None]:
    """Another replica takes the target's lease (ours released, theirs acquired)."""

    def take_over() -> None:
        ours = store.leases.get("target:nb")
        assert ours is not None
        store.leases.release("target:nb", ours.holder)
        assert store.leases.acquire("target:nb", "replica-b", timedelta(hours=1))

    return take_over


def _open_intents(store: Store, at: datetime, sessions: list[tuple[str, str]]) -> list[AuditEvent]:
    """Intents a replica that died left without an outcome."""
    return store.audit.append(
        [
            AuditEvent(
                at=at,
                kind=AuditKind.INTENT,
                reason="about to delete: idle",
                actor="janitor@old-host",
                sweep_id="old-sweep",
                target="nb",
                session_id=session_id,
                session_name=name,
                session_kind="notebook",
                policy="idle-notebooks",
                policy_version=1,
                action=Action.DELETE,
                fencing_token=7,
            )
            for session_id, name in sessions
        ]
    )


def _outcomes(world: World) -> list[tuple[str | None, str]]:
    return [(r.outcome, r.reason) for r in world.events() if r.kind == AuditKind.OUTCOME]


def test_a_lease_taken_over_before_the_call_stops_the_call_and_says_why(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """Another replica takes the lease while the re-check is in flight: no DELETE."""
    world, session_id = _one_idle_session(sqlite_store, clock)

    world.transport.add(
        Fault(
            when=one("GET", "sessions", session_id),
            delay=RENEWAL_DUE,
            before=_take_over(sqlite_store),
        )
    )
    (report,) = asyncio.run(world.sweeps(1))

    lost = "lease target:nb was taken over while we held it"
    assert world.transport.deletes() == []
    assert report.targets[0].halted == lost
    # outcome rows are fenced (DESIGN 6): the holder that lost the lease writes none; the
    # intent stays open for the successor, which reconciles it
    assert _outcomes(world) == []
    assert len(sqlite_store.audit.pending_intents("nb")) == 1


def test_a_lease_the_database_cannot_renew_before_the_call_fails_the_sweep(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """The renewal before the call fails in the database: no DELETE, and the sweep exits 1
    even though the outcome row could be written."""
    world, session_id = _one_idle_session(sqlite_store, clock)

    def refuse_lease_updates() -> None:
        with sqlite_store.db.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TRIGGER janitor_test_refuse_renewal BEFORE UPDATE ON leases "
                    "BEGIN SELECT RAISE(ABORT, 'lease update refused (injected)'); END"
                )
            )

    world.transport.add(
        Fault(
            when=one("GET", "sessions", session_id),
            delay=RENEWAL_DUE,
            before=refuse_lease_updates,
        )
    )
    (report,) = asyncio.run(world.sweeps(1))

    target = report.targets[0]
    assert world.transport.deletes() == []
    assert target.failed, "a sweep whose lease could not be renewed failed (exit 1)"
    assert target.store_failed
    assert (target.error or "").startswith("the lease cannot be renewed, so nothing is done: ")
    ((outcome, reason),) = _outcomes(world)
    assert outcome == Outcome.BLOCKED
    assert reason.startswith("not done, the lease cannot be renewed: database error")
    assert "lease update refused (injected)" in reason


def test_a_slow_recheck_renews_the_lease_before_the_call_and_the_call_goes_out(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """More than a third of the lease passed since the intent: the lease is renewed (still
    ours), then the DELETE is sent; a renewal skipped would let the lease run out mid-sweep."""
    world, session_id = _one_idle_session(sqlite_store, clock)
    expiry: dict[str, tuple[str, int, datetime]] = {}

    def at(moment: str) -> Callable[[], None]:
        def record() -> None:
            lease = sqlite_store.leases.get("target:nb")
            assert lease is not None
            expiry[moment] = (lease.holder, lease.token, lease.expires_at)

        return record

    world.transport.add(
        Fault(when=one("GET", "sessions", session_id), delay=RENEWAL_DUE, before=at("recheck"))
    )
    world.transport.add(Fault(when=one("DELETE", "sessions", session_id), before=at("call")))
    (report,) = asyncio.run(world.sweeps(1))

    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert [r.path for r in world.transport.deletes()] == [f"/api/sessions/{session_id}"]
    (holder, token, before), (holder_then, token_then, after) = expiry["recheck"], expiry["call"]
    assert (holder_then, token_then) == (holder, token), "renewed, not taken over"
    assert after > before, "the lease was renewed between the re-check and the call"


def test_an_intent_is_never_written_under_a_lease_taken_over_since_the_listing(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """The lease changes hands during the listing and is not due for renewal: the fenced
    intent write is what notices. No intent row, no DELETE."""
    world = World.create(sqlite_store, clock)
    world.apply()
    world.idle("idle.ipynb")
    world.transport.add(Fault(when=list_sessions, before=_take_over(sqlite_store)))
    (report,) = asyncio.run(world.sweeps(1))

    assert world.transport.deletes() == []
    assert [r for r in world.events() if r.kind == AuditKind.INTENT] == []
    theirs = sqlite_store.leases.get("target:nb")
    assert theirs is not None
    assert report.targets[0].halted == (
        f"lease target:nb is no longer ours (token {theirs.token - 1}); "
        f"held by replica-b (token {theirs.token})"
    )


def test_a_session_gone_at_the_recheck_is_already_absent_without_a_call(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    world, session_id = _one_idle_session(sqlite_store, clock)
    world.transport.add(
        Fault(when=one("GET", "sessions", session_id), status=404, body={"message": "gone"})
    )
    (report,) = asyncio.run(world.sweeps(1))

    assert world.transport.deletes() == []
    assert report.targets[0].outcomes == {Outcome.ALREADY_ABSENT: 1}
    assert _outcomes(world) == [
        (Outcome.ALREADY_ABSENT, "the session was already gone at the re-check")
    ]


def test_a_policy_edited_after_the_listing_still_matching_is_skipped_changed(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """The decision was taken on v1; at the re-check v2 decides (the same action, still a
    match): the operator's edit wins, nothing is deleted on the strength of v1."""
    world = World.create(sqlite_store, clock)
    world.apply()
    world.idle("idle.ipynb")
    edited = {**IDLE_POLICY, "match": {**IDLE_POLICY["match"], "idle_for": "1h"}}
    world.transport.add(Fault(when=list_sessions, before=lambda: world.apply(edited)))
    (report,) = asyncio.run(world.sweeps(1))

    assert world.transport.deletes() == []
    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    ((outcome, reason),) = _outcomes(world)
    assert outcome == Outcome.SKIPPED_CHANGED
    assert reason.startswith("the decision changed at the re-check: act, ")
    assert reason.endswith("(policy idle-notebooks v2)")


def test_a_session_renamed_into_an_exempt_glob_before_the_recheck_is_not_deleted(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """The name is not among the fields compared at the re-check: deciding again on the
    fresh record is what sees that the same policy now exempts it."""
    world = World.create(sqlite_store, clock)
    world.apply({**IDLE_POLICY, "exempt": {"name": "keep-*"}})
    session = world.idle("idle.ipynb")

    def rename() -> None:
        session.name = session.path = "keep-idle.ipynb"

    world.transport.add(Fault(when=one("GET", "sessions", session.id), before=rename))
    (report,) = asyncio.run(world.sweeps(1))

    assert world.transport.deletes() == []
    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    ((outcome, reason),) = _outcomes(world)
    assert outcome == Outcome.SKIPPED_CHANGED
    assert reason.startswith(
        "the decision changed at the re-check: skip, exempt: name 'keep-idle.ipynb' matches"
    )


def test_shutdown_begun_during_the_listing_starts_no_action_and_says_so(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    world = World.create(sqlite_store, clock)
    world.apply()
    world.idle("idle.ipynb")
    runtime: list[Runtime] = []

    def shutdown() -> None:
        runtime[0].lifecycle.stopping.set()

    world.transport.add(Fault(when=list_sessions, before=shutdown))
    (report,) = asyncio.run(world.sweeps(1, setup=runtime.append))

    assert world.transport.deletes() == []
    assert [r for r in world.events() if r.kind == AuditKind.INTENT] == []
    assert report.targets[0].halted == "janitor is shutting down"


def test_pending_intents_are_closed_by_this_sweep_under_its_lease(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """Two intents left open by a replica that died: one session is gone, one is still there.
    Each gets its outcome row in this sweep, by this janitor, under this lease's token, with
    the intent's session and action; the session still there is decided anew."""
    world = World.create(sqlite_store, clock)
    world.apply()
    alive = world.idle("still-here.ipynb", hours=0.5)  # not idle long enough to be deleted
    died_at = clock.now()
    opened = _open_intents(
        sqlite_store, died_at, [("gone-1", "gone.ipynb"), (alive.id, "still-here.ipynb")]
    )
    clock.advance(timedelta(minutes=3))
    (report,) = asyncio.run(world.sweeps(1))

    lease = sqlite_store.leases.get("target:nb")
    assert lease is not None
    closed = [r for r in world.events() if r.kind == AuditKind.OUTCOME]
    assert [
        (
            r.intent_id,
            r.session_id,
            r.session_name,
            r.action,
            r.outcome,
            r.sweep_id,
            r.actor,
            r.fencing_token,
            r.at,
        )
        for r in closed
    ] == [
        (
            intent.id,
            intent.session_id,
            intent.session_name,
            Action.DELETE,
            outcome,
            report.sweep_id,
            identity()[0],
            lease.token,
            died_at + timedelta(minutes=3),
        )
        for intent, outcome in zip(opened, (Outcome.ALREADY_ABSENT, Outcome.FAILED), strict=True)
    ]
    assert closed[0].reason == ("reconciled: the record is gone; the delete most likely completed")
    assert closed[1].reason == (
        "reconciled: the record is still idle, so the delete did not take effect; it will be "
        "decided anew"
    )
    assert report.targets[0].reconciled == 2
    assert report.targets[0].outcomes == {}, "closing old intents is not this sweep's outcome"
    assert world.transport.deletes() == []
    assert sqlite_store.audit.pending_intents("nb") == []
    assert sqlite_store.audit.verify().ok


def test_an_intent_that_cannot_be_reconciled_yet_does_not_hold_back_the_others(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    world = World.create(sqlite_store, clock)
    world.apply()
    first, second = _open_intents(
        sqlite_store, clock.now(), [("flaky-1", "flaky.ipynb"), ("gone-2", "gone.ipynb")]
    )
    world.transport.add(
        Fault(when=one("GET", "sessions", "flaky-1"), status=500, body={}, times=100)
    )
    (report,) = asyncio.run(world.sweeps(1))

    # reconciled counts the intents closed; the one that cannot be read stays open (settling)
    assert report.targets[0].reconciled == 1
    assert report.targets[0].settling == 1
    closed = [(r.intent_id, r.outcome) for r in world.events() if r.kind == AuditKind.OUTCOME]
    assert closed == [(second.id, Outcome.ALREADY_ABSENT)]
    assert [i.id for i in sqlite_store.audit.pending_intents("nb")] == [first.id]
