"""Operational state: observations, leases, the kill switch and sweep records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase

from janitor.model import Action, AuditEvent, AuditKind, History, Mark, State
from janitor.store.audit import AuditLog, Fence, check_fence
from janitor.store.bulk import execute_many
from janitor.store.db import Database
from janitor.store.history import Observed
from janitor.store.tables import (
    LeaseRow,
    ObservationRow,
    PauseRow,
    SessionHistoryRow,
    SweepRow,
)


class ObservationStore:
    """janitor's memory of each session between daemon sweeps.

    Read and written with Core statements, not ORM objects: a target of 100,000 sessions
    costs one SELECT and a few executemany batches per sweep, with no identity map.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, target: str) -> dict[str, History]:
        """Every remembered session of ``target`` by id."""
        with self.db.reading() as tx:
            rows = tx.execute(select(OBSERVATIONS).where(OBSERVATIONS.c.target == target))
            return {row.session_id: _history(row) for row in rows}

    def save(
        self,
        target: str,
        entries: Iterable[tuple[str, str, History]],
        *,
        fence: Fence | None = None,
        log: Iterable[Observed] = (),
    ) -> None:
        """Replace the target's memory with ``(session_id, name, history)`` entries, and add
        ``log``'s rows to the session history log in the same transaction.

        Both are consumed as they are written, :data:`CHUNK` rows per statement: a caller
        may pass generators, so a first sweep over 100,000 sessions never holds all their
        rows at once.

        Sessions not listed any more are forgotten (call only after a complete listing).
        Unchanged entries are not written, so ``last_seen`` is the last sweep that changed
        janitor's memory of the session.
        With ``fence``, nothing is written unless that lease is still current: a replica
        that lost its lease (paused past its expiry) must not overwrite its successor's
        marks and streaks with its stale view.

        Raises:
            LeaseLost: ``fence`` is not the current lease any more; nothing was written.
        """
        with self.db.transaction() as tx:
            if fence is not None:
                check_fence(tx, fence, dialect=self.db.dialect)
            existing = {
                row.session_id: row
                for row in tx.execute(select(OBSERVATIONS).where(OBSERVATIONS.c.target == target))
            }
            seen: set[str] = set()
            inserts = _Batch(tx, _INSERT_OBSERVATION)
            updates = _Batch(tx, _UPDATE)
            written_at = datetime.now(UTC)
            for session_id, name, history in entries:
                seen.add(session_id)
                row = existing.get(session_id)
                if row is None:
                    inserts.add(
                        {"target": target, "session_id": session_id}
                        | _values(name, history, written_at)
                    )
                elif _history(row) != history or row.session_name != name[:255]:
                    updates.add(
                        {"b_target": target, "b_session_id": session_id}
                        | _values(name, history, written_at)
                    )
                # unchanged: no write (a steady fleet costs no UPDATEs)
            inserts.flush()
            updates.flush()
            _write_history(tx, target, log)
            gone = [sid for sid in existing if sid not in seen]
            if gone:
                tx.execute(
                    delete(OBSERVATIONS).where(
                        OBSERVATIONS.c.target == target, OBSERVATIONS.c.session_id.in_(gone)
                    )
                )


OBSERVATIONS = cast(Table, ObservationRow.__table__)
HISTORY = cast(Table, SessionHistoryRow.__table__)
_INSERT_OBSERVATION = insert(OBSERVATIONS)
_INSERT_HISTORY = insert(HISTORY)
_UPDATE = update(OBSERVATIONS).where(
    OBSERVATIONS.c.target == bindparam("b_target"),
    OBSERVATIONS.c.session_id == bindparam("b_session_id"),
)


#: Rows per executemany: big enough that statements cost little, small enough that the
#: parameters of one statement stay a few megabytes.
CHUNK = 2_000


class _Batch:
    """Rows for one statement, executed :data:`CHUNK` at a time (Core executemany)."""

    def __init__(self, tx: Session, statement: UpdateBase) -> None:
        self.tx = tx
        self.statement = statement
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        """Queue a row; execute the queue when it is full."""
        self.rows.append(row)
        if len(self.rows) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Execute the queued rows."""
        if self.rows:
            # on the connection: the driver's executemany, not the ORM's bulk modes
            execute_many(self.tx.connection(), self.statement, self.rows)
            self.rows = []


def _write_history(tx: Session, target: str, rows: Iterable[Observed]) -> None:
    """The session history log's new rows."""
    batch = _Batch(tx, _INSERT_HISTORY)
    for row in rows:
        batch.add(
            {
                "target": target,
                "session_id": row.session_id[:255],
                "at": row.at,
                "fields": row.fields,
                "gone": row.gone,
            }
        )
    batch.flush()


def _history(row: Any) -> History:
    mark = None
    if row.mark_policy and row.marked_at:
        mark = Mark(
            policy=row.mark_policy,
            marked_at=row.marked_at,
            warned_at=row.warned_at,
            action=Action(row.mark_action) if row.mark_action else None,
        )
    return History(
        first_seen=row.first_seen,
        state=State(row.state),
        state_since=row.state_since,
        streak_policy=row.streak_policy,
        streak=row.streak,
        mark=mark,
        last_key=row.last_key,
        provider_state=row.provider_state,
        original=row.original,
        activity=row.activity,
        activity_since=row.activity_since,
        observed=row.observed,
    )


def _values(name: str, history: History, written_at: datetime) -> dict[str, Any]:
    """The columns of an observation row (all but its key)."""
    mark = history.mark
    return {
        "session_name": name[:255],
        "first_seen": history.first_seen,
        "last_seen": written_at,
        "state": str(history.state),
        "state_since": history.state_since,
        "streak_policy": history.streak_policy,
        "streak": history.streak,
        "mark_policy": mark.policy if mark else None,
        "mark_action": str(mark.action) if mark and mark.action else None,
        "marked_at": mark.marked_at if mark else None,
        "warned_at": mark.warned_at if mark else None,
        "last_key": history.last_key[:255] if history.last_key else None,
        "provider_state": history.provider_state[:64] if history.provider_state else None,
        "original": history.original,
        "activity": history.activity[:255] if history.activity else None,
        "activity_since": history.activity_since,
        "observed": history.observed,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseInfo:
    """A lease as stored."""

    name: str
    holder: str
    token: int
    expires_at: datetime


class LeaseStore:
    """Per-target leases with expiry and a fencing token (DESIGN 5, "Replicas").

    Times are the database's clock on PostgreSQL and the host's UTC clock on SQLite, so
    replicas with skewed clocks still agree on PostgreSQL.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseInfo | None:
        """Take or renew the lease; None if someone else holds an unexpired one."""
        pg = self.db.dialect == "postgresql"
        now: Any = func.now() if pg else datetime.now(UTC)
        insert = (postgresql.insert if pg else sqlite.insert)(LeaseRow)
        values = insert.values(name=name, holder=holder, expires_at=now + ttl, fencing_token=1)
        statement = values.on_conflict_do_update(
            index_elements=[LeaseRow.name],
            set_={
                "holder": values.excluded.holder,
                "expires_at": values.excluded.expires_at,
                "fencing_token": LeaseRow.fencing_token
                + case((LeaseRow.holder == values.excluded.holder, 0), else_=1),
            },
            where=or_(LeaseRow.holder == values.excluded.holder, LeaseRow.expires_at < now),
        ).returning(LeaseRow.holder, LeaseRow.fencing_token, LeaseRow.expires_at)
        with self.db.transaction() as tx:
            row = tx.execute(statement).first()
        if row is None:
            return None
        return LeaseInfo(
            name=name, holder=row.holder, token=row.fencing_token, expires_at=_aware(row.expires_at)
        )

    def renew(self, name: str, holder: str, token: int, ttl: timedelta) -> LeaseInfo | None:
        """Extend the lease we hold; None if it is not ours (with this token) any more.

        Unlike :meth:`acquire`, this never takes a lease over: a holder that was paused past
        its expiry and finds the lease taken (or taken and released since) must not grab it
        back with a new token. A lease that expired but nobody took keeps its token, so
        renewing it is safe: nobody acted on the target in between.
        """
        pg = self.db.dialect == "postgresql"
        now: Any = func.clock_timestamp() if pg else datetime.now(UTC)
        statement = (
            update(LeaseRow)
            .where(
                LeaseRow.name == name,
                LeaseRow.holder == holder,
                LeaseRow.fencing_token == token,
            )
            .values(expires_at=now + ttl)
            .returning(LeaseRow.holder, LeaseRow.fencing_token, LeaseRow.expires_at)
        )
        with self.db.transaction() as tx:
            row = tx.execute(statement).first()
        if row is None:
            return None
        return LeaseInfo(
            name=name, holder=row.holder, token=row.fencing_token, expires_at=_aware(row.expires_at)
        )

    def release(self, name: str, holder: str) -> None:
        """Give the lease up (expire it) if we hold it."""
        with self.db.transaction() as tx:
            row = tx.get(LeaseRow, name)
            if row is not None and row.holder == holder:
                row.expires_at = datetime(1970, 1, 1, tzinfo=UTC)

    def get(self, name: str) -> LeaseInfo | None:
        """The lease as stored, expired or not."""
        with self.db.reading() as tx:
            row = tx.get(LeaseRow, name)
            if row is None:
                return None
            return LeaseInfo(
                name=name, holder=row.holder, token=row.fencing_token, expires_at=row.expires_at
            )


def _aware(value: datetime) -> datetime:
    """UTC-aware (SQLite hands back naive UTC when the column type is not applied)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseInfo:
    """The kill switch's state."""

    paused: bool
    reason: str = ""
    actor: str = ""
    changed_at: datetime | None = None


#: The kill switch's row, read with Core before every action (no ORM object).
#: The kill switch's columns, named so they can be read beside other tables' (a keep's
#: ``reason`` and ``actor``) in one statement (:meth:`janitor.store.Store.before_call`).
PAUSE_COLUMNS = (
    PauseRow.paused,
    PauseRow.reason.label("pause_reason"),
    PauseRow.actor.label("pause_actor"),
    PauseRow.changed_at.label("pause_changed_at"),
)
_PAUSE = select(*PAUSE_COLUMNS).where(PauseRow.id == 1)


def pause_info(row: Row[Any] | None) -> PauseInfo:
    """The kill switch from a row read with :data:`PAUSE_COLUMNS` (no row, or an outer join's
    NULLs: never paused)."""
    if row is None or row.paused is None:
        return PauseInfo(paused=False)
    return PauseInfo(
        paused=row.paused,
        reason=row.pause_reason,
        actor=row.pause_actor,
        changed_at=row.pause_changed_at,
    )


class PauseStore:
    """The kill switch, stored in the database so every replica sees it."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def get(self) -> PauseInfo:
        """Whether janitor is paused, and why (one statement: read before every action)."""
        return pause_info(self.db.read_row(_PAUSE))

    def set(self, paused: bool, *, reason: str, actor: str, now: datetime) -> PauseInfo:
        """Pause or resume, with an audit row in the same transaction."""
        with self.db.transaction() as tx:
            row = tx.get(PauseRow, 1)
            if row is None:
                row = PauseRow(id=1)
                tx.add(row)
            row.paused, row.reason, row.actor, row.changed_at = paused, reason, actor, now
            kind = AuditKind.PAUSE if paused else AuditKind.RESUME
            verb = "paused" if paused else "resumed"
            text = f"janitor {verb} by {actor}" + (f": {reason}" if reason else "")
            self.audit.append_in(tx, [AuditEvent(at=now, kind=kind, actor=actor, reason=text)])
            return PauseInfo(paused=paused, reason=reason, actor=actor, changed_at=now)


class SweepStore:
    """One row per sweep, with its summary."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, sweep_id: str, *, at: datetime, actor: str, dry_run: bool) -> None:
        """Record that a sweep started."""
        with self.db.transaction() as tx:
            tx.add(
                SweepRow(
                    id=sweep_id,
                    started_at=at,
                    finished_at=None,
                    actor=actor,
                    dry_run=dry_run,
                    status="running",
                    summary={},
                )
            )

    def finish(self, sweep_id: str, *, at: datetime, status: str, summary: dict[str, Any]) -> None:
        """Record the sweep's end and summary."""
        with self.db.transaction() as tx:
            row = tx.get(SweepRow, sweep_id)
            if row is not None:
                row.finished_at, row.status, row.summary = at, status, summary
