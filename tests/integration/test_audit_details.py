"""The ``details`` column: covered by the row hash, and rows written before it still verify."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import text, update

from janitor.model import AuditEvent, AuditKind
from janitor.store import Database, Store
from janitor.store.audit import GENESIS, compute_hash
from janitor.store.db import alembic_config
from janitor.store.tables import AuditRow

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _old_rows(count: int) -> list[AuditEvent]:
    """Rows as janitor wrote them before ``details`` existed: chained, hashed, no details."""
    rows, prev = [], GENESIS
    for number in range(count):
        event = AuditEvent(
            at=AT + timedelta(seconds=number),
            kind=AuditKind.POLICY_CHANGE,
            reason=f"row {number}",
            actor="admin (cli)",
            prev_hash=prev,
        )
        event = replace(event, hash=compute_hash(event))
        rows.append(event)
        prev = event.hash or GENESIS
    return rows


def test_rows_written_before_the_details_column_still_verify(db_url: str) -> None:
    database = Database(db_url)
    with database.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        for event in _old_rows(3):
            conn.execute(
                text(
                    "INSERT INTO audit_events (at, kind, reason, actor, dry_run, prev_hash, hash)"
                    " VALUES (:at, :kind, :reason, :actor, :dry_run, :prev_hash, :hash)"
                ),
                {
                    "at": event.at
                    if database.dialect == "postgresql"
                    else event.at.strftime("%Y-%m-%d %H:%M:%S.%f"),  # as SQLAlchemy stores it
                    "kind": str(event.kind),
                    "reason": event.reason,
                    "actor": event.actor,
                    "dry_run": False,
                    "prev_hash": event.prev_hash,
                    "hash": event.hash,
                },
            )
    database.dispose()
    store = Store.open(db_url)
    store.db.upgrade()
    try:
        result = store.audit.verify()
        assert result.ok, result.problems
        assert result.rows == 3
        # new rows with details chain onto the old ones
        store.audit.append(
            [
                AuditEvent(
                    at=AT + timedelta(hours=1),
                    kind=AuditKind.POLICY_CHANGE,
                    reason="with details",
                    actor="admin (cli)",
                    details={"diff": "- idle_for: 2h\n+ idle_for: 1h", "version": 2},
                )
            ]
        )
        assert store.audit.verify().ok
        assert store.audit.events()[-1].details == {
            "diff": "- idle_for: 2h\n+ idle_for: 1h",
            "version": 2,
        }
        # giving an old row details afterwards breaks its hash
        first = store.audit.events()[0].id
        with store.db.transaction() as tx:
            tx.execute(update(AuditRow).where(AuditRow.id == first).values(details={}))
        broken = store.audit.verify()
        assert not broken.ok
        assert f"row {first}: content does not match its hash" in broken.problems[0]
    finally:
        store.close()


def test_details_are_covered_by_the_hash(store: Store) -> None:
    [stored] = store.audit.append(
        [
            AuditEvent(
                at=AT,
                kind=AuditKind.POLICY_CHANGE,
                reason="idle-notebooks updated",
                actor="alice (cli)",
                details={"version": 4, "previous_version": 3, "diff": "…"},
            )
        ]
    )
    assert store.audit.verify().ok
    with store.db.transaction() as tx:
        tx.execute(
            update(AuditRow)
            .where(AuditRow.id == stored.id)
            .values(details={"version": 4, "previous_version": 2, "diff": "…"})
        )
    assert not store.audit.verify().ok
    with store.db.transaction() as tx:
        tx.execute(update(AuditRow).where(AuditRow.id == stored.id).values(details=None))
    assert not store.audit.verify().ok, "clearing the details is tampering too"
