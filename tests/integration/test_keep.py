"""``janitor keep``: one session protected from every policy until the keep expires.

Through whole sweeps on the simulated Jupyter server (and the toy provider for cascades):
a kept session gets no action while its neighbours do; the keep expires and the next sweep
acts; a keep written between the listing and the re-check stops the call; removing a keep
lets the policies act again; a kept child blocks its parent's cascade. Every keep and
removal is an audit row.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Keep, Outcome, Verdict
from janitor.policy.engine import decide
from janitor.store import Store
from tests.factories import NOW, policy, session
from tests.fakes.faults import World, list_sessions
from tests.fakes.toy import ToyServer
from tests.integration.test_kit import IDLE_STOP
from tests.integration.test_kit import World as ToyWorld


def keep_of(session_id: str, name: str, until: timedelta, *, now: datetime = NOW) -> Keep:
    return Keep(
        target="nb",
        session_id=session_id,
        session_name=name,
        until=now + until,
        reason="demo on Friday",
        actor="alice (cli)",
        created_at=now,
    )


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    w = World.create(store, clock)
    w.apply()
    return w


def sweep(world: World) -> None:
    asyncio.run(world.sweeps(1))


def test_a_kept_session_is_skipped_by_every_policy_until_its_keep_expires() -> None:
    """The engine's rule (pure): kept, then not, at the instant the keep ends."""
    record = session()
    policies = [policy(), policy(name="notify-all", action="notify", priority=1)]
    keep = keep_of(record.id, record.name, timedelta(hours=1))
    kept = decide(record, policies, NOW, None, keep=keep)
    assert kept.verdict is Verdict.SKIP
    assert kept.code == "kept"
    assert kept.reason == "kept until 2026-11-22 13:00:00 UTC by alice (cli): demo on Friday"
    assert decide(record, policies, NOW + timedelta(minutes=59), None, keep=keep).code == "kept"
    expired = decide(record, policies, NOW + timedelta(hours=1), None, keep=keep)
    assert expired.verdict is Verdict.ACT, "an expired keep protects nothing"


def test_keep_protects_one_session_and_expires(world: World, store: Store) -> None:
    kept = world.idle("report.ipynb")
    other = world.idle("scratch.ipynb")
    store.keeps.add(keep_of(kept.id, "report.ipynb", timedelta(hours=2), now=world.clock.now()),
                    lasting="2h")  # fmt: skip
    sweep(world)
    assert world.sim.deletes[other.id] == 1
    assert world.sim.deletes[kept.id] == 0
    [skip] = [e for e in world.events() if e.session_id == kept.id and e.kind is AuditKind.SKIP]
    assert skip.reason.startswith("kept until ")
    [row] = store.audit.events(kinds=[AuditKind.KEEP])
    assert row.session_id == kept.id
    assert row.actor == "alice (cli)"
    assert row.details is not None
    assert row.details["for"] == "2h"
    assert "kept for 2h until" in row.reason

    world.clock.advance(timedelta(hours=1))
    sweep(world)
    assert world.sim.deletes[kept.id] == 0, "still kept"
    world.clock.advance(timedelta(hours=1, seconds=1))
    sweep(world)
    assert world.sim.deletes[kept.id] == 1, "the keep expired: the policy acts again"
    assert store.audit.verify().ok


def test_a_keep_written_after_the_listing_is_honoured_at_the_recheck(
    world: World, store: Store
) -> None:
    kept = world.idle("report.ipynb")
    other = world.idle("scratch.ipynb")
    world.transport.after(
        list_sessions,
        lambda: store.keeps.add(
            keep_of(kept.id, "report.ipynb", timedelta(days=1), now=world.clock.now()),
            lasting="1d",
        ),
    )
    sweep(world)
    assert world.sim.deletes[kept.id] == 0, "no DELETE after the keep"
    assert world.sim.deletes[other.id] == 1
    outcomes = [
        e for e in world.events() if e.session_id == kept.id and e.kind is AuditKind.OUTCOME
    ]
    assert [o.outcome for o in outcomes] == [Outcome.SKIPPED_CHANGED]
    assert "the decision changed at the re-check: skip, kept until" in outcomes[0].reason


def test_removing_a_keep_lets_the_policies_act_again(world: World, store: Store) -> None:
    kept = world.idle("report.ipynb")
    store.keeps.add(keep_of(kept.id, "report.ipynb", timedelta(days=3), now=world.clock.now()),
                    lasting="3d")  # fmt: skip
    sweep(world)
    assert world.sim.deletes[kept.id] == 0
    removed = store.keeps.remove("nb", kept.id, actor="bob (cli)", now=world.clock.now())
    assert removed.reason == "demo on Friday"
    [unkeep] = store.audit.events(kinds=[AuditKind.UNKEEP])
    assert unkeep.actor == "bob (cli)"
    assert "removed by bob (cli)" in unkeep.reason
    sweep(world)
    assert world.sim.deletes[kept.id] == 1


def test_a_kept_child_blocks_its_parents_cascade(sqlite_store: Store, clock: FrozenClock) -> None:
    toy = ToyWorld(store=sqlite_store, clock=clock, server=ToyServer(clock=clock))
    parent = toy.job("pipeline")
    children = [toy.job(f"step-{i}", parent=parent.id) for i in range(3)]
    toy.apply(IDLE_STOP)
    sqlite_store.keeps.add(
        Keep(
            target="toy",
            session_id=children[1].id,
            session_name="step-1",
            until=clock.now() + timedelta(days=1),
            reason="rerunning by hand",
            actor="alice (cli)",
            created_at=clock.now(),
        ),
        lasting="1d",
    )
    toy.sweep()
    [blocked] = [r for r in toy.rows(AuditKind.BLOCKED) if r.session_id == parent.id]
    assert "it would reach a protected child, step-1" in blocked.reason
    assert "kept until" in blocked.reason
    assert toy.server.stops[parent.id] == 0
    assert toy.server.jobs[children[1].id].state == "RUNNING"
    stopped = {i.session_id for i in toy.rows(AuditKind.INTENT)}
    assert stopped == {children[0].id, children[2].id}, "the others are stopped one by one"
