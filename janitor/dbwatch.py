"""Whether the database is usable, checked at start and every few seconds (DESIGN 5).

Usable means reachable with a current schema. With ``auto_upgrade`` (default: on for SQLite,
off for PostgreSQL) an old schema is upgraded first; without it, an old schema keeps the
daemon from starting. While the database is not usable the daemon stays up, runs no sweep,
is not ready, and says why in STATUS, the log and ``/readyz``. Each check also refreshes the
``paused`` metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from janitor import metrics
from janitor.errors import SchemaOutdated, StoreError
from janitor.observability.health import Health
from janitor.observability.sdnotify import notify
from janitor.runtime import db
from janitor.store import Store

log = logging.getLogger(__name__)
DB_CHECK_PERIOD = 5.0


class DatabaseWatch:
    """Keeps ``health.db_ok``/``db_problem`` current; ``schema_outdated`` after a check."""

    def __init__(self, store: Store, health: Health, *, auto_upgrade: bool | None) -> None:
        self.store = store
        self.health = health
        self.auto_upgrade = store.db.dialect == "sqlite" if auto_upgrade is None else auto_upgrade
        self.schema_outdated = False

    async def check(self) -> bool:
        """Check the database now; log and announce a change. True if it is usable."""
        ok, problem = await self._probe()
        health = self.health
        if ok != health.db_ok or problem != health.db_problem:
            if ok:
                log.info("database %s is usable", self.store.db.display_url)
            else:
                log.error("database not usable, no sweeps until it is: %s", problem)
                notify(f"STATUS=not ready: {problem}")
        health.db_ok, health.db_problem = ok, problem
        return ok

    async def watch(self, checked: Callable[[bool], None]) -> None:
        """Check every ``DB_CHECK_PERIOD`` seconds, forever; ``checked(was_ok)`` after each."""
        while True:
            await asyncio.sleep(DB_CHECK_PERIOD)
            was_ok = self.health.db_ok
            await self.check()
            checked(was_ok)

    async def _probe(self) -> tuple[bool, str]:
        database = self.store.db
        self.schema_outdated = False
        try:
            if self.auto_upgrade and not await db(database.schema_is_current):
                log.info("upgrading the database schema (auto_upgrade)")
                await db(database.upgrade)
            await db(database.check_schema)
            paused = await db(self.store.pause.get)
            metrics.PAUSED.set(1 if paused.paused else 0)
        except SchemaOutdated as exc:
            self.schema_outdated = True
            return False, str(exc)
        except StoreError as exc:
            return False, f"database unreachable: {exc}"
        return True, ""
