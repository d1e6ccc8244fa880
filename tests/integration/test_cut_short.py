"""A daemon's sweep cut short, by SIGTERM or by ``sweep_timeout``: what starts and what is recorded.

A real ``janitor run`` process acts on the simulated Jupyter server over loopback, one action
at a time. The simulator holds the first DELETE while the test lands the event, so the event
certainly arrives while that call is in flight and the other sessions wait their turn:

* SIGTERM (DESIGN 5, "Daemon life": no new actions): the call in flight finishes and is
  recorded; none of the queued sessions is re-read, given an intent or deleted; exit 0.
* ``sweep_timeout`` (DESIGN 5, "a sweep past it is cancelled and audited"): the DELETE that
  is cut gets its ``unknown`` outcome from that very sweep, not later from reconciliation.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.model import AuditKind, Outcome
from janitor.sim.jupyter import SimServer
from janitor.store import Store
from tests.conftest import invoke
from tests.fakes.served import Hook, HookedSim, delete, recheck
from tests.integration.procs import (
    HANG_GUARD,
    JanitorProc,
    Procs,
    TargetSpec,
    Trail,
    janitor_toml,
    wait_until,
)

TARGET = "notebooks"

POLICY = """\
policies:
  - name: idle-notebooks
    match: {state: [idle], idle_for: 1h}
    action: delete
    mode: enforce
"""


@pytest.fixture
def dbview(sqlite_url: str) -> Iterator[Store]:
    """The test's own view of the daemon's database."""
    opened = Store.open(sqlite_url)
    yield opened
    opened.close()


def _served(serve: list[SimServer], sessions: int) -> tuple[HookedSim, SimServer]:
    sim = HookedSim(token="test-token")
    for n in range(sessions):
        sim.add_session(f"work/idle-{n}.ipynb", idle_for=timedelta(hours=3))
    server = sim.serve()
    serve.append(server)
    return sim, server


def _prepare(tmp_path: Path, db_url: str, server: SimServer) -> Path:
    """One sweep at start (the next one an hour later), one action at a time."""
    config = tmp_path / "janitor.toml"
    target = TargetSpec(TARGET, server.url + "/", max_concurrency=1)
    config.write_text(janitor_toml(db_url, [target], sweep_interval="1h"), encoding="utf-8")
    policies = tmp_path / "policy.yaml"
    policies.write_text(POLICY, encoding="utf-8")
    for args in (("db", "upgrade"), ("policy", "apply", "-f", str(policies))):
        result = invoke("-c", str(config), *args)
        assert result.exit_code == 0, result.output
    return config


def test_sigterm_with_sessions_queued_starts_no_action_after_the_signal(
    procs: Procs, serve: list[SimServer], dbview: Store, tmp_path: Path, sqlite_url: str
) -> None:
    sim, server = _served(serve, 4)
    config = _prepare(tmp_path, sqlite_url, server)
    started: list[JanitorProc] = []

    def terminate() -> None:
        """SIGTERM while the first DELETE is in flight; answer it once the daemon took it."""
        [daemon] = wait_until(lambda: started, what="the daemon to be started")
        daemon.signal(signal.SIGTERM)
        wait_until(lambda: "received SIGTERM" in daemon.log(), what="the daemon to get SIGTERM")

    sim.hook(Hook(when=delete, before=terminate))
    daemon = procs.start(config, "run", name="daemon")
    started.append(daemon)
    daemon.expect_death = True
    assert daemon.wait() == 0, daemon.log()[-3000:]

    deletes = sim.calls(delete)
    assert len(deletes) == 1, f"only the call in flight at the signal went out: {deletes}"
    assert len(sim.calls(recheck)) == 1, "no queued session was even re-read after the signal"
    with sim.lock:
        left = set(sim.sessions)
    assert len(left) == 3
    assert not any(deletes[0].endswith(sid) for sid in left)
    trail = Trail.load(dbview, TARGET)
    assert len(trail.intents) == 1, "no intent after the signal"
    assert [(o.intent_id, o.outcome) for o in trail.outcomes] == [
        (trail.intents[0].id, Outcome.EXECUTED)
    ], "the call in flight finished and was recorded"
    assert "janitor stopped" in daemon.log()


def test_a_delete_cut_by_the_sweep_timeout_is_recorded_unknown_in_that_sweep(
    procs: Procs, serve: list[SimServer], dbview: Store, tmp_path: Path, sqlite_url: str
) -> None:
    sim, server = _served(serve, 2)
    config = _prepare(tmp_path, sqlite_url, server)
    release = threading.Event()
    sim.hook(Hook(when=delete, before=lambda: release.wait(HANG_GUARD)))

    # The same setting from the environment: the sweep is cancelled 3 s after it started,
    # while the simulator holds its first DELETE (the second session waits its turn).
    daemon = procs.start(config, "run", name="daemon", env={"JANITOR_SWEEP_TIMEOUT": "3s"})
    try:
        [aborted] = wait_until(
            lambda: dbview.audit.events(kinds=[AuditKind.SWEEP_ABORTED]),
            what="the sweep timeout",
            procs=procs,
        )
    finally:
        release.set()  # the server finishes the DELETE it was given; janitor is gone
    # No sweep runs after the one that was cut (the next is an hour away): whatever outcome
    # the intent has once the daemon exited, the cut sweep wrote it.
    assert daemon.stop() == 0, daemon.log()[-3000:]

    assert "sweep cancelled after its timeout of 3s" in aborted.reason
    assert len(sim.calls(delete)) == 1
    trail = Trail.load(dbview, TARGET)
    [intent] = trail.intents
    assert [(o.intent_id, o.outcome) for o in trail.outcomes] == [(intent.id, Outcome.UNKNOWN)]
    [outcome] = trail.outcomes
    assert outcome.sweep_id == intent.sweep_id, "recorded by the sweep that was cut"
    assert (outcome.id or 0) < (aborted.id or 0), "recorded before the sweep counts as ended"
    assert "cut off" in outcome.reason
    assert dbview.audit.pending_intents(TARGET) == [intent], "left to reconciliation"
