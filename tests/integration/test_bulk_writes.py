"""``execute_many`` stores exactly what SQLAlchemy's own executemany stores.

The bulk writes of a sweep (audit rows, janitor's memory, the session history log) hand the
driver processed tuples instead of going through ``connection.execute(statement, rows)``.
Each statement is written both ways, in a transaction rolled back after each, and the rows
are compared as the driver returns them (SQLite's datetime strings, PostgreSQL's values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.sql.dml import UpdateBase

from janitor.store import Store
from janitor.store import audit as audit_module
from janitor.store import state as state_module
from janitor.store.bulk import execute_many

PARIS = timezone(timedelta(hours=1))
AT = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=PARIS)


def _audit_rows() -> list[dict[str, Any]]:
    base = {
        "at": AT,
        "sweep_id": "5f0c8b1e-0000-4000-8000-000000000000",
        "kind": "decision",
        "target": "nb",
        "session_id": "s-1",
        "session_name": "analyse €.ipynb",
        "session_kind": "notebook",
        "policy": "idle",
        "policy_version": 3,
        "action": "delete",
        "dry_run": False,
        "outcome": None,
        "reason": "idle 3h ≥ 1h",
        "http_status": None,
        "provider_request_id": None,
        "error": None,
        "actor": "janitor@host",
        "fencing_token": 2**40,
        "intent_id": None,
        "details": {"idle": "3h", "nested": {"list": [1, 2.5, None, "x"]}},
        "prev_hash": "0" * 64,
        "hash": "a" * 64,
    }
    return [
        base | {"id": 1},
        base
        | {"id": 2, "details": None, "dry_run": True, "hash": "b" * 64, "at": AT.astimezone(UTC)},
        base
        | {"id": 3, "details": {}, "outcome": "executed", "http_status": 204, "hash": "c" * 64},
    ]


def _observation_rows() -> list[dict[str, Any]]:
    values = {
        "session_name": "n",
        "first_seen": AT,
        "last_seen": AT + timedelta(minutes=5),
        "state": "idle",
        "state_since": AT - timedelta(hours=3),
        "streak_policy": "idle",
        "streak": 2,
        "mark_policy": None,
        "mark_action": None,
        "marked_at": None,
        "warned_at": None,
        "last_key": "idle:3",
        "provider_state": "ACTIVE",
        "original": None,
        "activity": "busy",
        "activity_since": AT,
        "observed": "a4ef43a2a84a73cfca6f164d8f45cc0e",
    }
    return [
        {"target": "nb", "session_id": "s-1"} | values,
        {"target": "nb", "session_id": "s-2"} | values | {"mark_policy": "idle", "marked_at": AT},
    ]


def _history_rows() -> list[dict[str, Any]]:
    return [
        {"target": "nb", "session_id": "s-1", "at": AT, "fields": {"state": "idle"}, "gone": None},
        {"target": "nb", "session_id": "s-2", "at": AT, "fields": None, "gone": "missing"},
    ]


CASES: dict[str, tuple[UpdateBase, str, Callable[[], list[dict[str, Any]]]]] = {
    "audit": (audit_module._INSERT, "audit_events", _audit_rows),
    "memory": (state_module._INSERT_OBSERVATION, "observations", _observation_rows),
    "history": (state_module._INSERT_HISTORY, "session_history", _history_rows),
}


def _stored(
    store: Store,
    table: str,
    write: Callable[[Connection], None],
    *,
    serial: bool = False,
) -> list[tuple[Any, ...]]:
    with store.db.engine.connect() as connection:
        transaction = connection.begin()
        try:
            write(connection)
            result = connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1, 2, 3")
            # a serial id drawn from a PostgreSQL sequence is not rolled back: leave it out
            keep = [i for i, name in enumerate(result.keys()) if not (serial and name == "id")]
            return [tuple(row[i] for i in keep) for row in result]
        finally:
            transaction.rollback()


def _both(
    store: Store, statement: UpdateBase, table: str, rows: Sequence[Mapping[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    serial = "id" not in rows[0]
    expected = _stored(
        store, table, lambda c: c.execute(statement, [dict(r) for r in rows]), serial=serial
    )
    got = _stored(store, table, lambda c: execute_many(c, statement, rows), serial=serial)
    return expected, got


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bulk_insert_stores_what_sqlalchemy_stores(store: Store, case: str) -> None:
    statement, table, rows = CASES[case]
    expected, got = _both(store, statement, table, rows())
    assert len(expected) == len(rows())
    assert got == expected


def test_a_bulk_update_stores_what_sqlalchemy_stores(store: Store) -> None:
    inserted = _observation_rows()
    changed = [
        {"b_target": r["target"], "b_session_id": r["session_id"]}
        | {k: v for k, v in r.items() if k not in ("target", "session_id")}
        | {"streak": 7, "warned_at": AT + timedelta(hours=1), "state": "busy"}
        for r in inserted
    ]

    def write(update: Callable[[Connection], None]) -> Callable[[Connection], None]:
        def both(connection: Connection) -> None:
            connection.execute(state_module._INSERT_OBSERVATION, inserted)
            update(connection)

        return both

    statement = state_module._UPDATE
    expected = _stored(store, "observations", write(lambda c: c.execute(statement, changed)))
    got = _stored(store, "observations", write(lambda c: execute_many(c, statement, changed)))
    assert got == expected
    assert any(7 in row for row in got)


def test_nothing_to_write_sends_nothing(store: Store) -> None:
    assert (
        _stored(
            store, "session_history", lambda c: execute_many(c, state_module._INSERT_HISTORY, [])
        )
        == []
    )


def test_a_naive_datetime_is_still_refused(store: Store) -> None:
    rows = _history_rows()
    rows[0]["at"] = datetime(2026, 12, 1, 12, 0)  # noqa: DTZ001 (the point of the test)
    with pytest.raises(Exception, match="naive datetime"):
        _stored(
            store, "session_history", lambda c: execute_many(c, state_module._INSERT_HISTORY, rows)
        )
