"""The session history log in the database: written with janitor's memory, read by backtests.

Rows are written in the same transaction as the observations they go with (see
:meth:`janitor.store.state.ObservationStore.save`), under the same lease fence. Retention
(:meth:`HistoryStore.prune`) removes rows that were superseded before the cut-off, and
sessions gone before it; each live session's latest row stays, however old, so a replay
always knows what every session looked like at the start of its window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.orm import Session, aliased

from janitor.store.db import Database
from janitor.store.tables import SessionHistoryRow

#: ``Observed.gone``: not in the listing of the sweep at ``at``.
MISSING = "missing"
#: ``Observed.gone``: removed by the action of the sweep at ``at`` (listed then, gone after).
REMOVED = "removed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """One row of the log: a session's fields at ``at``, or (``gone``) its end."""

    session_id: str
    at: datetime
    fields: dict[str, Any] | None
    gone: str | None = None


def write_in(tx: Session, target: str, rows: Sequence[Observed]) -> None:
    """Add rows to the log within the caller's transaction."""
    tx.add_all(
        SessionHistoryRow(
            target=target,
            session_id=row.session_id[:255],
            at=row.at,
            fields=row.fields,
            gone=row.gone,
        )
        for row in rows
    )


class HistoryStore:
    """Reads and prunes the session history log."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, target: str, since: datetime, until: datetime) -> dict[str, list[Observed]]:
        """Each session's rows from ``since`` to ``until``, preceded by its latest row before
        ``since`` (what it looked like when the window opened), oldest first."""
        before = (
            select(func.max(SessionHistoryRow.id))
            .where(SessionHistoryRow.target == target, SessionHistoryRow.at < since)
            .group_by(SessionHistoryRow.session_id)
        )
        query = (
            select(SessionHistoryRow)
            .where(
                SessionHistoryRow.target == target,
                (SessionHistoryRow.id.in_(before))
                | ((SessionHistoryRow.at >= since) & (SessionHistoryRow.at <= until)),
            )
            .order_by(SessionHistoryRow.at, SessionHistoryRow.id)
        )
        sessions: dict[str, list[Observed]] = {}
        with self.db.transaction() as tx:
            for row in tx.scalars(query):
                sessions.setdefault(row.session_id, []).append(
                    Observed(session_id=row.session_id, at=row.at, fields=row.fields, gone=row.gone)
                )
        return sessions

    def count(self, target: str | None = None) -> int:
        """Rows in the log (of one target)."""
        query = select(func.count(SessionHistoryRow.id))
        if target is not None:
            query = query.where(SessionHistoryRow.target == target)
        with self.db.transaction() as tx:
            return int(tx.scalar(query) or 0)

    def prune(self, before: datetime) -> int:
        """Remove rows superseded before ``before``, and sessions gone before it; return how
        many rows went. A session's latest row before ``before`` stays unless it is gone."""
        newer = aliased(SessionHistoryRow)
        superseded = exists().where(
            and_(
                newer.target == SessionHistoryRow.target,
                newer.session_id == SessionHistoryRow.session_id,
                newer.id > SessionHistoryRow.id,
                newer.at < before,
            )
        )
        with self.db.transaction() as tx:
            first = tx.execute(
                delete(SessionHistoryRow).where(SessionHistoryRow.at < before, superseded)
            )
            gone = tx.execute(
                delete(SessionHistoryRow).where(
                    SessionHistoryRow.at < before, SessionHistoryRow.gone.is_not(None)
                )
            )
            return int(getattr(first, "rowcount", 0) or 0) + int(getattr(gone, "rowcount", 0) or 0)
