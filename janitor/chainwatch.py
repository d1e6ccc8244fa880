"""Verifying the audit hash chain as it grows; one alert while it is broken (DESIGN 5).

The first check, and one an hour (or on request), walks the whole chain; the others walk
only the rows written since the last verified row, after checking that this row is still
there unchanged (so a truncation below it is seen at once). Walks run in a worker thread.
A database that cannot be read now is not a broken chain: the check is tried again later.
"""

from __future__ import annotations

import logging
import time

from janitor.errors import StoreError
from janitor.notify import Alerter
from janitor.runtime import db
from janitor.store.audit import AuditLog, Checkpoint

log = logging.getLogger(__name__)
FULL_VERIFY_PERIOD = 3600.0  # seconds between walks of the whole audit chain


class ChainWatch:
    """How far the audit chain is verified, and the ``chain_broken`` alert."""

    def __init__(
        self, audit: AuditLog, alerter: Alerter, *, full_period: float = FULL_VERIFY_PERIOD
    ) -> None:
        self.audit = audit
        self.alerter = alerter
        self.full_period = full_period
        self.checkpoint: Checkpoint | None = None  # the last row verified
        self.full_at: float | None = None  # when the whole chain was last walked (monotonic)

    async def verify(self, *, full: bool = False) -> bool:
        """Verify the rows written since the last check; alert when the chain broke.

        Returns False only for a broken chain (also when the alert is already active).
        """
        full = full or self.full_at is None or time.monotonic() - self.full_at > self.full_period
        try:
            result = await db(self.audit.verify, since=None if full else self.checkpoint)
            if full:
                self.full_at = time.monotonic()
        except StoreError as exc:
            log.warning("audit chain not verified now: %s", exc)
            return True
        if result.ok:
            self.checkpoint = result.checkpoint or self.checkpoint
            self.alerter.clear("chain_broken")
            return True
        problems = "; ".join(result.problems[:3])
        await self.alerter.raise_(
            "chain_broken", "chain_broken", f"the audit hash chain is broken: {problems}"
        )
        return False
