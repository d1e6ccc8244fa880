"""T12: audit before act. When the database cannot take the intent, the provider is not called.

Failures are injected in the real databases:

* a trigger that refuses intent rows (SQLite ``RAISE(ABORT)``; PostgreSQL ``RAISE`` with
  SQLSTATE 53100 "disk full" or 40001 "serialization failure"): exactly the intent write
  fails, everything else works;
* SQLite locked by another connection holding ``BEGIN IMMEDIATE`` (the busy timeout lowered
  to 100 ms so the test is quick), from a chosen moment of the sweep on;
* a database that refuses connections from the start.

In each case: no destructive call reaches the server, the sweep reports the store failure
(and does not raise), and the next sweep after the database recovers does the work,
reconciling any intent whose outcome could not be written.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.store import Store
from janitor.sweep import SweepReport
from tests.fakes.faults import World, list_sessions
from tests.fakes.jupyter import Fault

SQLITE_TRIGGER = """
CREATE TRIGGER janitor_test_refuse_intents BEFORE INSERT ON audit_events
WHEN NEW.kind = 'intent'
BEGIN SELECT RAISE(ABORT, '{message} (injected)'); END
"""
#: PostgreSQL SQLSTATE -> the closest SQLite failure
SQLITE_MESSAGE = {"53100": "database or disk is full", "40001": "database is locked"}
PG_FUNCTION = """
CREATE FUNCTION janitor_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure' USING ERRCODE = '{code}'; END $$
"""
PG_TRIGGER = """
CREATE TRIGGER janitor_test_refuse_intents BEFORE INSERT ON audit_events
FOR EACH ROW WHEN (NEW.kind = 'intent') EXECUTE FUNCTION janitor_test_refuse()
"""


def refuse_intents(store: Store, code: str = "53100") -> Callable[[], None]:
    """Make the database refuse intent rows; return what undoes it."""
    with store.db.engine.begin() as conn:
        if store.db.dialect == "sqlite":
            conn.execute(text(SQLITE_TRIGGER.format(message=SQLITE_MESSAGE[code])))
        else:
            conn.execute(text(PG_FUNCTION.format(code=code)))
            conn.execute(text(PG_TRIGGER))

    def undo() -> None:
        with store.db.engine.begin() as conn:
            if store.db.dialect == "sqlite":
                conn.execute(text("DROP TRIGGER janitor_test_refuse_intents"))
            else:
                conn.execute(text("DROP TRIGGER janitor_test_refuse_intents ON audit_events"))
                conn.execute(text("DROP FUNCTION janitor_test_refuse()"))

    return undo


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    """Three idle sessions the idle policy deletes, on each database."""
    w = World.create(store, clock)
    w.apply()
    for i in range(3):
        w.idle(f"idle{i}.ipynb")
    return w


def _destructive(world: World) -> list[Any]:
    return world.transport.deletes()


@pytest.mark.parametrize("code", ["53100", "40001"], ids=["disk-full", "serialization"])
def test_no_intent_no_call(world: World, code: str) -> None:
    undo = refuse_intents(world.store, code)

    def recover(index: int, report: SweepReport) -> None:
        if index == 0:
            target = report.targets[0]
            assert _destructive(world) == []
            assert world.transport.matching("GET", "/api/sessions/") == [], "no re-check either"
            assert target.store_failed
            assert target.failed, "a sweep that could not record its intents failed (exit 1)"
            assert target.halted is not None
            assert "the intent could not be recorded, so nothing is done" in target.halted
            assert target.error == target.halted
            assert rows_of(world, AuditKind.INTENT) == []
            undo()

    _, second = asyncio.run(world.sweeps(2, between=recover))
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 3}
    assert len(_destructive(world)) == 3
    assert world.store.audit.verify().ok


def rows_of(world: World, kind: AuditKind) -> list[Any]:
    """Audit rows of one kind."""
    return [r for r in world.events() if r.kind == kind]


# --- SQLite held by another connection ----------------------------------------------------


@pytest.fixture
def locked_world(sqlite_store: Store, clock: FrozenClock) -> Iterator[tuple[World, Locker]]:
    """Three idle sessions on SQLite, and a second connection that can lock the database."""
    engine = sqlite_store.db.engine

    @event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
        # after janitor's own connect hook (30 s): give up after 100 ms instead
        dbapi_conn.execute("PRAGMA busy_timeout=100")

    engine.dispose()
    w = World.create(sqlite_store, clock, max_concurrency=1)
    w.apply()
    for i in range(3):
        w.idle(f"idle{i}.ipynb")
    database = engine.url.database
    assert database is not None
    locker = Locker(database)
    yield w, locker
    locker.release()


class Locker:
    """Another process's connection that takes SQLite's write lock and holds it."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.held = False

    def take(self) -> None:
        """BEGIN IMMEDIATE: every other writer (and janitor's reads) now wait, then fail."""
        if not self.held:
            self.conn.execute("BEGIN IMMEDIATE")
            self.held = True

    def release(self) -> None:
        """Roll back and let go."""
        if self.held:
            self.conn.execute("ROLLBACK")
            self.held = False


@pytest.mark.parametrize("moment", ["from-the-start", "after-the-listing"])
def test_a_locked_database_means_no_call(locked_world: tuple[World, Locker], moment: str) -> None:
    world, locker = locked_world
    if moment == "from-the-start":
        locker.take()
    else:
        world.transport.after(list_sessions, locker.take)

    def recover(index: int, report: SweepReport) -> None:
        if index == 0:
            target = report.targets[0]
            assert _destructive(world) == []
            assert target.store_failed
            assert target.failed
            assert "database is locked" in (target.error or "")
            if moment == "from-the-start":
                assert world.transport.requests == [], "no lease, no listing"
            locker.release()

    _, second = asyncio.run(world.sweeps(2, between=recover))
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 3}
    assert len(rows_of(world, AuditKind.INTENT)) == 3


def test_a_database_lost_after_the_intent_is_reconciled(locked_world: tuple[World, Locker]) -> None:
    """The intent of the first session is committed, then the database locks up.

    That call is allowed (its intent is durable) and goes out; its outcome cannot be
    written, so janitor stops acting on the target; the next sweep reconciles the intent
    by re-reading the session, and acts on the others.
    """
    world, locker = locked_world
    world.transport.add(
        Fault(when=lambda m, p: m == "GET" and "/api/sessions/" in p, before=locker.take)
    )

    def recover(index: int, report: SweepReport) -> None:
        if index == 0:
            target = report.targets[0]
            assert len(_destructive(world)) == 1, "only the call whose intent was recorded"
            assert target.store_failed
            assert target.halted == "the database is failing"
            locker.release()

    first, second = asyncio.run(world.sweeps(2, between=recover))
    assert first.targets[0].failed
    deleted = _destructive(world)[0].path.rsplit("/", 1)[-1]
    assert second.targets[0].reconciled == 1
    results = [r for r in rows_of(world, AuditKind.OUTCOME) if r.session_id == deleted]
    assert [(r.outcome, r.reason.split(":")[0]) for r in results] == [
        (Outcome.ALREADY_ABSENT, "reconciled")
    ]
    # the reconciled intent is bookkeeping: counted in the metrics, not in this sweep
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 2}
    assert sum(world.sim.deletes.values()) == 3
    assert all(n == 1 for n in world.sim.deletes.values())
    assert world.store.audit.pending_intents("nb") == []


def test_an_unreachable_database_means_no_provider_traffic(clock: FrozenClock) -> None:
    store = Store.open("postgresql://janitor@127.0.0.1:1/nothing")  # connection refused
    try:
        world = World.create(store, clock)
        world.idle("a.ipynb")
        reports = asyncio.run(world.sweeps(2))
    finally:
        store.close()
    for report in reports:
        target = report.targets[0]
        assert target.failed
        assert target.store_failed
        assert "database error" in (target.error or "")
    assert world.transport.requests == []


def test_the_intent_is_committed_before_the_call(world: World) -> None:
    """Each DELETE reaches the server only after its intent row is readable by others."""
    seen: list[bool] = []

    def check(method: str, path: str) -> bool:
        if method == "DELETE":
            session_id = path.rsplit("/", 1)[-1]
            intents = world.store.audit.events(session_id=session_id, kinds=["intent"])
            seen.append(len(intents) == 1)
        return False

    world.transport.add(Fault(when=check, times=10**6))
    (report,) = asyncio.run(world.sweeps(1))
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 3}
    assert seen == [True, True, True]
