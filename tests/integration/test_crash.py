"""T11: a janitor process killed at a crash point loses no audit record and deletes nothing twice.

The test hook ``JANITOR_TEST_CRASH_AT`` makes a real process ``os._exit(137)`` at the first
destructive action, right after the intent commit (``after_intent``) or right after the
provider call returned (``after_call``). ``os._exit`` is as abrupt as ``kill -9`` for what
matters here: no ``finally``, no lease release, no sweep record, no outcome row; the tests
check exactly that before restarting. A second process without the hook then reconciles:

* ``after_intent``: the session still exists → the intent is closed ``failed`` ("will be
  decided anew") and the same sweep deletes the session once, under a new intent;
* ``after_call``: the session is gone → the intent is closed ``already_absent``.

Either way: every intent has an outcome, the hash chain verifies, each session saw at most
one DELETE, and no DELETE happened without a committed intent. The dead process's lease stays
valid until its TTL: a ``janitor sweep`` started meanwhile exits 1 naming the dead holder.

CI runs each crash point once per database through ``janitor sweep`` and once through
``janitor run`` (one point per database); under ``JANITOR_TEST_FULL=1`` the one-shot case
runs 50 times per point and database, with random sizes and concurrency.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from janitor.model import Outcome
from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from janitor.store.tables import SweepRow
from tests.conftest import FULL
from tests.integration.procs import (
    JanitorProc,
    Procs,
    TargetSpec,
    Trail,
    assert_trail_closed,
    audit_verify_cli,
    holder_pid,
    janitor_toml,
    prepare_database,
    served_sim,
    wait_until,
)

TARGET = "notebooks"
LEASE = f"target:{TARGET}"
CRASH_POINTS = ("after_intent", "after_call")
REPEAT = 50 if FULL else 1


@pytest.fixture
def dbview(db_url: str) -> Iterator[Store]:
    """The test's own view of the database the processes share (not migrated here)."""
    opened = Store.open(db_url)
    yield opened
    opened.close()


def _config(
    tmp_path: Path, db_url: str, server: SimServer, *, concurrency: int, lease_ttl: str
) -> Path:
    config = tmp_path / "janitor.toml"
    target = TargetSpec(TARGET, server.url + "/", max_concurrency=concurrency)
    config.write_text(janitor_toml(db_url, [target], lease_ttl=lease_ttl), encoding="utf-8")
    return config


def _sizes(repetition: int) -> tuple[int, int]:
    """(sessions, max_concurrency): fixed in CI (one action in flight); random under FULL."""
    if not FULL:
        return 5, 1
    rng = random.Random(repetition)
    return rng.randint(2, 30), rng.choice((1, 1, 2, 4, 8))


def _assert_died_like_kill_9(store: Store, sim: JupyterSim, point: str, pid: int) -> list[str]:
    """Nothing ran after the crash point; return the sessions of the intents left open."""
    pending = store.audit.pending_intents(TARGET)
    assert pending, "the crash left no open intent"
    lease = store.leases.get(LEASE)
    assert lease is not None
    assert holder_pid(lease.holder) == pid, "the lease is still the dead process's"
    assert lease.expires_at > max(i.at for i in pending), "the lease was not released"
    with store.db.transaction() as tx:
        statuses = set(tx.scalars(select(SweepRow.status)))
    assert statuses == {"running"}, "the sweep's end was never recorded"
    trail = Trail.load(store, TARGET)
    assert trail.outcomes == [], "no outcome row was written"
    victims = [i.session_id or "" for i in pending]
    with sim.lock:
        deletes, left = dict(sim.deletes), set(sim.sessions)
    assert set(deletes) <= set(victims), "a DELETE without a committed intent"
    if point == "after_intent":  # the first intent commit ended the process
        assert deletes == {}
        assert set(victims) <= left
    if point == "after_call":
        crashed_after = [v for v in victims if v not in left]
        assert crashed_after, "the DELETE that returned before the crash happened"
        assert all(deletes[v] == 1 for v in crashed_after)
    return victims


def _assert_recovered(store: Store, sim: JupyterSim, ids: set[str], victims: list[str]) -> None:
    """Every intent closed, the right reconcile outcome, each session deleted once."""
    trail = assert_trail_closed(store, TARGET)
    with sim.lock:
        deletes, left = dict(sim.deletes), set(sim.sessions)
    assert left == set(), "the restarted process finished the work"
    assert deletes == dict.fromkeys(ids, 1), "each session got exactly one DELETE"
    assert set(deletes) <= {i.session_id for i in trail.intents}, "a DELETE without an intent"
    reconciled = [o for o in trail.outcomes if o.reason.startswith("reconciled: ")]
    assert sorted(o.session_id or "" for o in reconciled) == sorted(victims)
    for row in reconciled:
        later = [o for o in trail.outcomes_of(row.session_id or "") if o.id != row.id]
        if row.outcome is Outcome.FAILED:  # the DELETE never happened: decided anew, once
            assert "will be decided anew" in row.reason
            assert [o.outcome for o in later] == [Outcome.EXECUTED]
            assert (later[0].id or 0) > (row.id or 0)
        else:  # the DELETE happened before the crash: closed, never re-issued
            assert row.outcome is Outcome.ALREADY_ABSENT, row
            assert later == []
    executed = trail.count(Outcome.EXECUTED)
    absent = trail.count(Outcome.ALREADY_ABSENT)
    assert executed + absent == dict.fromkeys(ids, 1), "one effective outcome per session"


def _crash(procs: Procs, config: Path, point: str, command: str = "sweep") -> JanitorProc:
    """Run janitor with the crash hook until it exits 137 at ``point``."""
    proc = procs.start(config, command, name=f"crash-{point}", env={"JANITOR_TEST_CRASH_AT": point})
    proc.expect_death = True
    code = proc.wait()
    assert code == 137, proc.log()[-3000:]
    assert f"test crash point {point} reached" in proc.log()
    return proc


def _lease_expired(store: Store) -> bool:
    lease = store.leases.get(LEASE)
    return lease is None or lease.expires_at < datetime.now(UTC)


@pytest.mark.parametrize("repetition", range(REPEAT))
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sweep_killed_at_crash_point_is_reconciled_by_the_next_sweep(
    procs: Procs,
    serve: list[SimServer],
    dbview: Store,
    tmp_path: Path,
    db_url: str,
    point: str,
    repetition: int,
) -> None:
    """``janitor sweep`` dies at the crash point; the next ``janitor sweep`` reconciles."""
    sessions, concurrency = _sizes(repetition)
    sim, server = served_sim(serve, sessions)
    ids = set(sim.sessions)
    prepare_database(tmp_path, db_url)
    config = _config(tmp_path, db_url, server, concurrency=concurrency, lease_ttl="2s")

    crashed = _crash(procs, config, point)
    victims = _assert_died_like_kill_9(dbview, sim, point, crashed.pid)
    if concurrency == 1:
        assert len(victims) == 1, "one action in flight, one open intent"

    # the restarted one-shot sweep waits for the dead process's lease to expire
    wait_until(lambda: _lease_expired(dbview), what="the dead process's lease to expire")
    restarted = procs.run(config, "sweep", "-o", "json", name="restart")
    _assert_recovered(dbview, sim, ids, victims)
    summary = json.loads(restarted.stdout)["targets"][0]
    assert summary["reconciled"] == len(victims)
    # Closing the dead process's intents is bookkeeping: those outcomes are in the audit
    # trail and the metrics, not in this sweep's outcomes, and do not fail it (exit 0).
    reconciled = [
        o for o in Trail.load(dbview, TARGET).outcomes if o.reason.startswith("reconciled")
    ]
    assert len(reconciled) == len(victims)
    expected = Outcome.FAILED if point == "after_intent" else Outcome.ALREADY_ABSENT
    assert {o.outcome for o in reconciled} == {expected}
    gone_before = len(victims) if point == "after_call" else 0
    assert summary["outcomes"] == {"executed": sessions - gone_before}
    assert restarted.code == 0, restarted.stderr[-3000:]
    audit_verify_cli(config)


@pytest.mark.parametrize(
    ("db_url", "point"),
    [
        pytest.param("postgres", "after_intent", marks=pytest.mark.postgres),
        ("sqlite", "after_call"),
    ],
    indirect=["db_url"],
)
def test_daemon_killed_at_crash_point_is_reconciled_after_restart(
    procs: Procs,
    serve: list[SimServer],
    dbview: Store,
    tmp_path: Path,
    db_url: str,
    point: str,
) -> None:
    """``janitor run`` dies at the crash point; a restarted daemon waits, reconciles, sweeps."""
    sim, server = served_sim(serve, 5)
    ids = set(sim.sessions)
    prepare_database(tmp_path, db_url)
    config = _config(tmp_path, db_url, server, concurrency=1, lease_ttl="2s")

    crashed = _crash(procs, config, point, command="run")
    victims = _assert_died_like_kill_9(dbview, sim, point, crashed.pid)
    assert len(victims) == 1

    # the restarted daemon is refused the lease until it expires, then reconciles and sweeps
    daemon = procs.start(config, "run", name="restart")

    def finished() -> bool:
        with sim.lock:
            if sim.sessions:
                return False
        return not dbview.audit.pending_intents(TARGET)

    wait_until(finished, what="the restarted daemon to finish", procs=procs)
    assert daemon.stop() == 0, daemon.log()[-3000:]
    _assert_recovered(dbview, sim, ids, victims)
    audit_verify_cli(config)


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_sweep_exits_1_naming_the_dead_holder_while_its_lease_is_valid(
    procs: Procs, serve: list[SimServer], dbview: Store, tmp_path: Path, db_url: str
) -> None:
    """DESIGN 5: "if another process holds it, it exits 1 naming the holder" (here: a dead one)."""
    sim, server = served_sim(serve, 3)
    prepare_database(tmp_path, db_url)
    config = _config(tmp_path, db_url, server, concurrency=1, lease_ttl="10m")
    crashed = _crash(procs, config, "after_intent")
    lease = dbview.leases.get(LEASE)
    assert lease is not None
    rows_before = len(Trail.load(dbview, TARGET).intents)

    blocked = procs.run(config, "sweep", name="blocked")
    assert blocked.code == 1, blocked.stderr[-3000:]
    assert f"target {TARGET} is being swept by {lease.holder}" in blocked.stderr
    assert holder_pid(lease.holder) == crashed.pid
    assert len(Trail.load(dbview, TARGET).intents) == rows_before, "it wrote no intent"
    assert dbview.audit.pending_intents(TARGET) != [], "nor reconciled the holder's intent"
    with sim.lock:
        assert dict(sim.deletes) == {}, "and called nothing"
