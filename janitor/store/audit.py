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

import fnmatch
import hashlib
import itertools
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session, aliased

from janitor.errors import LeaseLost, StoreError
from janitor.model import OPEN_OUTCOMES, Action, AuditEvent, AuditKind, Outcome
from janitor.store.bulk import execute_many
from janitor.store.db import Database, advisory_xact_lock
from janitor.store.group_commit import GroupCommit, Pending, Take
from janitor.store.tables import AuditRow, LeaseRow

GENESIS = "0" * 64
_UNHASHED = {"id", "hash"}
HASHED_FIELDS = tuple(f.name for f in fields(AuditEvent) if f.name not in _UNHASHED)

#: The most rows one group commit writes in one transaction (a single larger append, such as
#: a first sweep's decision rows, still goes in one transaction of its own).
MAX_BATCH_ROWS = 1000

#: ``count`` new ids from the audit table's sequence (PostgreSQL).
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('audit_events', 'id')) FROM generate_series(1, :count)"
)

AuditTable: Table = AuditRow.__table__  # type: ignore[assignment]  # Core inserts, no ORM
_INSERT = insert(AuditTable)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """The lease an intent is written under: only valid while it is still current."""

    lease: str
    holder: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendRequest:
    """One caller's append: its events, written together, under its fence (if any)."""

    events: tuple[AuditEvent, ...]
    fence: Fence | None = None
    #: False: the caller wants no rows back (see :meth:`AuditLog.extend`).
    returning: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """The outcome of ``audit verify``."""

    ok: bool
    rows: int
    head: str
    problems: tuple[str, ...]
    last_id: int | None = None
    pruned: PrunedHead | None = None  # where a full walk started: after the rows pruned

    @property
    def checkpoint(self) -> Checkpoint | None:
        """Where the next incremental verification can start (None for an empty chain)."""
        return Checkpoint(id=self.last_id, hash=self.head) if self.last_id is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunedHead:
    """What a prune's checkpoint row records: the rows up to ``through_id`` were removed, and
    the first row after them links to ``head`` (the hash of row ``through_id``)."""

    row_id: int  # the checkpoint row
    through_id: int
    head: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneResult:
    """What ``audit prune`` did: ``checkpoint`` is None when there was nothing to remove."""

    removed: int
    checkpoint: AuditEvent | None
    held_by: int | None = None  # the oldest open intent, where it stopped the prune
    problem: str | None = None  # why nothing was removed, when the chain does not verify


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Which audit rows to list or export (every field optional; all given must hold).

    ``session`` is a session id or name, or a glob (``*``, ``?``, ``[...]``) over either;
    ``session_id`` is one exact id. Times are inclusive: ``since <= at <= until``.
    """

    since: datetime | None = None
    until: datetime | None = None
    target: str | None = None
    session_id: str | None = None
    session: str | None = None
    kinds: Sequence[str] = ()
    policy: str | None = None
    outcomes: Sequence[str] = ()
    after_id: int | None = None

    def statement(self) -> Select[AuditRow]:
        """The SELECT for these filters (a glob is narrowed further by :meth:`wanted`)."""
        query = select(AuditRow)
        if self.since is not None:
            query = query.where(AuditRow.at >= self.since)
        if self.until is not None:
            query = query.where(AuditRow.at <= self.until)
        if self.target is not None:
            query = query.where(AuditRow.target == self.target)
        if self.session_id is not None:
            query = query.where(AuditRow.session_id == self.session_id)
        if self.session is not None:
            if is_glob(self.session):
                like = glob_to_like(self.session)
                query = query.where(
                    or_(
                        AuditRow.session_id.like(like, escape="\\"),
                        AuditRow.session_name.like(like, escape="\\"),
                    )
                )
            else:
                query = query.where(
                    or_(AuditRow.session_id == self.session, AuditRow.session_name == self.session)
                )
        if self.kinds:
            query = query.where(AuditRow.kind.in_([str(k) for k in self.kinds]))
        if self.policy is not None:
            query = query.where(AuditRow.policy == self.policy)
        if self.outcomes:
            query = query.where(AuditRow.outcome.in_([str(o) for o in self.outcomes]))
        return query

    def wanted(self, event: AuditEvent) -> bool:
        """The exact glob test (SQL ``LIKE`` is only a superset: case, ``[...]``)."""
        if self.session is None or not is_glob(self.session):
            return True
        return any(
            value is not None and fnmatch.fnmatchcase(value, self.session)
            for value in (event.session_id, event.session_name)
        )


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` has glob characters."""
    return any(char in pattern for char in "*?[")


def glob_to_like(pattern: str) -> str:
    """A SQL ``LIKE`` pattern (escape character ``\\``) matching at least what the glob does."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            out.append("_")  # one character of a class: the exact test comes after
            i = end
        elif char in "%_\\":
            out.append("\\" + char)
        else:
            out.append(char)
        i += 1
    return "".join(out)


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


def _columns(event: AuditEvent, prev: str, digest: str) -> dict[str, Any]:
    """``event`` linked after ``prev`` with hash ``digest``, as the column values of its row
    (without ``id``; the ``at`` column stores its time in UTC)."""
    values = {name: getattr(event, name) for name in HASHED_FIELDS}
    values["prev_hash"] = prev
    values["kind"] = str(event.kind)
    values["action"] = str(event.action) if event.action else None
    values["outcome"] = str(event.outcome) if event.outcome else None
    values["hash"] = digest
    return values


def _stored(event: AuditEvent, prev: str, digest: str, row_id: int) -> AuditEvent:
    """``event`` as it was stored: linked after ``prev``, with its hash, id and UTC time."""
    return replace(event, id=row_id, prev_hash=prev, hash=digest, at=event.at.astimezone(UTC))


def _shared(exc: StoreError) -> StoreError:
    """A failure of the transaction a request shared, as that request's own exception."""
    error = StoreError(str(exc))
    error.__cause__ = exc
    return error


#: Rows per executemany: a first sweep's 100,000 decision rows go in without holding all their
#: column dictionaries (and the driver's copies of them) at once.
INSERT_CHUNK = 2000


class _Inserts:
    """Chained rows waiting for their INSERT, in chain order, written a chunk at a time.

    A queued row is the caller's event with its link (``prev``, its hash): its column values
    are built only when its chunk is written, so a request of 100,000 rows is never held as
    100,000 chained copies, nor as 100,000 column dictionaries.
    """

    def __init__(self, log: AuditLog, tx: Session, *, after: int | None) -> None:
        self._log = log
        self._tx = tx
        self._after = after
        #: (event, prev, hash, where its stored row goes: None when not returned)
        self._pending: list[tuple[AuditEvent, str, str, list[AuditEvent] | None]] = []

    def add(
        self,
        events: Sequence[AuditEvent],
        hashes: Sequence[str],
        prev: str,
        stored: list[AuditEvent] | None,
    ) -> None:
        """Queue ``events`` (hashed after ``prev``); with ``stored``, each one's stored row is
        appended to it, with its id, when its chunk is written."""
        for event, digest in zip(events, hashes, strict=True):
            self._pending.append((event, prev, digest, stored))
            prev = digest
            if len(self._pending) >= INSERT_CHUNK:
                self.flush()

    def flush(self) -> None:
        """Insert the queued rows; their ids follow the last id written, in chain order."""
        if not self._pending:
            return
        columns = [_columns(event, prev, digest) for event, prev, digest, _ in self._pending]
        ids = self._log._insert(self._tx, columns, after=self._after)
        for (event, prev, digest, stored), row_id in zip(self._pending, ids, strict=True):
            if stored is not None:
                stored.append(_stored(event, prev, digest, row_id))
        self._after = ids[-1]
        self._pending.clear()


def _hashes(events: Sequence[AuditEvent], prev: str) -> list[str]:
    """The hash of each of ``events`` linked in order after the row whose hash is ``prev``."""
    hashes = []
    for event in events:
        prev = compute_hash(replace(event, prev_hash=prev, hash=None))
        hashes.append(prev)
    return hashes


def to_event(row: AuditRow) -> AuditEvent:
    """An audit row as the frozen record."""
    values = {name: getattr(row, name) for name in HASHED_FIELDS}
    values["kind"] = AuditKind(row.kind)
    values["action"] = Action(row.action) if row.action else None
    values["outcome"] = Outcome(row.outcome) if row.outcome else None
    return AuditEvent(id=row.id, hash=row.hash, **values)


def check_fence(tx: Session, fence: Fence, *, dialect: str) -> None:
    """Raise LeaseLost unless ``fence`` names the current, unexpired lease (within ``tx``)."""
    lost = lost_fences(tx, [fence], dialect=dialect).get(fence)
    if lost is not None:
        raise lost


#: The lease rows of a batch's fences (``names``); on PostgreSQL with the time now, FOR SHARE.
_LEASES = (
    select(LeaseRow.name, LeaseRow.holder, LeaseRow.fencing_token, LeaseRow.expires_at)
    .where(LeaseRow.name.in_(bindparam("names", expanding=True)))
    .order_by(LeaseRow.name)
)
_LEASES_PG = _LEASES.add_columns(func.clock_timestamp()).with_for_update(read=True)

#: The chain's last row.
_HEAD = select(AuditRow.id, AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)


def lost_fences(tx: Session, fences: Collection[Fence], *, dialect: str) -> dict[Fence, LeaseLost]:
    """The fences among ``fences`` that do not name the current, unexpired lease, each with
    its LeaseLost; read in one query within ``tx``.

    On PostgreSQL the lease rows are read ``FOR SHARE``: a takeover (an upsert of the row)
    waits until this transaction ends, so the new holder's reconcile sees what was written
    under the old token; and the expiry is compared with ``clock_timestamp()`` (the time now),
    not ``now()`` (the transaction's start): a writer that waited for the lock past its
    lease's expiry must not see the lease as still valid. SQLite needs no row lock:
    ``BEGIN IMMEDIATE`` already serializes every writer.
    """
    if not fences:
        return {}
    pg = dialect == "postgresql"
    query = _LEASES_PG if pg else _LEASES
    names = sorted({f.lease for f in fences})
    leases = {row[0]: row for row in tx.connection().execute(query, {"names": names})}
    lost = {}
    for fence in fences:
        row = leases.get(fence.lease)
        if row is not None:
            now: datetime = row[4] if pg else datetime.now(UTC)
            if (row[1], row[2]) == (fence.holder, fence.token) and _aware(row[3]) > now:
                continue
        holder = f"{row[1]} (token {row[2]})" if row is not None else "nobody"
        lost[fence] = LeaseLost(
            f"lease {fence.lease} is no longer ours (token {fence.token}); held by {holder}"
        )
    return lost


class AuditLog:
    """Appends to, lists and verifies the audit chain."""

    def __init__(self, db: Database, *, max_batch_rows: int = MAX_BATCH_ROWS) -> None:
        self.db = db
        #: Batches concurrent appends into shared transactions (ADR 0014).
        self.group: GroupCommit[AppendRequest, list[AuditEvent]] = GroupCommit(
            self._commit, max_rows=max_batch_rows
        )

    def append(
        self, events: Sequence[AuditEvent], *, fence: Fence | None = None
    ) -> list[AuditEvent]:
        """Append events in one transaction; return them with ids and hashes.

        Appends from other threads that arrive while a transaction is being written share the
        next one (group commit, ADR 0014): each request's fence is still checked on its own,
        its rows stay together in the chain, and this returns only once the transaction that
        holds them has committed.

        Raises:
            LeaseLost: ``fence`` is given and the lease is no longer held with that token;
                nothing of these events was written.
            StoreError: the database failed; nothing of these events (nor of any request
                that shared their transaction) was written.
        """
        if not events:
            return []
        return self.group.submit(AppendRequest(events=tuple(events), fence=fence), len(events))

    def extend(self, events: Sequence[AuditEvent], *, fence: Fence | None = None) -> None:
        """Append events like :meth:`append`, with the same guarantees, but return nothing.

        The stored rows are not built: a first sweep's 100,000 decision rows are then held
        once, by the caller, and not a second time with their ids and hashes.
        """
        if events:
            request = AppendRequest(events=tuple(events), fence=fence, returning=False)
            self.group.submit(request, len(events))

    def append_in(
        self, tx: Session, events: Sequence[AuditEvent], *, fence: Fence | None = None
    ) -> list[AuditEvent]:
        """Append within the caller's transaction (policy changes commit with their rows)."""
        [written] = self._write(tx, [AppendRequest(events=tuple(events), fence=fence)])
        if isinstance(written, BaseException):
            raise written
        return written

    def _commit(self, take: Take[AppendRequest, list[AuditEvent]]) -> None:
        """Write a batch of appends in one transaction, then settle each request.

        The batch is taken once the chain's lock is held, so appends that arrived while it was
        awaited are written in this transaction too.
        """
        batch: Sequence[Pending[AppendRequest, list[AuditEvent]]] = ()
        try:
            with self.db.transaction() as tx:
                self._lock(tx)
                batch = take()
                written = self._write_locked(tx, [pending.item for pending in batch])
        except StoreError as exc:
            for pending in batch or take():
                pending.fail(_shared(exc))
            return
        for pending, result in zip(batch, written, strict=True):
            if isinstance(result, BaseException):
                pending.fail(result)
            else:
                pending.resolve(result)

    def _write(
        self, tx: Session, requests: Sequence[AppendRequest]
    ) -> list[list[AuditEvent] | BaseException]:
        """Take the chain's lock, then append ``requests`` (see :meth:`_write_locked`)."""
        self._lock(tx)
        return self._write_locked(tx, requests)

    def _write_locked(
        self, tx: Session, requests: Sequence[AppendRequest]
    ) -> list[list[AuditEvent] | BaseException]:
        """Append every request whose fence holds, in order, within ``tx`` (lock held).

        Each request's fence is checked (LeaseLost for that request only), the head is read
        once, the rows are chained and hashed in request order and inserted with one
        executemany. Returns, per request, its stored rows or its error.
        """
        results = self._fence_errors(tx, requests)
        head_id, prev = self._head(tx)
        stored: list[list[AuditEvent] | BaseException] = [
            error if error is not None else [] for error in results
        ]
        inserts = _Inserts(self, tx, after=head_id)
        for index, request in enumerate(requests):
            if results[index] is not None:
                continue
            try:  # every row is hashed before any of the request's rows is inserted
                hashes = _hashes(request.events, prev)
            except Exception as exc:  # noqa: BLE001 (a row that cannot be hashed fails its request only)
                stored[index] = exc
                continue
            rows: list[AuditEvent] = []  # filled as the request's chunks are inserted
            inserts.add(request.events, hashes, prev, rows if request.returning else None)
            stored[index] = rows
            prev = hashes[-1] if hashes else prev
        inserts.flush()
        return stored

    def _fence_errors(
        self, tx: Session, requests: Sequence[AppendRequest]
    ) -> list[BaseException | None]:
        """Per request: LeaseLost when its fence does not hold now, else None.

        Every distinct fence of the batch is checked in one query (the requests of one target
        share theirs); each request that fails gets its own exception.
        """
        fences = {r.fence for r in requests if r.fence is not None}
        lost = lost_fences(tx, fences, dialect=self.db.dialect)
        errors: list[BaseException | None] = []
        for request in requests:
            failed = lost.get(request.fence) if request.fence is not None else None
            errors.append(LeaseLost(*failed.args) if failed is not None else None)
        return errors

    @staticmethod
    def _head(tx: Session) -> tuple[int | None, str]:
        """(id, hash) of the chain's last row; (None, GENESIS) for an empty chain."""
        row = tx.connection().execute(_HEAD).first()
        return (int(row[0]), row[1]) if row is not None else (None, GENESIS)

    def _insert(self, tx: Session, rows: list[dict[str, Any]], *, after: int | None) -> list[int]:
        """Insert the chained rows' column values with one Core executemany, setting each
        one's ``id``; return the ids, in the same order.

        The chain is walked in id order, so the ids must rise in chain order: they are given
        explicitly, under the chain's lock. On SQLite they are the ones SQLite would pick (the
        highest, ``after``, plus one, and so on; under ``BEGIN IMMEDIATE`` nobody else
        writes). On PostgreSQL they are drawn from the table's sequence in one query and
        sorted, so they are the sequence's next values in chain order whatever order
        ``nextval`` ran in. Either way a plain executemany does: no RETURNING, no ORM flush.
        """
        if not rows:
            return []
        if self.db.dialect == "sqlite":
            first = (after or 0) + 1
            ids = list(range(first, first + len(rows)))
        else:
            ids = sorted(int(i) for i in tx.connection().scalars(_NEXT_IDS, {"count": len(rows)}))
        for values, row_id in zip(rows, ids, strict=True):
            values["id"] = row_id
        execute_many(tx.connection(), _INSERT, rows)
        return ids

    def _lock(self, tx: Session) -> None:
        """Take the chain's lock: the advisory lock on PostgreSQL; on SQLite, start the
        transaction now (``BEGIN IMMEDIATE``, which waits for every other writer)."""
        if self.db.dialect == "postgresql":
            advisory_xact_lock(tx, "audit")
        else:
            tx.connection()

    def events(
        self,
        query: AuditQuery | None = None,
        *,
        limit: int | None = None,
        last: int | None = None,
        **filters: Any,
    ) -> list[AuditEvent]:
        """Rows in id order, filtered by ``query`` (or the same fields as keywords).

        ``limit`` keeps the first rows that match, ``last`` the newest ones (still returned
        oldest first).
        """
        query = query or AuditQuery(**filters)
        if last is not None:
            newest = list(itertools.islice(self.stream(query, descending=True), last))
            return newest[::-1]
        return list(itertools.islice(self.stream(query), limit))

    def stream(
        self, query: AuditQuery | None = None, *, batch: int = 1000, descending: bool = False
    ) -> Iterator[AuditEvent]:
        """Rows matching ``query`` in id order (or newest first), read ``batch`` at a time.

        Each batch is one short transaction, so an export of millions of rows holds no
        transaction open and keeps only one batch in memory.
        """
        query = query or AuditQuery()
        after: int | None = query.after_id
        before: int | None = None
        while True:
            statement = query.statement().limit(batch)
            if descending:
                statement = statement.order_by(AuditRow.id.desc())
                if before is not None:
                    statement = statement.where(AuditRow.id < before)
            else:
                statement = statement.order_by(AuditRow.id)
                if after is not None:
                    statement = statement.where(AuditRow.id > after)
            with self.db.transaction() as tx:
                rows = [to_event(row) for row in tx.scalars(statement)]
            for event in rows:
                if query.wanted(event):
                    yield event
            if len(rows) < batch:
                return
            if descending:
                before = rows[-1].id
            else:
                after = rows[-1].id

    def pending_intents(self, target: str) -> list[AuditEvent]:
        """Intents of ``target`` with no final outcome (none yet, ``unknown`` or ``accepted``)."""
        return [item.intent for item in self.open_intents(target)]

    def open_intents(self, target: str) -> list[OpenIntent]:
        """Open intents of ``target`` in id order, each with when the provider accepted it.

        An intent is open until it has a final outcome: one that is neither ``unknown``
        (reconciled by re-reading) nor ``accepted`` (settled by later sweeps).
        """
        query = (
            select(AuditRow)
            .where(AuditRow.kind == AuditKind.INTENT.value, AuditRow.target == target, _open())
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
        """(highest row id, hash of that row): the chain's length since it began.

        The id, not a count: ``audit prune`` removes old rows but never lowers the highest
        id, so the exported length still only grows and a truncated tail still shows.
        """
        with self.db.transaction() as tx:
            row = tx.execute(
                select(AuditRow.id, AuditRow.hash).order_by(AuditRow.id.desc()).limit(1)
            ).first()
            return (int(row[0]), row[1]) if row is not None else (0, GENESIS)

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

        Without it the walk starts at the beginning, or, once rows were pruned, after them:
        the newest prune checkpoint row says which row was the last one removed and its hash,
        the first remaining row must link to that hash, and no row may remain at or below it.
        """
        problems: list[str] = []
        prev, rows, after = GENESIS, 0, None
        pruned, problem = self.pruned_head()
        problems += [problem] if problem else []
        if since is not None and (pruned is None or pruned.through_id < since.id):
            prev, after = since.hash, since.id
            problems += self._check_checkpoint(since)
        elif pruned is not None:  # a full walk, or the rows verified earlier were pruned since
            prev, after = pruned.head, pruned.through_id
            problems += self._below(pruned)
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
            ok=not problems,
            rows=rows,
            head=prev,
            problems=tuple(problems),
            last_id=last,
            pruned=pruned,
        )

    def pruned_head(self) -> tuple[PrunedHead | None, str | None]:
        """The newest prune checkpoint (None if the chain was never pruned), or a problem."""
        with self.db.transaction() as tx:
            row = tx.execute(
                select(AuditRow.id, AuditRow.details, AuditRow.at)
                .where(AuditRow.kind == AuditKind.CHECKPOINT.value)
                .order_by(AuditRow.id.desc())
                .limit(1)
            ).first()
        if row is None:
            return None, None
        details = row[1] or {}
        try:
            through, head = int(details["pruned_through_id"]), str(details["pruned_head"])
        except (KeyError, TypeError, ValueError):
            return None, f"row {row[0]}: a prune checkpoint whose details cannot be read"
        return PrunedHead(row_id=row[0], through_id=through, head=head, at=_aware(row[2])), None

    def _below(self, pruned: PrunedHead) -> list[str]:
        """Rows left at or below a prune's last removed id: they were put there afterwards."""
        with self.db.transaction() as tx:
            ids = tx.scalars(
                select(AuditRow.id)
                .where(AuditRow.id <= pruned.through_id)
                .order_by(AuditRow.id)
                .limit(5)
            ).all()
        return [
            f"row {i}: lies in the range pruned by checkpoint row {pruned.row_id} "
            f"(rows up to {pruned.through_id} were removed; a row was inserted there)"
            for i in ids
        ]

    def prune(self, *, before: datetime, actor: str, now: datetime) -> PruneResult:
        """Remove the oldest rows, those written before ``before``, keeping the chain verifiable.

        The one exception to append-only, and itself audited. In one transaction under the
        chain's lock: the rows removed are a prefix of the chain (every row up to the first
        one written at or after ``before``), cut short before the oldest intent that has no
        final outcome (``unknown`` and ``accepted`` are not final): such an intent and every
        row after it stay. A ``checkpoint`` row appended at the head records the last removed
        row's id and hash, where :meth:`verify` starts. Nothing is removed while the chain
        does not verify: pruning must not erase the evidence of tampering.
        """
        check = self.verify()
        if not check.ok:
            return PruneResult(
                removed=0,
                checkpoint=None,
                problem="the audit chain does not verify, so nothing is pruned (that would "
                f"erase the evidence): {check.problems[0]}",
            )
        with self.db.transaction() as tx:
            self._lock(tx)
            first_new = tx.scalar(select(func.min(AuditRow.id)).where(AuditRow.at >= before))
            oldest_open = tx.scalar(
                select(func.min(AuditRow.id)).where(
                    AuditRow.kind == AuditKind.INTENT.value, _open()
                )
            )
            bound = select(func.max(AuditRow.id))
            if first_new is not None:
                bound = bound.where(AuditRow.id < first_new)
            if oldest_open is not None:
                bound = bound.where(AuditRow.id < oldest_open)
            through = tx.scalar(bound)
            held = (
                oldest_open
                if oldest_open is not None and (first_new is None or oldest_open < first_new)
                else None
            )
            if through is None:
                return PruneResult(removed=0, checkpoint=None, held_by=held)
            head = tx.scalar(select(AuditRow.hash).where(AuditRow.id == through))
            removed = int(
                tx.scalar(select(func.count(AuditRow.id)).where(AuditRow.id <= through)) or 0
            )
            stamp = before.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            held_note = (
                f"; intent {held} has no final outcome yet, so it and later rows stay"
                if held is not None
                else ""
            )
            [checkpoint] = self.append_in(
                tx,
                [
                    AuditEvent(
                        at=now,
                        kind=AuditKind.CHECKPOINT,
                        actor=actor,
                        reason=f"audit pruned by {actor}: {removed} rows written before {stamp} "
                        f"removed (ids up to {through}); the chain continues from row "
                        f"{through}'s hash{held_note}",
                        details={
                            "pruned_through_id": through,
                            "pruned_head": head,
                            "removed": removed,
                            "before": before.astimezone(UTC).isoformat(),
                            "held_by_open_intent": held,
                        },
                    )
                ],
            )
            tx.execute(delete(AuditRow).where(AuditRow.id <= through))
            return PruneResult(removed=removed, checkpoint=checkpoint, held_by=held)

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


def _open() -> ColumnElement[bool]:
    """True for an intent row that has no final outcome (none, or only unknown/accepted)."""
    outcome = aliased(AuditRow)
    final = exists().where(
        and_(
            outcome.intent_id == AuditRow.id,
            outcome.kind == AuditKind.OUTCOME.value,
            outcome.outcome.not_in([o.value for o in OPEN_OUTCOMES]),
        )
    )
    return ~final


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
