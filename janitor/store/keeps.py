"""Keeps: sessions protected from every policy until they expire (``janitor keep``).

Adding, replacing and removing a keep each write an audit row in the same transaction
(kinds ``keep`` and ``unkeep``, with the expiry in ``details``). An expired keep protects
nothing; it stays listed (``keep list --all``) until the retention removes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, select

from janitor.errors import NotFound
from janitor.model import AuditEvent, AuditKind, Keep
from janitor.store.audit import AuditLog
from janitor.store.db import Database
from janitor.store.tables import KeepRow


class KeepStore:
    """Reads and writes keeps."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def active(self, target: str, now: datetime) -> dict[str, Keep]:
        """The target's keeps that hold at ``now``, by session id."""
        with self.db.reading() as tx:
            rows = tx.scalars(select(KeepRow).where(KeepRow.target == target, KeepRow.until > now))
            return {row.session_id: _keep(row) for row in rows}

    def get(self, target: str, session_id: str, now: datetime) -> Keep | None:
        """The session's keep if it holds at ``now`` (one statement)."""
        row = self.db.read_row(_KEEP, {"target": target, "session_id": session_id})
        return holding(row, now)

    def all(self, now: datetime, *, expired: bool = False) -> list[Keep]:
        """Every keep (only those holding at ``now`` unless ``expired``), soonest expiry first."""
        query = select(KeepRow).order_by(KeepRow.until, KeepRow.target, KeepRow.session_id)
        if not expired:
            query = query.where(KeepRow.until > now)
        with self.db.transaction() as tx:
            return [_keep(row) for row in tx.scalars(query)]

    def add(self, keep: Keep, *, lasting: str) -> Keep | None:
        """Store ``keep`` (replacing the session's earlier one) with a ``keep`` audit row.

        Returns the keep it replaced, if one still held. ``lasting`` is how the admin said
        it (``3d``), for the audit row.
        """
        with self.db.transaction() as tx:
            row = tx.get(KeepRow, (keep.target, keep.session_id))
            earlier = _keep(row) if row is not None else None
            if earlier is not None and not earlier.holds(keep.created_at):
                earlier = None
            if row is None:
                row = KeepRow(target=keep.target, session_id=keep.session_id)
                tx.add(row)
            row.session_name = keep.session_name[:255]
            row.until, row.reason, row.actor = keep.until, keep.reason, keep.actor
            row.created_at = keep.created_at
            until = _stamp(keep.until)
            replaces = f", replacing the keep until {_stamp(earlier.until)}" if earlier else ""
            why = f": {keep.reason}" if keep.reason else ""
            self.audit.append_in(
                tx,
                [
                    AuditEvent(
                        at=keep.created_at,
                        kind=AuditKind.KEEP,
                        actor=keep.actor,
                        target=keep.target,
                        session_id=keep.session_id,
                        session_name=keep.session_name[:255],
                        reason=f"kept for {lasting} until {until} by {keep.actor}{why}; no "
                        f"policy acts on it until then{replaces}",
                        details={
                            "until": keep.until.astimezone(UTC).isoformat(),
                            "for": lasting,
                            "note": keep.reason,
                            "replaces_until": (
                                earlier.until.astimezone(UTC).isoformat() if earlier else None
                            ),
                        },
                    )
                ],
            )
            return earlier

    def remove(self, target: str, session_id: str, *, actor: str, now: datetime) -> Keep:
        """Remove a keep before it expires, with an ``unkeep`` audit row.

        Raises:
            NotFound: the session has no keep.
        """
        with self.db.transaction() as tx:
            row = tx.get(KeepRow, (target, session_id))
            if row is None:
                raise NotFound(f"session {session_id} on target {target} is not kept")
            keep = _keep(row)
            tx.delete(row)
            state = "" if keep.holds(now) else " (it had expired)"
            self.audit.append_in(
                tx,
                [
                    AuditEvent(
                        at=now,
                        kind=AuditKind.UNKEEP,
                        actor=actor,
                        target=target,
                        session_id=session_id,
                        session_name=keep.session_name,
                        reason=f"keep until {_stamp(keep.until)} removed by {actor}{state}; "
                        "the policies apply to it again",
                        details={"until": keep.until.astimezone(UTC).isoformat()},
                    )
                ],
            )
            return keep

    def forget_expired(self, before: datetime) -> int:
        """Delete keeps that expired before ``before`` (their audit rows stay)."""
        with self.db.transaction() as tx:
            result = tx.execute(delete(KeepRow).where(KeepRow.until < before))
            return int(getattr(result, "rowcount", 0) or 0)


#: A session's keep row, with ``target`` and ``session_id`` bound when executed.
KEEP_OF_SESSION = and_(
    KeepRow.target == bindparam("target"), KeepRow.session_id == bindparam("session_id")
)
_KEEP = select(*KeepRow.__table__.columns).where(KEEP_OF_SESSION)


def holding(row: Row[Any] | None, now: datetime) -> Keep | None:
    """The keep in a row read with :class:`KeepRow`'s columns if it holds at ``now`` (no row,
    or an outer join's NULLs: no keep)."""
    if row is None or row.until is None:
        return None
    keep = _keep(row)
    return keep if keep.holds(now) else None


def _keep(row: KeepRow | Row[Any]) -> Keep:
    return Keep(
        target=row.target,
        session_id=row.session_id,
        session_name=row.session_name,
        until=row.until,
        reason=row.reason,
        actor=row.actor,
        created_at=row.created_at,
    )


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
