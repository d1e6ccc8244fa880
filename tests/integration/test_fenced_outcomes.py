"""Outcome rows are fenced like intents (DESIGN 6): a holder that lost its lease during a call
writes no outcome; the intent stays open for its successor to reconcile, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.runtime import Runtime
from janitor.store import Store
from tests.fakes.faults import World, one
from tests.fakes.jupyter import Fault


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    w = World.create(store, clock)
    w.apply()
    return w


def test_a_holder_that_lost_its_lease_during_the_call_writes_no_outcome(world: World) -> None:
    session = world.idle("a.ipynb")
    holder: list[str] = []

    def take_over() -> None:  # while the DELETE is on its way, another replica takes over
        world.store.leases.release("target:nb", holder[0])
        taken = world.store.leases.acquire("target:nb", "successor:1:abcd", timedelta(minutes=5))
        assert taken is not None

    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), before=take_over))

    def remember(rt: Runtime) -> None:
        holder.append(rt.holder)

    [report] = asyncio.run(world.sweeps(setup=remember))

    assert world.sim.deletes[session.id] == 1, "the call had left before the takeover"
    [intent] = world.store.audit.events(kinds=[str(AuditKind.INTENT)])
    outcomes = [
        e
        for e in world.store.audit.events(kinds=[str(AuditKind.OUTCOME)])
        if e.intent_id == intent.id
    ]
    assert outcomes == [], "no outcome under a stale fencing token"
    assert world.store.audit.pending_intents("nb") == [intent], "left to the successor"
    assert "no longer ours" in (report.targets[0].halted or "")
    assert world.store.audit.verify().ok


def test_the_successor_reconciles_what_the_stale_holder_could_not_record(world: World) -> None:
    session = world.idle("a.ipynb")
    holder: list[str] = []

    def take_over() -> None:
        world.store.leases.release("target:nb", holder[0])
        world.store.leases.acquire("target:nb", "successor:1:abcd", timedelta(seconds=0))

    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), before=take_over))
    asyncio.run(world.sweeps(setup=lambda rt: holder.append(rt.holder)))
    world.clock.advance(timedelta(minutes=1))

    asyncio.run(world.sweeps())  # the successor's lease expired at once: this sweep takes it

    [intent] = world.store.audit.events(kinds=[str(AuditKind.INTENT)])
    [closing] = [
        e
        for e in world.store.audit.events(kinds=[str(AuditKind.OUTCOME)])
        if e.intent_id == intent.id
    ]
    assert closing.outcome is Outcome.ALREADY_ABSENT
    assert closing.reason.startswith("reconciled: ")
    assert (closing.fencing_token or 0) > (intent.fencing_token or 0)
