"""Housekeeping after sweeps, at most once an hour: what janitor keeps, it keeps for a while.

* the session history log: rows superseded more than ``history_retention`` ago (default 30d)
  go; each session's latest row stays (see :class:`~janitor.store.history.HistoryStore`);
* keeps that expired more than ``history_retention`` ago go (their audit rows stay);
* the audit trail, only when ``audit_retention`` is set: :meth:`AuditLog.prune` (never an
  intent without a final outcome; a checkpoint row keeps the chain verifiable; nothing while
  the chain does not verify).

A failing database is logged and tried again at the next period, never raised.
"""

from __future__ import annotations

import logging
import time

from janitor.errors import StoreError
from janitor.runtime import Runtime, db

log = logging.getLogger(__name__)
PERIOD = 3600.0  # seconds between two runs


class Retention:
    """Runs the housekeeping of the module docstring when it is due."""

    def __init__(self, rt: Runtime, *, period: float = PERIOD) -> None:
        self.rt = rt
        self.period = period
        self.ran_at: float | None = None

    async def maybe_run(self) -> None:
        """Run if an hour passed since the last run (or it never ran)."""
        if self.ran_at is not None and time.monotonic() - self.ran_at < self.period:
            return
        self.ran_at = time.monotonic()
        await self.run()

    async def run(self) -> None:
        """Prune the history log and expired keeps, then the audit trail when configured."""
        settings = self.rt.config.settings
        now = self.rt.clock.now()
        try:
            rows = await db(self.rt.store.history.prune, now - settings.history_retention)
            keeps = await db(self.rt.store.keeps.forget_expired, now - settings.history_retention)
            if rows or keeps:
                log.info("retention: %d history rows and %d expired keeps removed", rows, keeps)
            if settings.audit_retention is None:
                return
            result = await db(
                self.rt.store.audit.prune,
                before=now - settings.audit_retention,
                actor=self.rt.actor,
                now=now,
            )
        except StoreError as exc:
            log.warning("retention not applied now (tried again in an hour): %s", exc)
            return
        if result.problem:
            log.error("audit retention: %s", result.problem)
        elif result.checkpoint is not None:
            log.info("audit retention: %s", result.checkpoint.reason)
