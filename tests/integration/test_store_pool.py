"""The store's connection pool keeps the connections it opens.

A sweep runs up to ``DB_THREADS`` store calls at once, more than the pool holds. SQLAlchemy's
``max_overflow`` would open a connection for each call beyond the pool and close it when the
call returns: on PostgreSQL a server process forked, authenticated and configured every few
deletions. The pool has no overflow: a call beyond it waits for a pooled connection, and the
database never sees more connections than the pool's size.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import QueuePool, event

from janitor.store import Store
from janitor.store.state import PauseInfo


def test_calls_beyond_the_pool_wait_for_a_pooled_connection_instead_of_opening_one(
    store: Store,
) -> None:
    pool = store.db.engine.pool
    assert isinstance(pool, QueuePool)
    size = pool.size()
    opened: list[object] = []
    event.listen(store.db.engine, "connect", lambda dbapi, _record: opened.append(dbapi))
    held = 0
    peak = 0
    lock = threading.Lock()

    def call() -> PauseInfo:
        nonlocal held, peak
        with store.db.read():
            with lock:
                held += 1
                peak = max(peak, held)
            time.sleep(0.005)  # hold it, so that more calls than the pool are in flight
            with lock:
                held -= 1
        return store.pause.get()

    with ThreadPoolExecutor(2 * size) as threads:
        results = list(threads.map(lambda _: call(), range(20 * size)))

    assert results == [PauseInfo(paused=False)] * (20 * size)
    assert peak == size  # the pool was saturated ...
    assert len(opened) <= size  # ... and never opened a connection beyond it
