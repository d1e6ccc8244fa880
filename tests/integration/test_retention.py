"""The daemon's housekeeping: history log and expired keeps after history_retention, the
audit trail only when audit_retention is set (off by default), at most once an hour."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from janitor.clock import FrozenClock
from janitor.model import AuditEvent, AuditKind, Keep
from janitor.retention import Retention
from janitor.store import Store
from janitor.store.history import Observed
from tests.conftest import build_runtime, make_config


def _fill(store: Store, clock: FrozenClock) -> None:
    now = clock.now()
    old = now - timedelta(days=500)
    store.audit.append(
        [
            AuditEvent(at=old + timedelta(minutes=i), kind=AuditKind.SKIP, reason="r", actor="a")
            for i in range(3)
        ]
        + [AuditEvent(at=now, kind=AuditKind.SKIP, reason="recent", actor="a")]
    )
    store.observations.save(
        "nb",
        [],
        log=[
            Observed(session_id="s", at=old, fields={"name": "v1"}),
            Observed(session_id="s", at=old + timedelta(days=1), fields={"name": "v2"}),
        ],
    )
    store.keeps.add(
        Keep(
            target="nb",
            session_id="k",
            session_name="k",
            until=now - timedelta(days=40),
            reason="long ago",
            actor="a",
            created_at=now - timedelta(days=41),
        ),
        lasting="1d",
    )


def _run(store: Store, clock: FrozenClock, **settings: object) -> Retention:
    async def main() -> Retention:
        rt = build_runtime(make_config("sqlite://", **settings), store, {}, clock)
        retention = Retention(rt)
        await retention.maybe_run()
        return retention

    return asyncio.run(main())


def test_history_and_expired_keeps_go_audit_rows_stay_by_default(
    store: Store, clock: FrozenClock
) -> None:
    _fill(store, clock)
    _run(store, clock)
    assert store.history.count() == 1, "the superseded row went, the latest stays"
    assert store.keeps.all(clock.now(), expired=True) == []
    assert len(store.audit.events()) == 5, "audit_retention is off by default"


def test_audit_retention_prunes_with_a_checkpoint(store: Store, clock: FrozenClock) -> None:
    _fill(store, clock)
    _run(store, clock, audit_retention=timedelta(days=400))
    kinds = [e.kind for e in store.audit.events()]
    assert kinds == [AuditKind.SKIP, AuditKind.KEEP, AuditKind.CHECKPOINT]
    checkpoint = store.audit.events()[-1]
    assert checkpoint.kind is AuditKind.CHECKPOINT
    assert checkpoint.actor.startswith("janitor@")
    assert checkpoint.details is not None
    assert checkpoint.details["removed"] == 3
    assert store.audit.verify().ok
