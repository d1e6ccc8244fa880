"""The checks made before every action read without taking SQLite's write lock.

Every writing transaction on SQLite begins IMMEDIATE (it takes the write lock at BEGIN). The
reads made before each call (pause, policy revision, keep, lease) go through
``Database.reading()``, a DEFERRED transaction: in WAL mode they see the last committed state
while a writer holds the lock, instead of queueing behind every audit append of the fleet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from janitor.store import Store

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

READS: dict[str, Callable[[Store], Any]] = {
    "pause": lambda s: s.pause.get(),
    "policy revision": lambda s: s.policies.revision(),
    "policies": lambda s: s.policies.current(),
    "keep": lambda s: s.keeps.get("t", "s1", NOW),
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
