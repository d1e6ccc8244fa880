"""T11 with a real ``kill -9``: an enforce sweep SIGKILLed from outside at a random moment.

Unlike ``test_crash.py`` (an ``os._exit`` at a named point inside janitor), nothing in the
janitor process knows it is tested: ``janitor sweep`` runs unmodified, the test sends
``SIGKILL`` from outside (``os.kill``) at a moment drawn uniformly from the sweep's duration,
counted from the first request the simulated Jupyter server sees. The sweep deletes a few
dozen idle sessions, paced by ``requests_per_second`` so it lasts a second or two (its
duration is measured beforehand by an uninterrupted sweep of the same size): the kill lands
anywhere, in a listing, an intent commit, a re-check, a DELETE in flight, an outcome commit,
a lease renewal, the memory save or the lease release.

The simulator is wrapped so that, for every ``DELETE`` it receives, it looks into the
database (a plain read connection of the test, not janitor's) *before* acting: which intent
rows of that session are committed, and which of them are still open. Then janitor restarts
(``janitor sweep`` after the dead lease expired, or ``janitor run``, which waits for it) and
the test checks, against the server's log and the audit rows:

* every DELETE that reached the server had a committed, still open intent of its session,
  stamped before the request arrived; no two DELETEs share an intent (nothing re-issued);
* no session was deleted twice with effect (a second DELETE answered 404 would be allowed,
  but it needs its own intent), and after the restart every session is gone;
* every intent has exactly one final outcome; the intents the kill left open were closed by
  the restart with ``reconciled: ...``, ``already_absent`` exactly when the server had
  executed their DELETE, otherwise ``failed`` and the session decided anew;
* one effective outcome per session, each ``executed`` backed by a 204 the server answered;
* the hash chain verifies (``janitor audit verify``).

CI runs 2 kills per database (about 6 s each on an idle machine, after one calibration
sweep per database), one restarted by ``janitor sweep`` and one by ``janitor run``; ``JANITOR_TEST_FULL=1`` runs 50 per database, with random sizes and
concurrency. The kill moments come from a seeded RNG: the seed is printed and attached to
any failure; ``JANITOR_TEST_SIGKILL_SEED=N`` replays the same draws (the timing of the
processes around them still varies).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select

from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.sim.jupyter import JupyterSim, Response, SimServer
from janitor.store import Store
from janitor.store.db import normalize_url
from janitor.store.tables import AuditRow, SweepRow
from tests.conftest import FULL
from tests.integration.procs import (
    JanitorProc,
    Procs,
    TargetSpec,
    assert_trail_closed,
    audit_verify_cli,
    iter_json_messages,
    janitor_toml,
    prepare_database,
    wait_until,
)

TARGET = "notebooks"
LEASE = f"target:{TARGET}"
REPEAT = 50 if FULL else 2
#: Requests per second janitor may send: paces the sweep (unpaced, 40 deletions take ~0.4 s).
RATE = 30.0
#: Measured sweep durations in seconds, per (database, sessions, concurrency).
_DURATIONS: dict[tuple[str, int, int], float] = {}

_env_seed = os.environ.get("JANITOR_TEST_SIGKILL_SEED")  # read before the fixtures scrub it
BASE_SEED = int(_env_seed) if _env_seed else random.SystemRandom().randrange(2**32)


@dataclass(frozen=True)
class Seen:
    """One request as the server received it; for a DELETE, the intents committed by then."""

    method: str
    path: str
    at: datetime
    status: int
    intents: dict[int, datetime]  # every committed intent of the session: id → its `at`
    open: frozenset[int]  # those of them without any outcome row yet

    @property
    def session_id(self) -> str:
        """The id at the end of the path."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class IntentView:
    """What the database has committed, read through the test's own plain connections.

    Not janitor's :class:`Store`: on SQLite its transactions begin ``IMMEDIATE`` (a write
    lock); these reads take none and never delay the janitor process.
    """

    def __init__(self, db_url: str) -> None:
        url = normalize_url(db_url)
        args = {"check_same_thread": False} if url.get_backend_name() == "sqlite" else {}
        self.engine: Engine = create_engine(url, connect_args=args)

    def of_session(
        self, target: str, session_id: str
    ) -> tuple[dict[int, datetime], frozenset[int]]:
        """The session's committed intents (id → at) and those without an outcome row."""
        with self.engine.connect() as conn:
            intents = {
                row.id: row.at
                for row in conn.execute(
                    select(AuditRow.id, AuditRow.at).where(
                        AuditRow.kind == AuditKind.INTENT.value,
                        AuditRow.target == target,
                        AuditRow.session_id == session_id,
                    )
                )
            }
            closed = set(
                conn.scalars(
                    select(AuditRow.intent_id).where(
                        AuditRow.kind == AuditKind.OUTCOME.value,
                        AuditRow.intent_id.in_(list(intents)),
                    )
                )
            )
        return intents, frozenset(intents.keys() - closed)

    def close(self) -> None:
        """Close the pooled connections."""
        self.engine.dispose()


class WitnessSim(JupyterSim):
    """The simulator, logging every request it answers with what the database held."""

    def __init__(self, view: IntentView, target: str) -> None:
        super().__init__(token="test-token")
        self.view = view
        self.target = target
        self.seen: list[Seen] = []
        self.first_request = threading.Event()
        self.first_at = 0.0  # time.monotonic() of the first request
        self.first_wall = datetime.min.replace(tzinfo=UTC)  # and its wall-clock time

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> Response:
        """Record the request; for a DELETE, read the committed intents before acting."""
        arrived, at = time.monotonic(), datetime.now(UTC)
        with self.lock:
            if not self.first_request.is_set():
                self.first_at, self.first_wall = arrived, at
                self.first_request.set()
        intents: dict[int, datetime] = {}
        still_open: frozenset[int] = frozenset()
        if method == "DELETE":
            intents, still_open = self.view.of_session(
                self.target, path.rstrip("/").rsplit("/", 1)[-1]
            )
        response = super().handle(method, path, query, headers)
        with self.lock:
            self.seen.append(Seen(method, path, at, response.status, intents, still_open))
        return response

    def delete_requests(self) -> list[Seen]:
        """The DELETE requests, in the order they were answered."""
        with self.lock:
            return [s for s in self.seen if s.method == "DELETE"]


@dataclass(frozen=True)
class Draw:
    """What the seeded RNG chose for one repetition."""

    backend: str
    seed: int
    sessions: int
    concurrency: int
    fraction: float  # where in the sweep's duration the kill lands, uniform in [0, 1)

    @classmethod
    def make(cls, backend: str, repetition: int) -> Draw:
        """The draws for one test; sizes vary only under FULL."""
        seed = BASE_SEED + repetition + (0 if backend == "sqlite" else 1_000_003)
        rng = random.Random(seed)
        sessions = rng.randint(30, 60) if FULL else 30
        concurrency = rng.choice((1, 2, 4, 8, 16)) if FULL else 8
        return cls(backend, seed, sessions, concurrency, rng.random())


@pytest.fixture
def dbview(db_url: str) -> Iterator[Store]:
    """The test's view of the database the processes share (not migrated here)."""
    opened = Store.open(db_url)
    yield opened
    opened.close()


@pytest.fixture
def intents_view(db_url: str) -> Iterator[IntentView]:
    """Plain read connections for the simulator's look at the committed intents."""
    view = IntentView(db_url)
    yield view
    view.close()


def _serve_target(
    serve: list[SimServer], view: IntentView, tmp_path: Path, db_url: str, name: str, draw: Draw
) -> tuple[WitnessSim, Path]:
    """A served simulator with the draw's idle sessions, and a config with it as a target."""
    sim = WitnessSim(view, name)
    for n in range(draw.sessions):
        sim.add_session(f"work/idle-{n}.ipynb", idle_for=timedelta(hours=3))
    server = sim.serve()
    serve.append(server)
    _quiet_resets(server)
    config = tmp_path / f"{name}.toml"
    target = TargetSpec(name, server.url + "/", draw.concurrency, requests_per_second=RATE)
    config.write_text(janitor_toml(db_url, [target], lease_ttl="2s"), encoding="utf-8")
    return sim, config


def _sweep_duration(
    procs: Procs,
    serve: list[SimServer],
    store: Store,
    view: IntentView,
    tmp_path: Path,
    db_url: str,
    draw: Draw,
) -> float:
    """How long a whole sweep of the draw's size lasts: from its first request to its end.

    Measured, not computed: at high concurrency the rate limit sets the pace, at low
    concurrency the database does. Once per database, size and concurrency, with an
    uninterrupted ``janitor sweep`` on a target of its own in the same database (the same
    reads per DELETE in the simulator), up to the end it records for itself (after its last
    outcome, the memory save and the lease release). It is also the control: each session
    deleted once.
    """
    key = (draw.backend, draw.sessions, draw.concurrency)
    if key not in _DURATIONS:
        sim, config = _serve_target(serve, view, tmp_path, db_url, "calibration", draw)
        swept = procs.run(config, "sweep", name="calibration")
        assert swept.code == 0, swept.stderr[-3000:]
        with sim.lock:
            assert sim.sessions == {}
            assert set(sim.deletes.values()) == {1}
        with store.db.transaction() as tx:
            ended = tx.scalar(select(func.max(SweepRow.finished_at)))
        assert ended is not None
        _DURATIONS[key] = (ended - sim.first_wall).total_seconds()
    return _DURATIONS[key]


def _quiet_resets(server: SimServer) -> None:
    """Do not print the connection resets the kill causes (expected); print other errors."""
    default = server.httpd.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            default(request, client_address)

    server.httpd.handle_error = handle_error  # type: ignore[method-assign]


def _lease_expired(store: Store) -> bool:
    lease = store.leases.get(LEASE)
    return lease is None or lease.expires_at < datetime.now(UTC)


def _swept_with_the_lease(daemon: JanitorProc) -> bool:
    """The daemon finished a sweep of the target in which it held the lease (its JSON log).

    Also when nothing was left to do: a SIGTERM before the daemon is up proves nothing (and
    kills it by the signal, before it installed its handler).
    """
    return any(
        message.startswith(f"target {TARGET}: ") and " sessions (" in message
        for message in (
            str(r.get("message", "")) for r in iter_json_messages(daemon, "janitor.sweep")
        )
    )


def _all_done(store: Store, sim: JupyterSim) -> bool:
    with sim.lock:
        if sim.sessions:
            return False
    return not store.audit.pending_intents(TARGET)


@pytest.mark.parametrize(
    ("repetition", "restart"), [(r, ("sweep", "run")[r % 2]) for r in range(REPEAT)]
)
def test_sweep_sigkilled_at_a_random_moment_deletes_nothing_twice_and_reconciles(
    procs: Procs,
    serve: list[SimServer],
    dbview: Store,
    intents_view: IntentView,
    tmp_path: Path,
    db_url: str,
    repetition: int,
    restart: str,
) -> None:
    """``kill -9`` mid-sweep, restart: no double delete, every intent closed, chain intact."""
    draw = Draw.make("sqlite" if db_url.startswith("sqlite") else "postgres", repetition)
    print(f"seed {draw.seed} (JANITOR_TEST_SIGKILL_SEED={BASE_SEED}): {draw}")
    try:
        _scenario(procs, serve, dbview, intents_view, tmp_path, db_url, draw, restart)
    except BaseException as exc:
        exc.add_note(f"replay: JANITOR_TEST_SIGKILL_SEED={BASE_SEED} ({draw})")
        raise


def _scenario(
    procs: Procs,
    serve: list[SimServer],
    dbview: Store,
    view: IntentView,
    tmp_path: Path,
    db_url: str,
    draw: Draw,
    restart: str,
) -> None:
    prepare_database(tmp_path, db_url)
    duration = _sweep_duration(procs, serve, dbview, view, tmp_path, db_url, draw)
    sim, config = _serve_target(serve, view, tmp_path, db_url, TARGET, draw)
    ids = set(sim.sessions)

    # --- the kill: from outside, at a uniform moment of the sweep ---------------------------
    victim = procs.start(config, "sweep", "-o", "json", name="victim")
    victim.expect_death = True
    wait_until(
        lambda: sim.first_request.is_set() or not victim.running,
        what="the sweep's first request",
        interval=0.002,
    )
    assert sim.first_request.is_set(), victim.log()[-3000:]
    delay = draw.fraction * duration
    time.sleep(max(0.0, sim.first_at + delay - time.monotonic()))
    os.kill(victim.pid, signal.SIGKILL)
    code = victim.wait()
    open_at_kill = {i.id for i in dbview.audit.pending_intents(TARGET)}
    with sim.lock:
        left_at_kill = len(sim.sessions)
    print(
        f"killed {delay:.3f}s into a {duration:.2f}s sweep: exit {code}, "
        f"{draw.sessions - left_at_kill} of {draw.sessions} deleted, "
        f"{len(open_at_kill)} intents open"
    )
    if code == 0:  # the sweep had already ended (the kill came in its last moment)
        assert left_at_kill == 0, victim.stdout()
    else:
        assert code == -signal.SIGKILL, victim.log()[-3000:]

    # --- the restart ------------------------------------------------------------------------
    if restart == "sweep":
        wait_until(lambda: _lease_expired(dbview), what="the dead process's lease to expire")
        again = procs.run(config, "sweep", "-o", "json", name="restart")
        assert again.code == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["targets"][0]["reconciled"] == len(open_at_kill)
    else:
        daemon = procs.start(config, "run", name="restart")
        wait_until(
            lambda: _swept_with_the_lease(daemon) and _all_done(dbview, sim),
            what="the restarted daemon to sweep and finish",
            timeout=60,
            procs=procs,
        )
        assert daemon.stop() == 0, daemon.log()[-3000:]

    # --- what the server saw against what the audit trail says ------------------------------
    by_intent = _deletes_by_intent(sim)
    with sim.lock:
        assert sim.sessions == {}, f"{len(sim.sessions)} sessions survived the restart"
    effective = Counter(s.session_id for s in sim.delete_requests() if s.status == 204)
    assert effective == dict.fromkeys(ids, 1), "each session deleted exactly once, with effect"
    trail = assert_trail_closed(dbview, TARGET)  # no open intent, fencing order, chain OK
    _assert_outcomes_match_the_server(trail.intents, trail.outcomes, by_intent, open_at_kill)
    assert Counter(
        o.session_id
        for o in trail.outcomes
        if o.outcome in (Outcome.EXECUTED, Outcome.ALREADY_ABSENT)
    ) == dict.fromkeys(ids, 1), "one effective outcome per session"
    audit_verify_cli(config)


def _deletes_by_intent(sim: WitnessSim) -> dict[int, Seen]:
    """Each DELETE the server received, under the intent it was made for.

    The request must find a committed intent of its session, still open and stamped before
    it arrived; the newest such intent is the one it carries out. Two requests for one
    intent would be a re-issued action.
    """
    by_intent: dict[int, Seen] = {}
    for seen in sim.delete_requests():
        assert seen.open, (
            f"DELETE {seen.path} at {seen.at} reached the server without a committed open "
            f"intent (committed intents of the session: {seen.intents})"
        )
        intent = max(seen.open)
        assert seen.intents[intent] <= seen.at, f"intent {intent} is stamped after its DELETE"
        other = by_intent.setdefault(intent, seen)
        assert other is seen, f"intent {intent} was carried out twice: {other} and {seen}"
    return by_intent


def _assert_outcomes_match_the_server(
    intents: list[AuditEvent],
    outcomes: list[AuditEvent],
    by_intent: dict[int, Seen],
    open_at_kill: set[int],
) -> None:
    """Every intent's one final outcome agrees with what the server answered for it."""
    final = [o for o in outcomes if o.outcome is not Outcome.UNKNOWN]
    counts = Counter(o.intent_id for o in final)
    assert all(n == 1 for n in counts.values()), f"intents closed twice: {counts}"
    closing = {o.intent_id: o for o in final}
    reconciled = {o.intent_id for o in final if o.reason.startswith("reconciled: ")}
    assert reconciled == open_at_kill, "exactly the intents the kill left open were reconciled"
    for intent in intents:
        assert intent.id is not None
        outcome, delete = closing[intent.id], by_intent.get(intent.id)
        took_effect = delete is not None and delete.status == 204
        server = f"the server {'executed' if took_effect else 'did not execute'} its DELETE"
        what = f"intent {intent.id} on {intent.session_id} ended {outcome.outcome}, {server}"
        if intent.id in reconciled:
            expected = Outcome.ALREADY_ABSENT if took_effect else Outcome.FAILED
            assert outcome.outcome is expected, f"{what}: {outcome.reason}"
        else:
            assert took_effect == (outcome.outcome is Outcome.EXECUTED), f"{what}: {delete}"
