"""The skip and wait rows of a sweep are written while its actions run (ADR 0015).

No action depends on them, and a first sweep over a large target has thousands: written
before the actions, they held back every target's first deletion. They are still all in the
chain by the end of the sweep; if the store fails while writing them, the target halts and
its memory is not saved, so the next sweep writes them again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from janitor.clock import FrozenClock
from janitor.errors import StoreError
from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.sweep import QUIET_CHUNK, SweepReport, run_sweep
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import SimTransport

IDLE = 3
BUSY = QUIET_CHUNK + 20  # more skip rows than one chunk


@pytest.fixture
def fleet(store: Store, sim: JupyterSim, clock: FrozenClock) -> tuple[Store, JupyterSim]:
    store.policies.apply(
        [
            PolicySpec.model_validate(
                {
                    "name": "idle",
                    "match": {"state": ["idle"], "idle_for": "2h"},
                    "action": "delete",
                    "mode": "enforce",
                }
            )
        ],
        actor="test",
        now=clock.now(),
    )
    for i in range(IDLE):
        sim.add_session(f"idle-{i}.ipynb", idle_for=timedelta(hours=3))
    for i in range(BUSY):
        sim.add_session(f"busy-{i}.ipynb", state="busy")
    return store, sim


def _sweep(store: Store, sim: JupyterSim, clock: FrozenClock) -> SweepReport:
    async def main() -> SweepReport:
        rt = build_runtime(make_config(str(store.db.url)), store, {"nb": SimTransport(sim)}, clock)
        try:
            return await run_sweep(rt)
        finally:
            await rt.aclose()

    return asyncio.run(main())


def _kinds(store: Store) -> Counter[str]:
    return Counter(str(e.kind) for e in store.audit.events())


def test_every_skip_row_is_in_the_chain_after_the_sweep(
    fleet: tuple[Store, JupyterSim], clock: FrozenClock
) -> None:
    store, sim = fleet
    report = _sweep(store, sim, clock)
    assert not report.failed
    assert report.targets[0].outcomes[Outcome.EXECUTED] == IDLE
    skipped = [e for e in store.audit.events() if e.kind == AuditKind.SKIP]
    assert sorted(e.session_name or "" for e in skipped) == sorted(
        f"busy-{i}.ipynb" for i in range(BUSY)
    )
    assert store.audit.verify().ok
    assert len(store.observations.load("nb")) == BUSY  # memory saved


def test_a_store_failure_on_the_skip_rows_halts_the_target_and_keeps_the_memory_unsaved(
    fleet: tuple[Store, JupyterSim], clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, sim = fleet
    extend = store.audit.extend

    def failing(rows: list[AuditEvent], *args: Any, **kwargs: Any) -> None:
        if rows and all(e.kind == AuditKind.SKIP for e in rows):
            raise StoreError("database is locked")
        extend(rows, *args, **kwargs)

    monkeypatch.setattr(store.audit, "extend", failing)
    report = _sweep(store, sim, clock)
    target = report.targets[0]
    assert target.store_failed
    assert report.failed
    assert target.halted is not None
    assert "skip and wait rows could not be recorded" in target.halted
    assert _kinds(store)[str(AuditKind.SKIP)] == 0
    assert store.observations.load("nb") == {}, "memory not saved: the rows are written again"

    monkeypatch.setattr(store.audit, "extend", extend)
    clock.advance(timedelta(minutes=5))
    again = _sweep(store, sim, clock)
    assert not again.failed
    assert _kinds(store)[str(AuditKind.SKIP)] == BUSY
    assert store.audit.verify().ok
