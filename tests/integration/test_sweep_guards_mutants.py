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


def _shared_kernel(world: World, notebooks: dict[str, Any]) -> tuple[str, str]:
    """A notebook and a console on one kernel; an enforced policy deletes idle consoles,
    ``notebooks`` judges the notebook. Returns (notebook id, console id)."""
    consoles = {**IDLE_POLICY, "name": "consoles"}
    consoles["match"] = {**IDLE_POLICY["match"], "kind": ["console"]}
    notebooks = {**IDLE_POLICY, "name": "notebooks", **notebooks}
    notebooks["match"] = {**IDLE_POLICY["match"], "kind": ["notebook"]}
    world.apply(consoles, notebooks)
    notebook = world.idle("notes.ipynb")
    console = world.sim.add_session(
        "console-1", kind="console", kernel=world.sim.kernels[notebook.kernel_id]
    )
    return notebook.id, console.id


def _held_back_only(world: World, notebook: str, console: str) -> None:
    assert world.transport.deletes() == []
    assert set(world.sim.sessions) == {notebook, console}
    (held,) = [r for r in world.events() if r.kind == AuditKind.WAIT]
    assert held.session_id == console
    assert held.reason.startswith("held back: shares its kernel ")
    assert "with notes.ipynb, which is not being acted on" in held.reason


def test_a_session_being_warned_keeps_the_kernel_it_shares_with_one_to_delete(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """The console is due for deletion; the notebook on the same kernel is only being
    warned (its grace has not even started). Deleting the console would end the notebook's
    kernel: it is held back, and nothing is deleted."""
    world = World.create(sqlite_store, clock)
    notebook, console = _shared_kernel(world, {"grace": "30m"})
    (report,) = asyncio.run(world.sweeps(1))

    assert report.targets[0].verdicts == {"warn": 1, "wait": 1}
    _held_back_only(world, notebook, console)


def test_a_dry_run_policy_keeps_the_kernel_its_session_shares_with_one_to_delete(
    sqlite_store: Store, clock: FrozenClock
) -> None:
    """A dry-run policy would delete the notebook, so it is not really acted on: the
    console on its kernel is held back."""
    world = World.create(sqlite_store, clock)
    notebook, console = _shared_kernel(world, {"mode": "dry-run"})
    (report,) = asyncio.run(world.sweeps(1))

    assert report.targets[0].verdicts == {"act": 1, "wait": 1}
    assert report.targets[0].outcomes == {"would_act": 1}
    _held_back_only(world, notebook, console)
