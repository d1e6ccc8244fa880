"""The guard wiring of the sweep where `make mutants` found it unguarded
(docs/mutation-testing.md). In-process sweeps against the simulated Jupyter server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from janitor.clock import FrozenClock
from janitor.model import AuditKind
from janitor.store import Store
from janitor.sweep import SweepReport
from tests.fakes.faults import IDLE_POLICY, World, list_sessions


def test_remembered_malformed_records_do_not_count_toward_the_population_guard(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """Ten broken records and one good session, sweep after sweep: janitor remembers one
    session, so the listing did not shrink and the population guard stays out of the way."""
    world = World.create(sqlite_store, clock)
    world.apply()
    session = world.idle("young.ipynb", hours=1)  # the idle policy wants 2h
    broken = [{"id": f"broken-{n}", "path": f"b{n}.ipynb", "kernel": None} for n in range(10)]
    world.transport.mutate(list_sessions, lambda body: [*body, *broken])

    def two_hours_later(index: int, report: SweepReport) -> None:
        if index == 0:
            assert world.sim.deletes == {}, "not idle long enough in the first sweep"
            clock.advance(timedelta(hours=2))

    first, second = asyncio.run(world.sweeps(2, between=two_hours_later))
    assert (first.targets[0].blocked, second.targets[0].blocked) == ([], [])
    assert dict(world.sim.deletes) == {session.id: 1}
    remembered: dict[str, Any] = sqlite_store.observations.load("nb")
    assert set(remembered) == {f"broken-{n}" for n in range(10)}


def test_while_paused_a_sweep_with_only_warnings_due_sends_none(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """Every decision is a warning: the kill switch is still read before the first one."""
    world = World.create(sqlite_store, clock)
    world.apply({**IDLE_POLICY, "grace": "30m"})
    world.idle("a.ipynb")
    world.idle("b.ipynb")
    sqlite_store.pause.set(True, reason="", actor="carol", now=clock.now())
    (report,) = asyncio.run(world.sweeps(1))

    target = report.targets[0]
    assert target.verdicts == {"warn": 2}
    assert target.warned == 0
    assert [r for r in world.events() if r.kind == AuditKind.WARN] == []
    assert target.halted == "janitor is paused by carol"
