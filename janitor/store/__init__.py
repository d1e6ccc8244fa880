"""The database: typed tables (``tables``), connection and migrations (``db``), repositories.

:class:`Store` bundles the repositories the sweep, the daemon and the CLI use. All methods are
synchronous; async code calls them through ``asyncio.to_thread`` (see ADR 0003).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from janitor.model import Keep
from janitor.store.audit import AuditLog, Fence
from janitor.store.db import Database
from janitor.store.history import HistoryStore
from janitor.store.keeps import KEEP_OF_SESSION, KeepStore, holding
from janitor.store.policies import REVISION, PolicyStore
from janitor.store.state import (
    PAUSE_COLUMNS,
    LeaseStore,
    ObservationStore,
    PauseInfo,
    PauseStore,
    SweepStore,
    pause_info,
)
from janitor.store.tables import KeepRow, PauseRow

__all__ = ["BeforeCall", "Database", "Fence", "Store"]


_REVISION = REVISION.subquery()
#: One row: the revision, then the kill switch's and the session's keep's columns (NULL when
#: there is no such row).
_BEFORE_CALL = select(_REVISION.c.revision, *PAUSE_COLUMNS, *KeepRow.__table__.columns).select_from(
    _REVISION.outerjoin(PauseRow, PauseRow.id == 1).outerjoin(KeepRow, KEEP_OF_SESSION)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class BeforeCall:
    """What :meth:`Store.before_call` read: the kill switch, the policy revision and the
    session's keep (None: not kept now)."""

    pause: PauseInfo
    revision: int
    keep: Keep | None


class Store:
    """Every repository over one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.audit = AuditLog(db)
        self.policies = PolicyStore(db, self.audit)
        self.observations = ObservationStore(db)
        self.leases = LeaseStore(db)
        self.pause = PauseStore(db, self.audit)
        self.sweeps = SweepStore(db)
        self.keeps = KeepStore(db, self.audit)
        self.history = HistoryStore(db)

    def before_call(self, target: str, session_id: str, now: datetime) -> BeforeCall:
        """The kill switch, the policy revision and the session's keep, read together in one
        statement (one consistent state, one round trip): what an action reads between its
        intent and its re-check."""
        row = self.db.read_row(_BEFORE_CALL, {"target": target, "session_id": session_id})
        assert row is not None, "an aggregate without GROUP BY always returns one row"
        return BeforeCall(
            pause=pause_info(row), revision=int(row.revision or 0), keep=holding(row, now)
        )

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        """Connect to ``url`` (nothing is read until the first query); see Database."""
        return cls(Database(url, create=create))

    def close(self) -> None:
        """Close pooled connections."""
        self.db.dispose()
