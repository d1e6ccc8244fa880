"""The checks made before every action read without taking SQLite's write lock.

Every writing transaction on SQLite begins IMMEDIATE (it takes the write lock at BEGIN). The
reads made before each call (pause, policy revision, keep, lease) go through
``Database.reading()``, a DEFERRED transaction: in WAL mode they see the last committed state
while a writer holds the lock, instead of queueing behind every audit append of the fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from janitor.model import Keep
from janitor.policy.spec import PolicySpec
from janitor.store import Store
from janitor.store.state import PauseInfo

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

POLICY = {"name": "idle", "match": {"idle_for": "1h"}, "action": "delete"}

READS: dict[str, Callable[[Store], Any]] = {
    "pause": lambda s: s.pause.get(),
    "policy revision": lambda s: s.policies.revision(),
    "policies": lambda s: s.policies.current(),
    "keep": lambda s: s.keeps.get("t", "s1", NOW),
    "before a call": lambda s: s.before_call("t", "s1", NOW),
    "keeps": lambda s: s.keeps.active("t", NOW),
    "lease": lambda s: s.leases.get("target:t"),
    "memory": lambda s: s.observations.load("t"),
}


@pytest.mark.parametrize("read", READS, ids=list(READS))
def test_a_read_before_an_action_does_not_wait_for_a_writer_holding_the_lock(
    sqlite_store: Store, read: str
) -> None:
    holding = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with sqlite_store.db.transaction() as tx:  # BEGIN IMMEDIATE: the write lock
            tx.execute(text("UPDATE leases SET holder = holder"))
            holding.set()
            release.wait(60)

    held = threading.Thread(target=writer)
    held.start()
    try:
        assert holding.wait(10)
        done: list[Any] = []
        reader = threading.Thread(target=lambda: done.append(READS[read](sqlite_store)))
        reader.start()
        # a read that took the write lock would wait for the writer (busy_timeout is 30 s)
        reader.join(10)
        assert done, f"the {read} read waited for the writer's lock"
    finally:
        release.set()
        held.join()


def test_a_read_sees_what_was_committed_before_it(sqlite_store: Store) -> None:
    sqlite_store.pause.set(True, reason="incident", actor="ops", now=NOW)
    assert sqlite_store.pause.get().paused
    sqlite_store.pause.set(False, reason="", actor="ops", now=NOW)
    assert not sqlite_store.pause.get().paused


def test_before_a_call_reads_the_kill_switch_the_revision_and_the_keep_together(
    store: Store,
) -> None:
    """``Store.before_call`` answers what the three reads answer one by one."""
    alone = store.before_call("t", "s1", NOW)
    assert (alone.pause.paused, alone.revision, alone.keep) == (False, 0, None)
    store.pause.set(True, reason="incident", actor="ops", now=NOW)
    store.keeps.add(
        Keep(
            target="t",
            session_id="s1",
            session_name="n",
            until=NOW + timedelta(hours=1),
            reason="demo",
            actor="alice",
            created_at=NOW,
        ),
        lasting="1h",
    )
    store.policies.apply([PolicySpec.model_validate(POLICY)], actor="alice", now=NOW)
    reads = store.before_call("t", "s1", NOW)
    assert reads.pause == store.pause.get()
    assert reads.pause.paused
    assert reads.revision == store.policies.revision() > 0
    assert reads.keep == store.keeps.get("t", "s1", NOW)
    assert reads.keep is not None
    assert store.before_call("t", "other", NOW).keep is None
    assert store.before_call("other", "s1", NOW).keep is None
    assert store.before_call("t", "s1", NOW + timedelta(hours=2)).keep is None  # expired


def _transaction_state(store: Store) -> Callable[[], bool]:
    """A probe: is the driver connection in an explicit transaction (or, on PostgreSQL, not
    in autocommit) at the moment a statement is executed?"""
    seen: list[bool] = []

    def before(conn: Any, *_: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        seen.append(dbapi.in_transaction if store.db.dialect == "sqlite" else not dbapi.autocommit)

    event.listen(store.db.engine, "before_cursor_execute", before)
    return lambda: seen.pop()


def test_a_one_statement_read_opens_no_transaction_and_leaves_none_behind(store: Store) -> None:
    """``read_row`` sends its SELECT with no BEGIN (nor COMMIT) around it, and the pooled
    connection it used is transactional again for the next writer: an audit append on it
    must still commit or roll back as a whole."""
    in_transaction = _transaction_state(store)
    assert store.pause.get() == PauseInfo(paused=False)
    assert in_transaction() is False
    store.before_call("t", "s1", NOW)
    assert in_transaction() is False
    with store.db.transaction() as tx:
        tx.execute(text("UPDATE leases SET holder = holder"))
        assert in_transaction() is True

    def paused_then_failed() -> None:
        with store.db.transaction() as tx:
            tx.execute(
                text(
                    "INSERT INTO pause_state (id, paused, reason, actor, changed_at) "
                    "VALUES (1, true, 'x', 'y', '2026-12-01 12:00:00')"
                )
            )
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        paused_then_failed()
    assert store.pause.get() == PauseInfo(paused=False)
