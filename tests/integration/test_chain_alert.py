"""The daemon verifies new audit rows after every sweep and alerts when the chain breaks.

New rows are checked after every sweep (with the last verified row); the whole chain at
start and once an hour. The test calls the check directly instead of running sweeps.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from janitor.clock import FrozenClock
from janitor.daemon import Daemon
from janitor.model import AuditEvent, AuditKind
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import SimTransport


def test_a_tampered_chain_raises_one_alert_until_it_clears(
    store: Store, sim: JupyterSim, clock: FrozenClock
) -> None:
    alerts: list[tuple[str, str]] = []

    def write(n: int) -> None:
        store.audit.append(
            [
                AuditEvent(at=clock.now(), kind=AuditKind.SKIP, reason=f"r{i}", actor="t")
                for i in range(n)
            ]
        )

    async def main() -> None:
        rt = build_runtime(
            make_config(str(store.db.url)),
            store,
            {"nb": SimTransport(sim)},
            clock,
            sentry=lambda kind, message, tags: alerts.append((kind, message)),
        )
        watch = Daemon(rt, health_server=False).chain_watch
        write(3)
        assert await watch.verify()
        assert watch.checkpoint is not None
        first = watch.checkpoint.id
        write(2)
        assert await watch.verify()
        assert watch.checkpoint.id > first, "only the new rows were walked"
        with store.db.engine.begin() as conn:
            conn.execute(
                text("UPDATE audit_events SET reason = 'x' WHERE id = :i"), {"i": first + 1}
            )
        write(1)
        assert await watch.verify(), "an old row is only seen by a full walk"
        assert not await watch.verify(full=True)
        assert not await watch.verify(full=True)  # still broken: no second alert
        with store.db.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_events WHERE id > :i"), {"i": first})
        assert not await watch.verify(), "a truncation below the checkpoint"

    asyncio.run(main())
    assert [kind for kind, _ in alerts] == ["chain_broken"]
    assert "content does not match its hash" in alerts[0][1]
