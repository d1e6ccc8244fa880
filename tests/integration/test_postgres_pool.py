"""A pooled PostgreSQL connection is pinged only when it sat unused a while.

``pool_pre_ping`` pinged at every checkout: a round trip before each of the database calls
an action makes. janitor pings a connection only after :data:`PING_AFTER_IDLE` seconds in
the pool (where it can go stale: a restart, a failover, a proxy's idle timeout), and a
failed ping still hands out a fresh connection instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from janitor.store import Store
from janitor.store import db as db_module
from janitor.store.state import PauseInfo

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store.open(postgres_url)
    store.db.upgrade()
    yield store
    store.close()


def _count_pings(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    pings: list[Any] = []
    dialect = store.db.engine.dialect
    real = dialect.do_ping

    def counted(dbapi: Any) -> bool:
        pings.append(dbapi)
        return real(dbapi)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


def test_a_connection_used_a_moment_ago_is_not_pinged(
    pg_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pg_store, monkeypatch)
    for _ in range(20):
        assert pg_store.pause.get() == PauseInfo(paused=False)
    assert pings == []


def test_a_connection_idle_in_the_pool_is_pinged_and_a_dead_one_replaced(
    pg_store: Store, postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pg_store.pause.get() == PauseInfo(paused=False)  # one connection in the pool
    with pg_store.db.engine.connect() as connection:
        backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE", 0.0)  # as if it sat there a while
    pings = _count_pings(pg_store, monkeypatch)
    assert pg_store.pause.get() == PauseInfo(paused=False)  # no error: a fresh connection
    assert pings
    assert pings[0].broken  # the dead one was pinged, then dropped
    with pg_store.db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend
