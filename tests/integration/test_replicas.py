"""T9: several ``janitor run`` replicas on one database: every session is deleted exactly once.

Real processes (``python -m janitor run``), a real database (PostgreSQL; SQLite for the
two-process case) and simulated Jupyter servers served over loopback HTTP from the test
process. Leases are per target (DESIGN 5, "Replicas"): with one target only one replica
sweeps at a time, by design; with several targets the replicas share them.

Sizes (CI runs each scenario once with a short lease, DESIGN 5 "Test sizes"; under
``JANITOR_TEST_FULL=1`` the sizes of reference/reliability.md T9/T10):

=====================================  ============================  ==========================
scenario                               CI                            FULL
=====================================  ============================  ==========================
exactly once, one target               3 replicas, 1,000 sessions    2 and 5 replicas, 1,000
                                                                     sessions, 100 runs each
                                                                     (random concurrency and
                                                                     jitter)
holder SIGKILLed mid-sweep             3 replicas, 150 sessions      1,000 sessions, 10 runs
several targets shared                 3 replicas × 6 targets        30 + 5 × 50, 10 runs
                                       (12 + 5 × 10 sessions)
holder frozen past its lease (T10)     2 replicas, 5 sessions        same
SQLite: one-shot vs daemon             1 + 1 processes, 100          same
=====================================  ============================  ==========================
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from janitor.model import AuditEvent, Outcome
from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from janitor.store.state import LeaseInfo
from tests.conftest import FULL
from tests.integration.procs import (
    JanitorProc,
    Procs,
    TargetSpec,
    Trail,
    assert_deleted_once,
    assert_trail_closed,
    audit_verify_cli,
    deletes_so_far,
    free_port,
    holder_pid,
    iter_json_messages,
    janitor_toml,
    prepare_database,
    served_sim,
    wait_until,
)

SESSIONS = 1000
REPEAT = 100 if FULL else 1
LEASE_TTL = "3s"


def _replicas(
    procs: Procs, tmp_path: Path, db_url: str, targets: list[TargetSpec], count: int, **kw: str
) -> list[JanitorProc]:
    """Start ``count`` daemons, each with its own health port."""
    started = []
    for n in range(count):
        config = tmp_path / f"replica-{n}.toml"
        config.write_text(janitor_toml(db_url, targets, listen_port=free_port(), **kw))
        started.append(procs.start(config, "run", name=f"replica-{n}"))
    return started


def _stop_all(replicas: list[JanitorProc]) -> None:
    """SIGTERM every live replica; each exits 0."""
    for proc in replicas:
        if proc.running:
            proc.signal(signal.SIGTERM)
    for proc in replicas:
        if not proc.expect_death:
            proc.expect_death = True
            assert proc.wait() == 0, proc.log()[-3000:]


def _all_done(store: Store, sim: JupyterSim, target: str) -> bool:
    with sim.lock:
        if sim.sessions:
            return False
    return not store.audit.pending_intents(target)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("replicas", "repetition"),
    [(n, r) for n in ((2, 5) if FULL else (3,)) for r in range(REPEAT)],
)
def test_replicas_delete_every_session_exactly_once(
    procs: Procs,
    serve: list[SimServer],
    tmp_path: Path,
    postgres_url: str,
    replicas: int,
    repetition: int,
) -> None:
    """T9: 1,000 idle sessions on one target, several daemons: each deleted exactly once."""
    sim, server = served_sim(serve, SESSIONS)
    ids = set(sim.sessions)
    prepare_database(tmp_path, postgres_url)
    # under FULL, vary the interleavings: concurrency per target and the scheduler's jitter
    rng = random.Random(repetition)
    concurrency = rng.choice((1, 4, 8, 16)) if FULL else 8
    jitter = rng.choice(("0s", "1s")) if FULL else "0s"
    running = _replicas(
        procs,
        tmp_path,
        postgres_url,
        [TargetSpec("notebooks", server.url + "/", max_concurrency=concurrency)],
        replicas,
        lease_ttl=LEASE_TTL,
        sweep_jitter=jitter,
    )
    store = Store.open(postgres_url)
    try:
        wait_until(
            lambda: _all_done(store, sim, "notebooks"), what="all sessions deleted", procs=procs
        )
        _stop_all(running)
        assert_deleted_once(sim, ids)
        trail = assert_trail_closed(store, "notebooks")
        assert trail.count(Outcome.EXECUTED) == dict.fromkeys(ids, 1)
        assert sum(trail.count(Outcome.ALREADY_ABSENT).values()) == 0
        assert len(trail.intents) == SESSIONS
    finally:
        store.close()
    # the replicas did contend: while one swept, the others were refused the lease
    refused = [p for p in running if any(_skips(p))]
    assert refused, "no replica was ever refused the lease"
    audit_verify_cli(tmp_path / "replica-0.toml")


def _skips(proc: JanitorProc) -> Iterator[str]:
    """The targets ``proc`` found held by another replica (from its JSON log)."""
    for record in iter_json_messages(proc, "janitor.sweep"):
        message = str(record.get("message", ""))
        if message.startswith("target ") and ", skipped" in message and "swept by" in message:
            yield message.split()[1].rstrip(":")


def _executed_targets(proc: JanitorProc) -> set[str]:
    """The targets on which ``proc`` executed at least one action (from its JSON log)."""
    done = set()
    for record in iter_json_messages(proc, "janitor.sweep"):
        message = str(record.get("message", ""))
        if message.startswith("target ") and " executed" in message and "->" in message:
            done.add(message.split()[1].rstrip(":"))
    return done


def _freeze_lease_holder(
    procs: Procs, store: Store, target: str
) -> tuple[JanitorProc, LeaseInfo, list[AuditEvent]]:
    """SIGSTOP the replica holding ``target``'s lease while it has intents open.

    Retries (SIGCONT, try again) until the frozen replica still holds an unexpired lease and
    has committed intents without outcomes: killing it then is a kill "mid-action, holding the
    lease", decided on state that cannot change any more.
    """

    def attempt() -> tuple[JanitorProc, LeaseInfo, list[AuditEvent]] | None:
        info = store.leases.get(f"target:{target}")
        if info is None or info.expires_at <= datetime.now(UTC):
            return None
        proc = procs.by_pid(holder_pid(info.holder))
        proc.signal(signal.SIGSTOP)
        time.sleep(0.3)  # commits already on the wire land; nothing new can start
        frozen = store.leases.get(f"target:{target}")
        open_intents = [
            i
            for i in store.audit.pending_intents(target)
            if frozen and i.fencing_token == frozen.token
        ]
        if (
            frozen is not None
            and frozen.holder == info.holder
            and frozen.expires_at > datetime.now(UTC) + timedelta(seconds=0.5)
            and open_intents
        ):
            return proc, frozen, open_intents
        proc.signal(signal.SIGCONT)
        return None

    return wait_until(attempt, what="the lease holder frozen mid-action", procs=procs)


@pytest.mark.postgres
@pytest.mark.parametrize("repetition", range(10 if FULL else 1))
def test_replica_killed_mid_sweep_is_taken_over_after_lease_expiry(
    procs: Procs,
    serve: list[SimServer],
    tmp_path: Path,
    postgres_url: str,
    repetition: int,
) -> None:
    """The lease holder is SIGKILLed mid-action; the others finish its work after expiry.

    Nothing is deleted twice, the dead holder's open intents are reconciled by the replica
    that took over (with a higher fencing token), and no row of the successor predates the
    dead holder's lease expiry.
    """
    sessions = SESSIONS if FULL else 150
    sim, server = served_sim(serve, sessions)
    ids = set(sim.sessions)
    prepare_database(tmp_path, postgres_url)
    running = _replicas(
        procs,
        tmp_path,
        postgres_url,
        [TargetSpec("notebooks", server.url + "/")],
        3,
        lease_ttl=LEASE_TTL,
    )
    store = Store.open(postgres_url)
    try:
        kill_after = sessions // 5 + random.Random(repetition).randint(0, sessions // 10)
        wait_until(
            lambda: deletes_so_far(sim) >= kill_after,
            what="the first replica mid-sweep",
            procs=procs,
        )
        victim, lease, open_intents = _freeze_lease_holder(procs, store, "notebooks")
        assert victim.kill() == -signal.SIGKILL
        deleted_at_kill = deletes_so_far(sim)
        assert deleted_at_kill < sessions, "the kill came after the sweep"
        after_kill = store.leases.get("target:notebooks")
        assert after_kill is not None
        assert after_kill.holder == lease.holder, "a dead process cannot release its lease"

        wait_until(
            lambda: _all_done(store, sim, "notebooks"),
            what="the survivors to finish the sweep",
            procs=procs,
        )
        _stop_all(running)

        assert_deleted_once(sim, ids)
        trail = assert_trail_closed(store, "notebooks")
        later = [e for e in trail.intents + trail.outcomes if (e.fencing_token or 0) > lease.token]
        assert later, "nobody took the target over"
        assert min(e.at for e in later) >= lease.expires_at, "taken over before the lease expired"
        for intent in open_intents:
            closing = [o for o in trail.outcomes if o.intent_id == intent.id]
            assert len(closing) == 1, closing
            assert closing[0].reason.startswith("reconciled: "), closing[0].reason
            assert (closing[0].fencing_token or 0) > lease.token
            assert closing[0].outcome in (Outcome.ALREADY_ABSENT, Outcome.FAILED)
        effective = Counter(
            o.session_id
            for o in trail.outcomes
            if o.outcome in (Outcome.EXECUTED, Outcome.ALREADY_ABSENT)
        )
        assert effective == dict.fromkeys(ids, 1), "one effective outcome per session"
    finally:
        store.close()


def _stopped(pid: int) -> bool:
    """True while the process is stopped (SIGSTOP): state ``T`` in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


@pytest.mark.postgres
def test_replica_frozen_past_its_lease_makes_no_call_after_resuming(
    procs: Procs, serve: list[SimServer], tmp_path: Path, postgres_url: str
) -> None:
    """T10: frozen after its intent and re-check, right before the DELETE; resumed late."""
    sim, server = served_sim(serve, 5)
    ids = set(sim.sessions)
    prepare_database(tmp_path, postgres_url)
    target = [TargetSpec("notebooks", server.url + "/", max_concurrency=1)]
    frozen_config = tmp_path / "frozen.toml"
    frozen_config.write_text(janitor_toml(postgres_url, target, lease_ttl="2s"))
    healthy_config = tmp_path / "healthy.toml"
    healthy_config.write_text(janitor_toml(postgres_url, target, lease_ttl="2s"))
    store = Store.open(postgres_url)
    try:
        frozen = procs.start(
            frozen_config,
            "run",
            name="frozen",
            env={"JANITOR_TEST_CRASH_AT": "stop:before_call"},
        )
        wait_until(lambda: _stopped(frozen.pid), what="the replica to stop itself", procs=procs)
        [claim] = store.audit.pending_intents("notebooks")
        stale = store.leases.get("target:notebooks")
        assert stale is not None
        assert holder_pid(stale.holder) == frozen.pid
        assert claim.fencing_token == stale.token
        with sim.lock:
            assert dict(sim.deletes) == {}, "frozen before its call"

        # a healthy replica takes the target over once the lease expired, reconciles the
        # frozen replica's claim (the session is still there: "decided anew") and deletes all
        healthy = procs.start(healthy_config, "run", name="healthy")
        wait_until(lambda: _all_done(store, sim, "notebooks"), what="the takeover", procs=procs)
        taken = store.leases.get("target:notebooks")
        assert taken is not None
        assert taken.token > stale.token

        # resumed long after its lease expired, the frozen replica must not call, and (outcome
        # rows are fenced like intents, DESIGN 6) must not add a second outcome to the intent
        # its successor already reconciled
        frozen.signal(signal.SIGCONT)
        wait_until(
            lambda: f"outcome of intent {claim.id} not recorded, the lease is lost" in frozen.log(),
            what="the resumed replica to give up",
            procs=procs,
        )
        _stop_all([frozen, healthy])

        assert "not done, the lease was lost before the call" in frozen.log()
        assert_deleted_once(sim, ids)
        trail = assert_trail_closed(store, "notebooks")
        closing = [o for o in trail.outcomes if o.intent_id == claim.id]
        assert [o.outcome for o in closing] == [Outcome.FAILED], "one outcome, the successor's"
        assert (closing[0].fencing_token or 0) > stale.token
        late = [e for e in (*trail.intents, *trail.outcomes) if (e.id or 0) > (claim.id or 0)]
        assert all(e.fencing_token != stale.token for e in late), "nothing written when stale"
        executed = [o for o in trail.outcomes if o.outcome is Outcome.EXECUTED]
        assert {o.session_id for o in executed} == ids
        assert all((o.fencing_token or 0) > stale.token for o in executed), "no stale call"
        assert "test stop point before_call reached" in frozen.log()
        # nor overwrite its successor's memory of the target with its stale view
        assert "memory of target notebooks not saved, the lease is lost" in frozen.log()
        assert store.observations.load("notebooks") == {}
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("repetition", range(10 if FULL else 1))
def test_replicas_share_several_targets_one_replica_per_target_at_a_time(
    procs: Procs,
    serve: list[SimServer],
    tmp_path: Path,
    postgres_url: str,
    repetition: int,
) -> None:
    """3 replicas × 6 targets (one simulator each): leases are per target, not global.

    Target ``nb-0`` is rate-limited, so the replica that takes it is busy with it for a
    while; sessions then appear on the other five targets. Another replica sweeps them while
    the first still holds ``nb-0``: different targets are swept by different replicas at the
    same time, each target by one replica at a time (its intents are in fencing order), and
    every session is deleted once.
    """
    slow_sessions, fast_sessions = (30, 50) if FULL else (12, 10)
    sims = [served_sim(serve, 0) for _ in range(6)]
    targets = [
        TargetSpec(
            f"nb-{n}",
            server.url + "/",
            max_concurrency=1 if n == 0 else 8,
            requests_per_second=3 if n == 0 else 2000,
        )
        for n, (_, server) in enumerate(sims)
    ]
    prepare_database(tmp_path, postgres_url)
    running = _replicas(procs, tmp_path, postgres_url, targets, 3, lease_ttl=LEASE_TTL)
    store = Store.open(postgres_url)
    try:
        for proc in running:  # every replica has swept (the empty targets) once
            wait_until(lambda proc=proc: _swept_once(proc), what=proc.name, procs=procs)
        slow = sims[0][0]
        for n in range(slow_sessions):
            slow.add_session(f"work/slow-{n}.ipynb", idle_for=timedelta(hours=3))
        wait_until(lambda: deletes_so_far(slow) >= 1, what="nb-0 being swept", procs=procs)
        lease = store.leases.get("target:nb-0")
        assert lease is not None
        busy = procs.by_pid(holder_pid(lease.holder))
        for sim, _ in sims[1:]:
            for n in range(fast_sessions):
                sim.add_session(f"work/fast-{n}.ipynb", idle_for=timedelta(hours=3))
        for target, (sim, _) in zip(targets, sims, strict=True):
            wait_until(
                lambda target=target, sim=sim: _all_done(store, sim, target.name),
                what=f"all sessions of {target.name} deleted",
                procs=procs,
            )
        _stop_all(running)
        trails = {}
        for target, (sim, _) in zip(targets, sims, strict=True):
            with sim.lock:
                ids = set(sim.deletes)
            assert len(ids) == (slow_sessions if target.name == "nb-0" else fast_sessions)
            assert_deleted_once(sim, ids)
            trails[target.name] = trail = assert_trail_closed(store, target.name)
            assert trail.count(Outcome.EXECUTED) == dict.fromkeys(ids, 1)
    finally:
        store.close()
    # the fast targets were swept while nb-0's sweep was still going on: their first intent
    # comes before nb-0's last one, so it was not nb-0's holder (busy with it) that took them
    slow_intents = [i.id or 0 for i in trails["nb-0"].intents]
    fast_intents = [i.id or 0 for t in targets[1:] for i in trails[t.name].intents]
    assert min(fast_intents) < max(slow_intents), "the targets were swept one after the other"
    others = {p.name: _executed_targets(p) for p in running if p is not busy}
    assert set().union(*others.values()) & {t.name for t in targets[1:]}, others
    assert "nb-0" in _executed_targets(busy)


def _swept_once(proc: JanitorProc) -> bool:
    """True once ``proc`` logged the end of a sweep."""
    return any(
        " finished in " in str(r.get("message", ""))
        for r in iter_json_messages(proc, "janitor.sweep")
    )


def _freeze_outside_a_transaction(procs: Procs, proc: JanitorProc, sqlite_url: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds no SQLite write lock.

    Every janitor transaction on SQLite is ``BEGIN IMMEDIATE``: a process frozen inside one
    would block every other process on the file (for the busy timeout), the test included.
    """
    path = sqlite_url.removeprefix("sqlite:///")

    def attempt() -> bool:
        proc.signal(signal.SIGSTOP)
        time.sleep(0.1)
        probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:  # "database is locked": frozen inside a write
            proc.signal(signal.SIGCONT)
            time.sleep(0.05)
            return False
        finally:
            probe.close()
        return True

    wait_until(attempt, what="the daemon frozen between transactions", procs=procs)


def test_sqlite_one_shot_sweep_is_refused_while_a_daemon_holds_the_lease(
    procs: Procs, serve: list[SimServer], tmp_path: Path, sqlite_url: str
) -> None:
    """Two processes on one SQLite file contend for a target's lease: one wins.

    The daemon is frozen while it holds the lease mid-sweep, so the one-shot ``janitor
    sweep`` certainly meets a valid lease: it exits 1 naming the holder and acts on nothing;
    resumed, the daemon finishes: every session deleted once.
    """
    sim, server = served_sim(serve, 100)
    ids = set(sim.sessions)
    prepare_database(tmp_path, sqlite_url)
    target = [TargetSpec("notebooks", server.url + "/", max_concurrency=2)]
    [daemon] = _replicas(procs, tmp_path, sqlite_url, target, 1, lease_ttl="60s")
    store = Store.open(sqlite_url)
    try:
        wait_until(lambda: deletes_so_far(sim) >= 10, what="the daemon mid-sweep", procs=procs)
        _freeze_outside_a_transaction(procs, daemon, sqlite_url)
        lease = store.leases.get("target:notebooks")
        assert lease is not None
        assert holder_pid(lease.holder) == daemon.pid
        before = deletes_so_far(sim)
        intents = len(Trail.load(store, "notebooks").intents)
        assert before < len(ids), "frozen before the end of its sweep"

        config = tmp_path / "one-shot.toml"
        config.write_text(janitor_toml(sqlite_url, target), encoding="utf-8")
        refused = procs.run(config, "sweep", name="one-shot")
        assert refused.code == 1, refused.stderr[-3000:]
        assert f"target notebooks is being swept by {lease.holder}" in refused.stderr
        assert deletes_so_far(sim) == before, "the refused sweep called nothing"
        assert len(Trail.load(store, "notebooks").intents) == intents, "nor wrote an intent"

        daemon.signal(signal.SIGCONT)
        wait_until(lambda: _all_done(store, sim, "notebooks"), what="the daemon", procs=procs)
        _stop_all([daemon])
        assert_deleted_once(sim, ids)
        trail = assert_trail_closed(store, "notebooks")
        assert trail.count(Outcome.EXECUTED) == dict.fromkeys(ids, 1)
        assert {i.fencing_token for i in trail.intents} == {lease.token}
    finally:
        store.close()
