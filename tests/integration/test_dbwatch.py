"""The database watch: usable means reachable with a current schema (DESIGN 5 "Daemon life").

The daemon's start-up and ``/readyz`` run these checks in a real process
(test_startup_schema.py, test_daemon_readiness.py); here the watch is driven directly.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from janitor.dbwatch import DatabaseWatch
from janitor.observability.health import Health
from janitor.store import Store
from tests.fakes.daemon import free_port


def test_an_old_schema_is_reported_or_upgraded(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'j.db'}")
    try:
        health = Health()
        refusing = DatabaseWatch(store, health, auto_upgrade=False)
        assert not asyncio.run(refusing.check())
        assert refusing.schema_outdated
        assert not health.db_ok
        assert "database schema is at nothing" in health.db_problem
        assert "run `janitor db upgrade`" in health.db_problem

        upgrading = DatabaseWatch(store, health, auto_upgrade=None)  # on for SQLite
        assert asyncio.run(upgrading.check())
        assert not upgrading.schema_outdated
        assert (health.db_ok, health.db_problem) == (True, "")
        assert asyncio.run(refusing.check()), "the schema is current now"
    finally:
        store.close()


def test_an_unreachable_database_is_not_an_old_schema() -> None:
    store = Store.open(f"postgresql://janitor@127.0.0.1:{free_port()}/nowhere")
    try:
        health = Health()
        watch = DatabaseWatch(store, health, auto_upgrade=None)  # off for PostgreSQL
        assert not watch.auto_upgrade
        assert not asyncio.run(watch.check())
        assert not watch.schema_outdated, "the daemon stays up and waits"
        assert health.db_problem.startswith("database unreachable: ")
    finally:
        store.close()
