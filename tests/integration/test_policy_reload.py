"""The daemon re-reads policies every sweep: an edit applies without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from janitor.clock import FrozenClock
from janitor.daemon import Daemon
from janitor.policy.spec import PolicySpec
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import SimTransport


def test_policy_edit_applies_at_the_next_sweep(
    sqlite_store: Store, sim: JupyterSim, clock: FrozenClock
) -> None:
    session = sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    config = make_config(str(sqlite_store.db.url), sweep_interval="1s", sweep_jitter="0s")
    preview = {"name": "idle", "match": {"state": ["idle"], "idle_for": "2h"}, "action": "delete"}
    sqlite_store.policies.apply([PolicySpec.model_validate(preview)], actor="t", now=clock.now())

    async def main() -> None:
        rt = build_runtime(config, sqlite_store, {"nb": SimTransport(sim)}, clock)
        daemon = Daemon(rt, health_server=False)
        running = asyncio.create_task(daemon.run())
        try:
            await _until(lambda: bool(sqlite_store.audit.events(kinds=["outcome"])))
            assert sim.deletes == {}, "dry-run (the default mode) acts on nothing"
            sqlite_store.policies.apply(
                [PolicySpec.model_validate({**preview, "mode": "enforce"})],
                actor="t",
                now=clock.now(),
            )
            await _until(lambda: bool(sim.deletes))
        finally:
            daemon.stop()
            assert await asyncio.wait_for(running, 30) == 0
        assert dict(sim.deletes) == {session.id: 1}
        outcomes = [e.outcome for e in sqlite_store.audit.events(kinds=["outcome"])]
        assert outcomes == ["would_act", "executed"]

    asyncio.run(main())


async def _until(condition: Callable[[], bool], limit: float = 30.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), limit)
