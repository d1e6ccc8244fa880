"""Whole sweeps of a glue target against the fake Glue (tests/fakes/glue.py), for what moto
lacks: STOPPED, statements, a delete refused while the session is still stopping.

Asserted on what the fake received (the operations, in order) and on the audit rows:

* a delete of a READY session is StopSession then DeleteSession, under one intent;
* a delete refused because the session is still stopping is ``accepted``; the sweeps after
  it make the delete once the session is STOPPED, and not while janitor is paused;
* a ``stop`` is accepted and settles at STOPPED; old STOPPED sessions are deleted directly;
* a busy session, and one whose statements cannot be read, are left alone.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.store import Store
from tests.conftest import NOW
from tests.fakes.glue import ACCESS_KEY, ENDPOINT, REGION, SECRET_KEY, Fault, GlueServer
from tests.integration.glue_world import GlueWorld, aws_environment

IDLE_DELETE = {
    "name": "idle-glue",
    "match": {"provider_state": ["READY"], "state": ["idle"], "idle_for": "1h"},
    "action": "delete",
    "mode": "enforce",
}
IDLE_STOP = {**IDLE_DELETE, "name": "idle-glue-stop", "action": "stop"}
OLD_STOPPED = {
    "name": "old-stopped-glue",
    "match": {"provider_state": ["STOPPED", "FAILED", "TIMEOUT"], "age": "7d"},
    "action": "delete",
    "mode": "enforce",
}


@pytest.fixture
def server(clock: FrozenClock) -> GlueServer:
    """The fake Glue on the frozen clock."""
    return GlueServer(clock=clock)


@pytest.fixture
def world(
    sqlite_store: Store,
    clock: FrozenClock,
    server: GlueServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> GlueWorld:
    """Sweeps of a glue target at the fake, credentials from the environment."""
    aws_environment(monkeypatch, tmp_path, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    return GlueWorld(
        store=sqlite_store,
        clock=clock,
        target={"region": REGION, "endpoint_url": ENDPOINT},
        transport=server.transport(),
    )


def writes(server: GlueServer) -> list[str]:
    """The destructive operations the fake received, in order."""
    return server.ops("StopSession", "DeleteSession")


def test_a_delete_of_a_ready_session_stops_then_deletes_under_one_intent(
    world: GlueWorld, server: GlueServer
) -> None:
    server.stop_at_once = True
    server.add("etl", age=timedelta(hours=3))
    world.apply(IDLE_DELETE)

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert writes(server) == ["StopSession", "DeleteSession"]
    assert "etl" not in server.sessions
    assert len(world.intents("etl")) == 1
    assert world.outcomes("etl") == [Outcome.EXECUTED]
    origins = {body.get("RequestOrigin") for op, body in server.log if op != "GetTags"}
    assert origins == {"janitor", None}  # None: the STS call, which takes no RequestOrigin
    assert [op for op, _ in server.log if op == "sts"] == ["sts"]


def test_a_delete_refused_while_stopping_is_accepted_then_made_once_stopped(
    world: GlueWorld, server: GlueServer
) -> None:
    server.add("etl", age=timedelta(hours=3))
    world.apply(IDLE_DELETE)

    first = world.sweep()
    assert first.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert writes(server) == ["StopSession", "DeleteSession"]  # the delete refused: STOPPING
    assert server.sessions["etl"].status == "STOPPING"

    second = world.sweep()  # still stopping: open, nothing sent
    assert second.targets[0].settling == 1
    assert writes(server) == ["StopSession", "DeleteSession"]

    server.finish("etl")
    third = world.sweep()

    assert writes(server) == ["StopSession", "DeleteSession", "DeleteSession"]
    assert "etl" not in server.sessions
    assert server.deletes["etl"] == 1
    assert len(world.intents("etl")) == 1, "one intent from the stop to the delete"
    assert world.outcomes("etl") == [Outcome.ACCEPTED, Outcome.EXECUTED]
    assert third.targets[0].error is None
    assert world.store.audit.pending_intents("glue") == []
    assert world.store.audit.verify().ok


def test_the_follow_up_delete_is_not_made_while_janitor_is_paused(
    world: GlueWorld, server: GlueServer
) -> None:
    server.add("etl", age=timedelta(hours=3))
    world.apply(IDLE_DELETE)
    world.sweep()
    server.finish("etl")
    world.store.pause.set(True, reason="incident", actor="ops", now=NOW)

    world.sweep()
    world.sweep()

    assert writes(server) == ["StopSession", "DeleteSession"]
    assert server.sessions["etl"].status == "STOPPED"
    assert world.outcomes("etl") == [Outcome.ACCEPTED]

    world.store.pause.set(False, reason="", actor="ops", now=NOW)
    world.sweep()
    assert "etl" not in server.sessions
    assert world.outcomes("etl") == [Outcome.ACCEPTED, Outcome.EXECUTED]


def test_a_stop_settles_at_stopped_and_the_record_stays(
    world: GlueWorld, server: GlueServer
) -> None:
    server.add("etl", age=timedelta(hours=3))
    world.apply(IDLE_STOP)

    first = world.sweep()
    world.sweep()
    server.finish("etl")
    third = world.sweep()
    fourth = world.sweep()

    assert first.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert third.targets[0].reconciled == 1
    assert world.outcomes("etl") == [Outcome.ACCEPTED, Outcome.EXECUTED]
    assert "STOPPED" in world.rows(AuditKind.OUTCOME)[-1].reason
    assert server.sessions["etl"].status == "STOPPED"
    assert fourth.targets[0].outcomes == {}
    assert writes(server) == ["StopSession"], "a STOPPED session is never stopped again"


def test_old_stopped_sessions_are_deleted_directly(world: GlueWorld, server: GlueServer) -> None:
    server.add("old", age=timedelta(days=10))
    server.end("old", "STOPPED")
    server.add("timed-out", age=timedelta(days=9))
    server.end("timed-out", "TIMEOUT")
    server.add("recent", age=timedelta(days=1))
    server.end("recent", "STOPPED")
    server.add("running", age=timedelta(days=10))
    world.apply(OLD_STOPPED)

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.EXECUTED: 2}
    assert writes(server) == ["DeleteSession", "DeleteSession"]
    assert set(server.sessions) == {"recent", "running"}


def test_a_busy_session_is_left_alone(world: GlueWorld, server: GlueServer) -> None:
    server.add("busy", age=timedelta(hours=5))
    server.run("busy", ago=timedelta(hours=4))
    server.run("busy", state="RUNNING", ago=timedelta(hours=3))
    server.add("recent", age=timedelta(hours=5))
    server.run("recent", ago=timedelta(minutes=10))
    world.apply(IDLE_DELETE)

    report = world.sweep()

    assert report.targets[0].outcomes == {}
    assert writes(server) == []


def test_a_session_whose_statements_cannot_be_read_is_left_alone(
    world: GlueWorld, server: GlueServer
) -> None:
    server.add("etl", age=timedelta(hours=5))
    server.faults.append(Fault(op="statements", code="AccessDeniedException", times=100))
    world.apply(IDLE_DELETE)

    report = world.sweep()

    assert report.targets[0].error is None, "the listing itself succeeded"
    assert report.targets[0].outcomes == {}
    assert writes(server) == []
