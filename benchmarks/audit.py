"""(d) Appending to the hash-chained audit trail, on SQLite and (if reachable) PostgreSQL.

Rows are appended in batches through ``AuditLog.append``: a batch of 1 is how intents and
outcomes are written (one transaction each), a batch of 100 is like a sweep's decision rows.
Each append takes the chain lock, reads the head and hashes every row.

Lower bound: the same rows' canonical-JSON SHA-256 hashes computed in memory, plus a plain
Core ``INSERT`` (executemany) of the same rows with the same transactions into a fresh copy
of the table: no lock, no head read, no ORM. ``verify_s`` is the time ``audit verify`` took
over the appended chain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert

from benchmarks.common import Measurement, now, open_store
from janitor.model import Action, AuditEvent, AuditKind, Outcome
from janitor.store import Store
from janitor.store.audit import GENESIS, HASHED_FIELDS, compute_hash
from janitor.store.tables import AuditRow

NAME = "audit_append"
BOUND = "hash the rows + plain INSERT of the same rows and transactions"


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


DEFAULT_CASES = (Case(1_000, 1), Case(5_000, 100))
QUICK_CASES = (Case(50, 1), Case(100, 10))


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


def run(cases: Sequence[Case] = DEFAULT_CASES) -> list[Measurement]:
    """Every case."""
    return [measure(case) for case in cases]
