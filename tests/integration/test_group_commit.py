"""Group commit of audit appends (ADR 0014), on SQLite and PostgreSQL.

Batches are made deterministic by holding the chain's lock from another connection: the first
append leads and waits for the lock inside its transaction, every append after it queues, and
when the lock is released the leader takes them all and writes them in its transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import event, text

from janitor.errors import LeaseLost, StoreError
from janitor.model import AuditEvent, AuditKind
from janitor.store import Database, Store
from janitor.store.audit import INSERT_CHUNK, MAX_BATCH_ROWS, Fence
from janitor.store.db import advisory_xact_lock

HANG = 30.0  # a guard against hangs, never a timing assertion
AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def rows(label: str, count: int = 1) -> list[AuditEvent]:
    """``count`` intent rows whose session ids start with ``label``."""
    return [
        AuditEvent(
            at=AT,
            kind=AuditKind.INTENT,
            reason=f"intent {label}/{i}",
            actor="janitor@test",
            target="nb",
            session_id=f"{label}/{i}",
        )
        for i in range(count)
    ]


def fence_for(store: Store, lease: str, holder: str = "replica-a") -> Fence:
    """Take ``lease`` and return its fence."""
    info = store.leases.acquire(lease, holder, timedelta(hours=1))
    assert info is not None
    return Fence(lease=lease, holder=holder, token=info.token)


@contextlib.contextmanager
def chain_locked(store: Store) -> Iterator[None]:
    """Hold the audit chain's lock from another engine's connection until the block ends."""
    other = Database(store.db.url.render_as_string(hide_password=False))
    try:
        with other.engine.connect() as conn, conn.begin():  # BEGIN IMMEDIATE on SQLite
            if other.dialect == "postgresql":
                advisory_xact_lock(conn, "audit")
            yield
    finally:
        other.dispose()


@contextlib.contextmanager
def commits_counted(store: Store) -> Iterator[list[int]]:
    """Count the COMMITs janitor's engine issues while the block runs."""
    counter = [0]

    def on_commit(_conn: object) -> None:
        counter[0] += 1

    event.listen(store.db.engine, "commit", on_commit)
    try:
        yield counter
    finally:
        event.remove(store.db.engine, "commit", on_commit)


class Appender:
    """One append in its own thread; ``result`` or ``error`` once it returned."""

    def __init__(
        self,
        store: Store,
        events: Sequence[AuditEvent],
        fence: Fence | None,
        *,
        returning: bool = True,
    ) -> None:
        self.returning = returning
        self.result: list[AuditEvent] | None = None
        self.error: BaseException | None = None
        self.seen_at_return: list[int] = []
        self._store, self._events, self._fence = store, events, fence
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.returning:
                self.result = self._store.audit.append(self._events, fence=self._fence)
            else:
                self._store.audit.extend(self._events, fence=self._fence)
                self.result = []
            self.seen_at_return = visible_ids(self._store.db)
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            self.error = exc

    def join(self) -> None:
        self._thread.join(HANG)
        assert not self._thread.is_alive(), "an append hung"


def visible_ids(db: Database) -> list[int]:
    """The audit row ids a separate plain reader connection sees now (on SQLite a deferred
    read in WAL, which does not wait for a writer)."""
    query = "SELECT id FROM audit_events ORDER BY id"
    if db.path is not None:
        conn = sqlite3.connect(db.path)
        try:
            return [row[0] for row in conn.execute(query)]
        finally:
            conn.close()
    url = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as pg:
        return [row[0] for row in pg.execute(query)]


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.002)


def one_batch(
    store: Store,
    requests: Sequence[tuple[list[AuditEvent], Fence | None]],
    *,
    returning: Sequence[bool] = (),
) -> tuple[Appender, list[Appender], int]:
    """A leader appends while the chain is locked elsewhere, ``requests`` queue behind it in
    order; then the lock goes. Returns (leader, the queued appenders, commits issued).
    ``returning[k]`` False: request ``k`` is an ``extend``, not an ``append``."""
    with commits_counted(store) as commits:
        with chain_locked(store):
            leader = Appender(store, rows("leader"), None)
            wait_until(lambda: store.audit.group.queued == 1)
            queued = []
            for k, (events, fence) in enumerate(requests):
                wants = returning[k] if k < len(returning) else True
                queued.append(Appender(store, events, fence, returning=wants))
                count = len(queued) + 1
                wait_until(lambda count=count: store.audit.group.queued == count)  # type: ignore[misc]
        for appender in (leader, *queued):
            appender.join()
        return leader, queued, commits[0]


def stored(store: Store) -> list[AuditEvent]:
    return store.audit.events()


def test_appends_queued_behind_a_write_share_one_transaction_in_order(store: Store) -> None:
    fence = fence_for(store, "nb")
    requests = [(rows(f"r{k}", k + 1), fence) for k in range(5)]
    leader, queued, commits = one_batch(store, requests)
    assert commits == 1  # the leader took all five queued behind it into its transaction
    assert leader.error is None
    assert all(a.error is None for a in queued)
    chain = stored(store)
    expected = [e.session_id for a in (leader, *queued) for e in (a.result or [])]
    assert [e.session_id for e in chain] == expected  # arrival order, each request contiguous
    assert [e for a in (leader, *queued) for e in (a.result or [])] == chain
    assert store.audit.verify().ok


def test_a_lost_fence_fails_only_its_own_request(store: Store) -> None:
    ours = fence_for(store, "nb")
    other = fence_for(store, "other-target")
    stale = Fence(lease="nb", holder=ours.holder, token=ours.token - 1)
    foreign = Fence(lease="nb", holder="replica-b", token=ours.token)
    requests = [
        (rows("before"), ours),
        (rows("stale", 3), stale),
        (rows("mid"), other),
        (rows("foreign", 2), foreign),
        (rows("after", 2), ours),
    ]
    _, queued, commits = one_batch(store, requests)
    assert commits == 1
    before, stale_one, mid, foreign_one, after = queued
    assert isinstance(stale_one.error, LeaseLost)
    assert isinstance(foreign_one.error, LeaseLost)
    assert stale_one.result is None
    assert foreign_one.result is None
    for appender in (before, mid, after):
        assert appender.error is None
        assert appender.result is not None
    sessions = {e.session_id or "" for e in stored(store)}
    assert not any(s.startswith(("stale/", "foreign/")) for s in sessions)
    assert {"before/0", "mid/0", "after/0", "after/1"} <= sessions
    assert store.audit.verify().ok


def install_poison(store: Store, *, at_commit: bool) -> None:
    """A trigger that fails the insert of a row whose reason contains 'poison' (at the
    INSERT, or on PostgreSQL at COMMIT with a deferred constraint trigger)."""
    with store.db.engine.begin() as conn:
        if store.db.dialect == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON audit_events "
                    "WHEN NEW.reason LIKE '%poison%' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
            )
            return
        conn.execute(
            text(
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.reason LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned row'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        timing = (
            "CONSTRAINT TRIGGER poison AFTER INSERT ON audit_events DEFERRABLE INITIALLY DEFERRED"
            if at_commit
            else "TRIGGER poison BEFORE INSERT ON audit_events"
        )
        conn.execute(text(f"CREATE {timing} FOR EACH ROW EXECUTE FUNCTION poison()"))


def check_failed_batch(store: Store, *, at_commit: bool) -> None:
    """A batch with one poisoned request: every queued request fails, none of it is stored."""
    install_poison(store, at_commit=at_commit)
    fence = fence_for(store, "nb")
    poisoned = [
        AuditEvent(at=AT, kind=AuditKind.INTENT, reason="poison", actor="x", session_id="p")
    ]
    requests = [(rows("a"), fence), (poisoned, fence), (rows("b", 2), None)]
    leader, queued, _ = one_batch(store, requests)
    assert all(isinstance(a.error, StoreError) for a in (leader, *queued))
    assert not any(isinstance(a.error, LeaseLost) for a in (leader, *queued))
    assert stored(store) == []
    assert store.audit.verify().ok
    assert store.audit.append(rows("later"), fence=fence)[0].session_id == "later/0"
    assert store.audit.verify().ok


def test_a_failed_insert_fails_every_request_of_the_batch(store: Store) -> None:
    check_failed_batch(store, at_commit=False)


@pytest.mark.postgres
def test_a_failed_commit_fails_every_request_of_the_batch(postgres_url: str) -> None:
    """On PostgreSQL a deferred constraint trigger fails the COMMIT itself."""
    pg = Store.open(postgres_url)
    pg.db.upgrade()
    try:
        check_failed_batch(pg, at_commit=True)
    finally:
        pg.close()


def test_no_append_returns_before_its_transaction_committed(store: Store) -> None:
    """Each caller looks from another connection as soon as append returned: its rows are
    there. Commits are slowed down, so a caller woken before the commit would see nothing."""

    def slow_commit(_conn: object) -> None:
        time.sleep(0.2)

    event.listen(store.db.engine, "commit", slow_commit)
    try:
        requests = [(rows(f"q{k}"), None) for k in range(3)]
        leader, queued, _ = one_batch(store, requests)
    finally:
        event.remove(store.db.engine, "commit", slow_commit)
    for appender in (leader, *queued):
        assert appender.error is None
        assert appender.result is not None
        mine = [e.id for e in appender.result]
        assert set(mine) <= set(appender.seen_at_return), "returned before the commit"


def test_many_threads_build_one_verified_chain_with_every_row_once(store: Store) -> None:
    """Appenders from several targets at once, with policy-store writes (append_in, in their
    own transactions) interleaved: every row once, ids as returned, the chain verifies."""
    fences = [fence_for(store, f"t{k}") for k in range(8)]
    returned: list[AuditEvent] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def appender(k: int) -> None:
        try:
            for i in range(25):
                got = store.audit.append(rows(f"t{k}/{i}", 1 + i % 3), fence=fences[k])
                with lock:
                    returned.extend(got)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    def pauser() -> None:
        try:
            for i in range(10):
                store.pause.set(i % 2 == 0, reason=f"p{i}", actor="ops", now=AT)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            failures.append(exc)

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(8)]
    threads.append(threading.Thread(target=pauser))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG * 4)
    assert not failures
    chain = stored(store)
    intents = [e for e in chain if e.kind is AuditKind.INTENT]
    expected_rows = sum(1 + i % 3 for i in range(25)) * 8
    assert len(intents) == expected_rows
    assert len({e.session_id for e in intents}) == expected_rows
    assert sum(1 for e in chain if e.kind in (AuditKind.PAUSE, AuditKind.RESUME)) == 10
    by_id = {e.id: e for e in chain}
    assert all(by_id[e.id] == e for e in returned)
    assert len(returned) == expected_rows
    for k in range(8):  # each request's rows contiguous, each appender's in its own order
        mine = [e for e in chain if (e.session_id or "").startswith(f"t{k}/")]
        assert [e.session_id for e in mine] == [
            f"t{k}/{i}/{j}" for i in range(25) for j in range(1 + i % 3)
        ]
    result = store.audit.verify()
    assert result.ok, result.problems
    assert result.rows == len(chain)


def test_a_large_append_is_one_transaction_with_ids_in_order(store: Store) -> None:
    store.audit.append(rows("first"))
    big = rows("big", MAX_BATCH_ROWS * 2 + 500)
    with commits_counted(store) as commits:
        written = store.audit.append(big)
    assert commits[0] == 1
    ids = [e.id or 0 for e in written]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(big)
    assert store.audit.events() == [*store.audit.events(limit=1), *written]
    assert store.audit.verify().ok


def short_lease(store: Store, lease: str, seconds: float) -> Fence:
    """A lease for ``replica-a`` that expires ``seconds`` from now."""
    info = store.leases.acquire(lease, "replica-a", timedelta(seconds=seconds))
    assert info is not None
    return Fence(lease=lease, holder="replica-a", token=info.token)


def test_a_writer_that_waited_for_the_lock_past_its_lease_gets_lease_lost(store: Store) -> None:
    """The fence is judged when the lock is held, by the time then (``clock_timestamp()`` on
    PostgreSQL, not the transaction's start)."""
    fence = short_lease(store, "nb", 1.0)
    with chain_locked(store):
        late = Appender(store, rows("late"), fence)
        wait_until(lambda: store.audit.group.queued == 1)
        time.sleep(1.5)  # the lease expires while the append waits for the lock
    late.join()
    assert isinstance(late.error, LeaseLost)
    assert stored(store) == []


def test_a_takeover_waits_until_the_batch_that_checked_the_fence_has_committed(
    store: Store,
) -> None:
    """Between its fence check and its commit, a batch keeps the lease from being taken over
    (``FOR SHARE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite): whoever takes the lease next
    sees the intent written under the old token."""
    fence = short_lease(store, "nb", 1.0)
    in_commit, release = threading.Event(), threading.Event()

    def hold_first_commit(_conn: object) -> None:
        if not in_commit.is_set():
            in_commit.set()
            release.wait(HANG)

    event.listen(store.db.engine, "commit", hold_first_commit)
    seen_by_new_holder: list[list[int]] = []

    def take_over() -> None:
        assert store.leases.acquire("nb", "replica-b", timedelta(minutes=5)) is not None
        seen_by_new_holder.append(visible_ids(store.db))

    try:
        intent = Appender(store, rows("intent"), fence)
        assert in_commit.wait(HANG)  # fenced and written, its commit held
        time.sleep(1.5)  # the lease has expired: a takeover is now allowed
        thief = threading.Thread(target=take_over)
        thief.start()
        time.sleep(0.5)  # time enough to take the lease over, were it not locked
        release.set()
        intent.join()
        thief.join(HANG)
    finally:
        release.set()
        event.remove(store.db.engine, "commit", hold_first_commit)
    assert intent.error is None
    assert intent.result is not None
    assert seen_by_new_holder == [[intent.result[0].id]]


def test_an_append_larger_than_a_chunk_keeps_its_ids_and_chain_in_order(store: Store) -> None:
    """A first sweep's decision rows are inserted a chunk at a time: the ids returned are the
    stored rows', rising in chain order across the chunks, and the chain verifies."""
    store.audit.append(rows("before", 3))
    count = 2 * INSERT_CHUNK + 7
    written = store.audit.append(rows("big", count))
    ids = [e.id for e in written]
    assert len(ids) == count
    assert all(i is not None for i in ids)
    assert ids == sorted(ids), "ids rise in chain order"
    assert len(set(ids)) == count, "no id is given twice"
    assert stored(store)[3:] == written, "what was returned is what was stored"
    assert [e.session_id for e in written] == [f"big/{i}" for i in range(count)]
    assert store.audit.verify().ok


def unlinked(events: Sequence[AuditEvent]) -> list[AuditEvent]:
    """``events`` without what the store sets (id, prev_hash, hash)."""
    return [replace(e, id=None, prev_hash=None, hash=None) for e in events]


def test_extend_stores_a_request_larger_than_a_chunk_in_order_and_returns_nothing(
    store: Store,
) -> None:
    """``extend`` (a sweep's decision rows) writes like ``append`` without building the
    stored rows: every event is stored, in order, with ids rising by one, and the chain
    verifies."""
    store.audit.append(rows("before", 3))
    count = 2 * INSERT_CHUNK + 7
    events = rows("big", count)
    assert store.audit.extend(events) is None  # type: ignore[func-returns-value]
    chain = stored(store)[3:]
    assert unlinked(chain) == events
    first = chain[0].id
    assert first is not None
    assert [e.id for e in chain] == list(range(first, first + count))
    assert store.audit.verify().ok


def test_extend_under_a_lost_fence_raises_and_writes_nothing(store: Store) -> None:
    ours = fence_for(store, "nb")
    stale = Fence(lease="nb", holder=ours.holder, token=ours.token - 1)
    with pytest.raises(LeaseLost):
        store.audit.extend(rows("stale", 3), fence=stale)
    assert stored(store) == []
    store.audit.extend(rows("ours", 2), fence=ours)
    assert [e.session_id for e in stored(store)] == ["ours/0", "ours/1"]


def test_appends_batched_with_an_extend_get_back_exactly_their_stored_rows(
    store: Store,
) -> None:
    """An extend between appends in one transaction: each append returns its own stored
    rows (ids and hashes as stored), the extend's rows lie between them in the chain."""
    requests = [(rows("a", 2), None), (rows("mid", 5), None), (rows("b", 3), None)]
    leader, queued, commits = one_batch(store, requests, returning=[True, False, True])
    assert commits == 1
    assert all(x.error is None for x in (leader, *queued))
    first, middle, last = queued
    assert middle.result == []
    chain = stored(store)
    by_id = {e.id: e for e in chain}
    for appender in (leader, first, last):
        assert appender.result
        assert [by_id[e.id] for e in appender.result] == appender.result
    sessions = [e.session_id for e in chain]
    assert sessions == [
        "leader/0",
        "a/0",
        "a/1",
        *(f"mid/{i}" for i in range(5)),
        "b/0",
        "b/1",
        "b/2",
    ]
    assert store.audit.verify().ok
