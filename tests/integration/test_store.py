"""The store on SQLite and PostgreSQL: aware UTC times, migrations, observations, pause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from janitor.errors import ConfigError, SchemaOutdated, StoreError
from janitor.model import AuditEvent, AuditKind, History, Mark, State
from janitor.store import Database, Store
from janitor.store.db import alembic_config, normalize_url
from janitor.store.tables import Base, SweepRow

KOLKATA = timezone(timedelta(hours=5, minutes=30))


def test_timestamps_come_back_aware_utc_whatever_offset_went_in(store: Store) -> None:
    written = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=KOLKATA)
    store.sweeps.start("s1", at=written, actor="t", dry_run=False)
    with store.db.transaction() as tx:
        row = tx.scalar(select(SweepRow))
        assert row is not None
        assert row.started_at == written
        assert row.started_at.tzinfo is UTC
        assert row.started_at.isoformat() == "2026-01-01T06:30:00.123456+00:00"


def test_naive_timestamps_are_refused(store: Store) -> None:
    naive = datetime(2026, 1, 1, 12, 0)  # noqa: DTZ001 (the point of the test)
    with pytest.raises(StoreError):
        store.sweeps.start("s2", at=naive, actor="t", dry_run=False)


def test_migrations_match_the_models_and_go_down_and_up(db_url: str) -> None:
    database = Database(db_url)
    database.upgrade()
    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], "models and migrations differ: write a migration"
    with database.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")
    assert database.current_revision() is None
    with pytest.raises(SchemaOutdated, match="run `janitor db upgrade`"):
        database.check_schema()
    database.upgrade()
    assert database.schema_is_current()
    database.dispose()


def test_observations_round_trip_and_forget_sessions_no_longer_listed(store: Store) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    marked = History(
        first_seen=now - timedelta(days=1),
        state=State.IDLE,
        state_since=now - timedelta(hours=3),
        streak_policy="idle",
        streak=2,
        mark=Mark(policy="idle", marked_at=now, warned_at=now),
        last_key="k",
    )
    plain = History(first_seen=now, state=State.BUSY, state_since=now)
    store.observations.save("nb", [("a", "a.ipynb", marked), ("b", "b.ipynb", plain)])
    assert store.observations.load("nb") == {"a": marked, "b": plain}
    store.observations.save("nb", [("b", "b.ipynb", plain)])
    assert set(store.observations.load("nb")) == {"b"}
    assert store.observations.load("other") == {}


def test_pause_and_resume_are_audited(store: Store) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert not store.pause.get().paused
    store.pause.set(True, reason="incident 42", actor="alice (cli)", now=now)
    state = store.pause.get()
    assert (state.paused, state.reason, state.actor) == (True, "incident 42", "alice (cli)")
    store.pause.set(False, reason="", actor="alice (cli)", now=now)
    rows = store.audit.events()
    assert [r.kind for r in rows] == [AuditKind.PAUSE, AuditKind.RESUME]
    assert rows[0].reason == "janitor paused by alice (cli): incident 42"
    assert store.audit.verify().ok


def test_audit_chain_links_rows(store: Store) -> None:
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    stored = store.audit.append(
        [AuditEvent(at=now, kind=AuditKind.SKIP, reason=f"r{i}", actor="t") for i in range(3)]
    )
    assert stored[0].prev_hash == "0" * 64
    assert stored[1].prev_hash == stored[0].hash
    assert store.audit.head() == (3, stored[2].hash)
    result = store.audit.verify()
    assert (result.ok, result.rows, result.head) == (True, 3, stored[2].hash)


def test_unreachable_database_is_a_store_error_without_the_password() -> None:
    database = Database("postgresql://janitor:hunter2@127.0.0.1:9/janitor")
    with pytest.raises(StoreError) as info:
        database.current_revision()
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1:9" in str(info.value)
    database.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/db", "unsupported database 'mysql'"),
        ("sqlite://", "needs a file path"),
        ("not a url", "is not a database URL"),
    ],
)
def test_database_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normalize_url(url)
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
