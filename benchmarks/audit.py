"""(d) Appending to the hash-chained audit trail, on SQLite and (if reachable) PostgreSQL.

Rows are appended in batches through ``AuditLog.append``: a batch of 1 is how intents and
outcomes are written (one transaction each), a batch of 100 is like a sweep's decision rows.
Each append takes the chain lock, reads the head and hashes every row.

Lower bound: the same rows' canonical-JSON SHA-256 hashes computed in memory, plus a plain
Core ``INSERT`` (executemany) of the same rows with the same transactions into a fresh copy
of the table: no lock, no head read, no ORM. ``verify_s`` is the time ``audit verify`` took
over the appended chain.

Concurrent appenders (:class:`Concurrent`): K threads, each with its own target's lease, each
appending N single-row fenced rows one after another, as intents and outcomes are written
while K targets act at once. ``how`` picks the write path: ``group`` is ``AuditLog.append``
(group commit: rows that arrive while a transaction is written share the next one),
``serial`` gives every append its own transaction (``append_in`` in a transaction per row:
the write path without group commit), ``async`` is ``group`` driven the way janitor
drives it, K asyncio tasks calling ``janitor.runtime.db``. Lower bound: hashing the K × N
rows plus plain Core ``INSERT``s of them in N transactions of K rows each (perfect batches,
with no lock, head read or fence check).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert

from benchmarks.common import Measurement, now, open_store
from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.runtime import db
from janitor.store import Store
from janitor.store.audit import GENESIS, HASHED_FIELDS, Fence, compute_hash
from janitor.store.tables import AuditRow

NAME = "audit_append"
BOUND = "hash the rows + plain INSERT of the same rows and transactions"
BOUND_CONCURRENT = "hash the rows + plain INSERTs of them in transactions of one row per appender"


@dataclass(frozen=True, slots=True)
class Case:
    """How many rows, in batches of how many, on which database."""

    rows: int
    batch: int
    database: str = "sqlite"

    @property
    def label(self) -> str:
        """How the case is shown in the table."""
        return f"{self.database} rows={self.rows} batch={self.batch}"


@dataclass(frozen=True, slots=True)
class Concurrent:
    """``threads`` appenders, each appending ``per_thread`` single-row fenced rows."""

    threads: int
    per_thread: int
    how: str = "group"  # group | serial | async
    database: str = "sqlite"

    @property
    def label(self) -> str:
        """How the case is shown in the table."""
        return f"{self.database} {self.threads} appenders x {self.per_thread} {self.how}"

    @property
    def rows(self) -> int:
        """Rows appended in all."""
        return self.threads * self.per_thread


AnyCase = Case | Concurrent

DEFAULT_CASES: tuple[AnyCase, ...] = (
    Case(1_000, 1),
    Case(5_000, 100),
    Concurrent(10, 200, "serial"),
    Concurrent(10, 200, "group"),
    Concurrent(10, 200, "async"),
)
QUICK_CASES: tuple[AnyCase, ...] = (
    Case(50, 1),
    Case(100, 10),
    Concurrent(4, 10, "serial"),
    Concurrent(4, 10, "group"),
    Concurrent(4, 10, "async"),
)


def events(count: int) -> list[AuditEvent]:
    """Rows shaped like a sweep's would_act outcomes."""
    at = now()
    return [
        AuditEvent(
            at=at,
            kind=AuditKind.OUTCOME,
            reason=(
                f"would delete: state idle and idle 3h12m ≥ 2h and 0 connections "
                f"(policy idle-notebooks v3) [{i}]"
            ),
            actor="janitor@bench",
            sweep_id="00000000-0000-4000-8000-000000000000",
            target="bench",
            session_id=f"session-{i:08d}",
            session_name=f"work/nb-{i}.ipynb",
            session_kind="notebook",
            policy="idle-notebooks",
            policy_version=3,
            action=Action.DELETE,
            dry_run=True,
            outcome=Outcome.WOULD_ACT,
        )
        for i in range(count)
    ]


def batches(items: Sequence[AuditEvent], size: int) -> list[Sequence[AuditEvent]]:
    """``items`` cut into runs of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def hash_time(items: Sequence[AuditEvent]) -> tuple[float, list[dict[str, Any]]]:
    """Seconds to chain and hash the rows in memory, and the rows as column values."""
    started = time.perf_counter()
    prev = GENESIS
    values = []
    for event in items:
        chained = replace(event, prev_hash=prev)
        digest = compute_hash(chained)
        values.append(_columns(chained, digest))
        prev = digest
    return time.perf_counter() - started, values


def _columns(event: AuditEvent, digest: str) -> dict[str, Any]:
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    values["kind"] = str(event.kind)
    values["action"] = str(event.action) if event.action else None
    values["outcome"] = str(event.outcome) if event.outcome else None
    values["hash"] = digest
    return values


def plain_insert_time(store: Store, rows: Sequence[dict[str, Any]], size: int) -> float:
    """Seconds for Core INSERTs of ``rows``, one transaction per batch."""
    started = time.perf_counter()
    for i in range(0, len(rows), size):
        with store.db.transaction() as tx:
            tx.execute(insert(AuditRow), list(rows[i : i + size]))
    return time.perf_counter() - started


def append_time(store: Store, items: Sequence[AuditEvent], size: int) -> float:
    """Seconds for ``AuditLog.append`` of every batch."""
    started = time.perf_counter()
    for chunk in batches(items, size):
        store.audit.append(chunk)
    return time.perf_counter() - started


def measure(case: Case) -> Measurement:
    """Append, then verify the chain; compare with hashing plus plain inserts."""
    items = events(case.rows)
    hashing, rows = hash_time(items)
    with open_store(case.database) as (_, store):
        store.audit.head()  # connect before timing
        plain = plain_insert_time(store, rows, case.batch)
    with open_store(case.database) as (_, store):
        store.audit.head()
        seconds = append_time(store, items, case.batch)
        started = time.perf_counter()
        result = store.audit.verify()
        verify = time.perf_counter() - started
    if not result.ok or result.rows != case.rows:
        raise RuntimeError(f"{NAME} {case.label}: chain of {result.rows} rows, ok={result.ok}")
    return Measurement(
        benchmark=NAME,
        case=case.label,
        seconds=seconds,
        lower_bound=hashing + plain,
        bound=BOUND,
        count=case.rows,
        unit="rows",
        extra={
            "hash_s": round(hashing, 6),
            "plain_insert_s": round(plain, 6),
            "verify_s": round(verify, 6),
            "transactions": -(-case.rows // case.batch),
        },
    )


def fences(store: Store, threads: int) -> list[Fence]:
    """One held lease per appender, as each acting target has."""
    held = []
    for k in range(threads):
        lease = store.leases.acquire(f"bench-{k}", "bench-holder", timedelta(hours=1))
        assert lease is not None
        held.append(Fence(lease=lease.name, holder=lease.holder, token=lease.token))
    return held


def per_appender(items: Sequence[AuditEvent], threads: int) -> list[list[AuditEvent]]:
    """The rows dealt out to ``threads`` appenders, round robin."""
    return [list(items[k::threads]) for k in range(threads)]


def _append_serial(store: Store, rows: Sequence[AuditEvent], fence: Fence) -> None:
    for event in rows:
        with store.db.transaction() as tx:
            store.audit.append_in(tx, [event], fence=fence)


def _append_group(store: Store, rows: Sequence[AuditEvent], fence: Fence) -> None:
    for event in rows:
        store.audit.append([event], fence=fence)


def threaded_time(
    work: Callable[[Store, Sequence[AuditEvent], Fence], None],
    store: Store,
    shares: Sequence[Sequence[AuditEvent]],
    held: Sequence[Fence],
) -> float:
    """Seconds for one thread per share to append its rows with ``work``, all at once."""
    start = threading.Barrier(len(shares) + 1)
    failures: list[BaseException] = []

    def appender(rows: Sequence[AuditEvent], fence: Fence) -> None:
        start.wait()
        try:
            work(store, rows, fence)
        except BaseException as exc:  # noqa: BLE001 (reported after the run)
            failures.append(exc)

    threads = [
        threading.Thread(target=appender, args=(rows, fence))
        for rows, fence in zip(shares, held, strict=True)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{NAME}: an appender failed: {failures[0]!r}") from failures[0]
    return seconds


def async_time(
    store: Store, shares: Sequence[Sequence[AuditEvent]], held: Sequence[Fence]
) -> float:
    """Seconds for one asyncio task per share appending through ``janitor.runtime.db``."""

    async def appender(rows: Sequence[AuditEvent], fence: Fence) -> None:
        for event in rows:
            await db(store.audit.append, [event], fence=fence)

    async def everyone() -> float:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for rows, fence in zip(shares, held, strict=True):
                group.create_task(appender(rows, fence))
        return time.perf_counter() - started

    return asyncio.run(everyone())


@contextlib.contextmanager
def commits_counted(store: Store) -> Iterator[list[int]]:
    """Count the COMMITs the store's engine issues within the block."""
    counter = [0]

    def on_commit(_conn: object) -> None:
        counter[0] += 1

    sa_event.listen(store.db.engine, "commit", on_commit)
    try:
        yield counter
    finally:
        sa_event.remove(store.db.engine, "commit", on_commit)


def measure_concurrent(case: Concurrent) -> Measurement:
    """K appenders at once; compare with hashing plus perfect K-row batches of plain inserts."""
    items = events(case.rows)
    hashing, rows = hash_time(items)
    with open_store(case.database) as (_, store):
        store.audit.head()
        plain = plain_insert_time(store, rows, case.threads)
    with open_store(case.database) as (_, store):
        held = fences(store, case.threads)
        shares = per_appender(items, case.threads)
        with commits_counted(store) as commits:
            if case.how == "async":
                seconds = async_time(store, shares, held)
            else:
                work = _append_serial if case.how == "serial" else _append_group
                seconds = threaded_time(work, store, shares, held)
        result = store.audit.verify()
    if not result.ok or result.rows != case.rows:
        raise RuntimeError(f"{NAME} {case.label}: chain of {result.rows} rows, ok={result.ok}")
    return Measurement(
        benchmark=NAME,
        case=case.label,
        seconds=seconds,
        lower_bound=hashing + plain,
        bound=BOUND_CONCURRENT,
        count=case.rows,
        unit="rows",
        extra={
            "hash_s": round(hashing, 6),
            "plain_insert_s": round(plain, 6),
            "appenders": case.threads,
            "how": case.how,
            "transactions": commits[0],
            "rows_per_transaction": round(case.rows / max(commits[0], 1), 2),
        },
    )


def run(cases: Sequence[AnyCase] = DEFAULT_CASES) -> list[Measurement]:
    """Every case."""
    return [
        measure_concurrent(case) if isinstance(case, Concurrent) else measure(case)
        for case in cases
    ]
