"""The audit trail: append-only rows in one hash chain per database.

Each row's ``hash`` is SHA-256 over the canonical JSON of its content (sorted keys, UTC times
with microseconds, everything but ``id`` and ``hash``) and includes ``prev_hash``, the hash
of the row before it. Appends take a lock (a transaction-level advisory lock on PostgreSQL;
``BEGIN IMMEDIATE`` on SQLite), so the chain has no forks. ``verify`` walks the chain and
reports the first row that does not fit. Truncation of the tail is detected from outside:
the head is logged and exported as a metric after every sweep.

An intent may be appended only while the target's lease (holder and fencing token) is
current; otherwise :class:`~janitor.errors.LeaseLost` is raised and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from janitor.errors import LeaseLost
from janitor.model import OPEN_OUTCOMES, Action, AuditEvent, AuditKind, Outcome
from janitor.store.db import Database, advisory_xact_lock
from janitor.store.tables import AuditRow, LeaseRow

GENESIS = "0" * 64
_UNHASHED = {"id", "hash"}
HASHED_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name not in _UNHASHED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """The lease an intent is written under: only valid while it is still current."""

    lease: str
    holder: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """The outcome of ``audit verify``."""

    ok: bool
    rows: int
    head: str
    problems: tuple[str, ...]
    last_id: int | None = None

    @property
    def checkpoint(self) -> Checkpoint | None:
        """Where the next incremental verification can start (None for an empty chain)."""
        return Checkpoint(id=self.last_id, hash=self.head) if self.last_id is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenIntent:
    """An intent without a final outcome; ``accepted_at`` when the provider accepted it."""

    intent: AuditEvent
    accepted_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A row verified earlier: its id and hash. Later checks start after it."""

    id: int
    hash: str


#: Fields added after rows were first written: left out of the canonical form while empty, so
#: every row written before them hashes as it did (and setting one later breaks its hash).
_LATER_FIELDS = frozenset({"details"})


def canonical(event: AuditEvent) -> bytes:
    """The bytes the hash covers: sorted-key JSON, UTC microsecond timestamps.

    ``details`` is included when it is set (nested keys sorted too) and left out when it is
    None, which is the canonical form of every row written before the column existed.
    """
    payload: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = getattr(event, name)
        if value is None and name in _LATER_FIELDS:
            continue
        if isinstance(value, datetime):
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        payload[name] = value
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    """SHA-256 of the canonical content (which includes ``prev_hash``)."""
    return hashlib.sha256(canonical(event)).hexdigest()


def _to_row(event: AuditEvent) -> AuditRow:
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    values["kind"] = str(event.kind)
    values["action"] = str(event.action) if event.action else None
    values["outcome"] = str(event.outcome) if event.outcome else None
    return AuditRow(**values, hash=event.hash)


def to_event(row: AuditRow) -> AuditEvent:
    """An audit row as the frozen record."""
    values = {name: getattr(row, name) for name in HASHED_FIELDS}
    values["kind"] = AuditKind(row.kind)
    values["action"] = Action(row.action) if row.action else None
    values["outcome"] = Outcome(row.outcome) if row.outcome else None
    return AuditEvent(id=row.id, hash=row.hash, **values)


def check_fence(tx: Session, fence: Fence, *, dialect: str) -> None:
    """Raise LeaseLost unless ``fence`` names the current, unexpired lease (within ``tx``).

    SQLite needs no row lock: ``BEGIN IMMEDIATE`` already serializes every writer.
    """
    pg = dialect == "postgresql"
    columns: list[Any] = [LeaseRow.holder, LeaseRow.fencing_token, LeaseRow.expires_at]
    query = select(*columns).where(LeaseRow.name == fence.lease)
    if pg:
        # FOR SHARE: a takeover (an upsert of this row) waits until this transaction ends,
        # so the new holder's reconcile sees the intent written under the old token.
        query = query.add_columns(func.clock_timestamp()).with_for_update(read=True)
    row = tx.execute(query).first()
    if row is not None:
        now: datetime = row[3] if pg else datetime.now(UTC)
        expires: datetime = row[2]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if row[0] == fence.holder and row[1] == fence.token and expires > now:
            return
    holder = f"{row[0]} (token {row[1]})" if row is not None else "nobody"
    raise LeaseLost(
        f"lease {fence.lease} is no longer ours (token {fence.token}); held by {holder}"
    )


class AuditLog:
    """Appends to, lists and verifies the audit chain."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def append(
        self, events: Sequence[AuditEvent], *, fence: Fence | None = None
    ) -> list[AuditEvent]:
        """Append events in one transaction; return them with ids and hashes.

        Raises:
            LeaseLost: ``fence`` is given and the lease is no longer held with that token.
            StoreError: the database failed; nothing was written.
        """
        if not events:
            return []
        with self.db.transaction() as tx:
            return self.append_in(tx, events, fence=fence)

    def append_in(
        self, tx: Session, events: Sequence[AuditEvent], *, fence: Fence | None = None
    ) -> list[AuditEvent]:
        """Append within the caller's transaction (policy changes commit with their rows)."""
        self._lock(tx)
        if fence is not None:
            self._check_fence(tx, fence)
        prev = tx.scalar(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1))
        prev = prev or GENESIS
        stored = []
        for event in events:
            chained = replace(event, prev_hash=prev, hash=None, at=event.at.astimezone(UTC))
            chained = replace(chained, hash=compute_hash(chained))
            row = _to_row(chained)
            tx.add(row)
            tx.flush()
            stored.append(replace(chained, id=row.id))
            prev = chained.hash or GENESIS
        return stored

    def _lock(self, tx: Session) -> None:
        if self.db.dialect == "postgresql":
            advisory_xact_lock(tx, "audit")

    def _check_fence(self, tx: Session, fence: Fence) -> None:
        """Raise LeaseLost unless ``fence`` is the current, unexpired lease.

        Runs after the chain lock is taken, so "current" means at the moment of the insert.
        On PostgreSQL the expiry is compared with ``clock_timestamp()`` (the time now), not
        ``now()``, which is the start of the transaction: a writer that waited for the lock
        past its lease's expiry must not see the lease as still valid.
        """
        check_fence(tx, fence, dialect=self.db.dialect)

    def events(
        self,
        *,
        since: datetime | None = None,
        target: str | None = None,
        session_id: str | None = None,
        kinds: Sequence[str] = (),
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEvent]:
        """Rows in id order, filtered (``after_id``: only rows with a larger id)."""
        query = select(AuditRow).order_by(AuditRow.id)
        if after_id is not None:  # no default bound: a row slipped in at id <= 0 shows too
            query = query.where(AuditRow.id > after_id)
        if since is not None:
            query = query.where(AuditRow.at >= since)
        if target is not None:
            query = query.where(AuditRow.target == target)
        if session_id is not None:
            query = query.where(AuditRow.session_id == session_id)
        if kinds:
            query = query.where(AuditRow.kind.in_(list(kinds)))
        if limit is not None:
            query = query.limit(limit)
        with self.db.transaction() as tx:
            return [to_event(row) for row in tx.scalars(query)]

    def pending_intents(self, target: str) -> list[AuditEvent]:
        """Intents of ``target`` with no final outcome (none yet, ``unknown`` or ``accepted``)."""
        return [item.intent for item in self.open_intents(target)]

    def open_intents(self, target: str) -> list[OpenIntent]:
        """Open intents of ``target`` in id order, each with when the provider accepted it.

        An intent is open until it has a final outcome: one that is neither ``unknown``
        (reconciled by re-reading) nor ``accepted`` (settled by later sweeps).
        """
        outcome = aliased(AuditRow)
        final = exists().where(
            and_(
                outcome.intent_id == AuditRow.id,
                outcome.kind == AuditKind.OUTCOME.value,
                outcome.outcome.not_in([o.value for o in OPEN_OUTCOMES]),
            )
        )
        query = (
            select(AuditRow)
            .where(AuditRow.kind == AuditKind.INTENT.value, AuditRow.target == target, ~final)
            .order_by(AuditRow.id)
        )
        with self.db.transaction() as tx:
            intents = [to_event(row) for row in tx.scalars(query)]
            ids = [i.id for i in intents]
            accepted: dict[int, datetime] = {}
            if ids:
                rows = tx.execute(
                    select(AuditRow.intent_id, func.min(AuditRow.at))
                    .where(
                        AuditRow.intent_id.in_(ids),
                        AuditRow.kind == AuditKind.OUTCOME.value,
                        AuditRow.outcome == Outcome.ACCEPTED.value,
                    )
                    .group_by(AuditRow.intent_id)
                )
                accepted = {int(i): _aware(at) for i, at in rows if i is not None}
        return [
            OpenIntent(intent=i, accepted_at=accepted.get(i.id) if i.id is not None else None)
            for i in intents
        ]

    def head(self) -> tuple[int, str]:
        """(number of rows, hash of the last row)."""
        with self.db.transaction() as tx:
            count = tx.scalar(select(func.count(AuditRow.id))) or 0
            last = tx.scalar(select(AuditRow.hash).order_by(AuditRow.id.desc()).limit(1))
            return int(count), last or GENESIS

    def _stored(self, after: int | None, batch: int) -> list[AuditEvent]:
        """Rows as stored, for hashing: enum columns stay plain strings, so a value that is no
        valid kind, action or outcome (written with SQL) shows as an altered row instead of
        stopping ``verify`` with an exception. Every id, even <= 0, is included."""
        query = select(AuditRow).order_by(AuditRow.id).limit(batch)
        if after is not None:
            query = query.where(AuditRow.id > after)
        with self.db.transaction() as tx:
            return [
                AuditEvent(id=row.id, hash=row.hash, **{n: getattr(row, n) for n in HASHED_FIELDS})
                for row in tx.scalars(query)
            ]

    def verify(self, *, since: Checkpoint | None = None, batch: int = 5000) -> VerifyResult:
        """Walk the chain in id order; report rows whose link or hash does not fit.

        With ``since`` (a checkpoint of an earlier verification) only the rows after it are
        walked, and the checkpoint row must still be there with the same hash: the daemon
        checks the new rows after every sweep this way, cheaply.
        """
        problems: list[str] = []
        prev, rows, after = GENESIS, 0, None
        if since is not None:
            prev, after = since.hash, since.id
            problems += self._check_checkpoint(since)
        last: int | None = since.id if since else None
        while len(problems) < 20:
            chunk = self._stored(after, batch)
            if not chunk:
                break
            for event in chunk:
                rows += 1
                problems += _row_problems(event, prev)
                prev = event.hash or GENESIS
                assert event.id is not None
                after = last = event.id
        return VerifyResult(
            ok=not problems, rows=rows, head=prev, problems=tuple(problems), last_id=last
        )

    def _check_checkpoint(self, since: Checkpoint) -> list[str]:
        with self.db.transaction() as tx:
            stored = tx.scalar(select(AuditRow.hash).where(AuditRow.id == since.id))
        if stored != since.hash:
            return [
                (
                    f"row {since.id}, verified earlier, is gone or changed "
                    "(the chain was truncated or rewritten)"
                )
            ]
        return []


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row_problems(event: AuditEvent, prev: str) -> list[str]:
    problems = []
    if event.prev_hash != prev:
        problems.append(
            f"row {event.id}: prev_hash does not match row before it "
            "(a row was removed, inserted or reordered)"
        )
    if compute_hash(replace(event, id=None, hash=None)) != event.hash:
        problems.append(f"row {event.id}: content does not match its hash (the row was altered)")
    return problems
