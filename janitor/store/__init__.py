"""The database: typed tables (``tables``), connection and migrations (``db``), repositories.

:class:`Store` bundles the repositories the sweep, the daemon and the CLI use. All methods are
synchronous; async code calls them through ``asyncio.to_thread`` (see ADR 0003).
"""

from __future__ import annotations

from janitor.store.audit import AuditLog, Fence
from janitor.store.db import Database
from janitor.store.history import HistoryStore
from janitor.store.keeps import KeepStore
from janitor.store.policies import PolicyStore
from janitor.store.state import LeaseStore, ObservationStore, PauseStore, SweepStore

__all__ = ["Database", "Fence", "Store"]


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

    @classmethod
    def open(cls, url: str, *, create: bool = True) -> Store:
        """Connect to ``url`` (nothing is read until the first query); see Database."""
        return cls(Database(url, create=create))

    def close(self) -> None:
        """Close pooled connections."""
        self.db.dispose()
