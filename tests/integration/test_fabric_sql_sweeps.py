"""fabric_sql through whole sweeps: janitor's real sweep against the fake DataArts Fabric.

The fake (tests/fakes/fabric.py) verifies every request's AK/SK signature with Huawei's own
signer, pages sessions and statements, and follows the documented state machine. The tests
assert on what the service received (closes) and on the audit trail:

* a never-used session past the limit is closed at the first sweep;
* one whose statements all finished is closed once janitor has seen them so for ``idle_for``
  (not before: on a fresh install that is one ``idle_for`` of observation);
* one with a RUNNING or SUBMITTED statement, also on the last statements page, is not;
* one that ran a new statement between two sweeps, or between the listing and the re-check,
  is not;
* an already CLOSED (or FAIL) session is never closed again;
* the close's answers: 400 for a session closed meanwhile (``skipped_changed`` naming the
  state), a refusal (``failed`` with Huawei's code, message and solution), 5xx (``unknown``,
  reconciled by re-reading); throttling and server errors on reads are retried;
* timestamps without an offset act only with ``timestamp_zone``; statements that cannot be
  read keep their session.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import make_config
from tests.fakes.fabric import INTERNAL, THROTTLED, TIMED_OUT, FabricServer, Fault, fabric_target

TARGET = "fabric"
IDLE_CLOSE = {
    "name": "idle-sql",
    "description": "Close SQL sessions idle for an hour",
    "match": {"state": ["idle"], "idle_for": "1h"},
    "action": "stop",
    "mode": "enforce",
}


@dataclass
class World:
    """A store, the fake service, and daemon sweeps over them on a frozen clock."""

    store: Store
    clock: FrozenClock
    server: FabricServer
    secrets: Path
    target: dict[str, Any] = field(default_factory=dict)
    auth: str = "aksk"

    def apply(self, *specs: dict[str, Any]) -> None:
        """Store policies the way ``policy apply`` does."""
        self.store.policies.apply(
            [PolicySpec.model_validate(s) for s in specs], actor="test", now=self.clock.now()
        )

    def config(self) -> Config:
        """One fabric_sql target over both workspaces."""
        target = fabric_target(self.auth, self.secrets, name=TARGET, **self.target)
        return make_config("sqlite://", [target])

    def sweep(self) -> SweepReport:
        """One daemon sweep; the clock moves on a minute afterwards."""

        async def main() -> SweepReport:
            rt = Runtime.build(
                self.config(),
                clock=self.clock,
                store=self.store,
                transports={TARGET: self.server.transport()},
            )
            try:
                return await run_sweep(rt)
            finally:
                await rt.providers[TARGET].aclose()

        report = asyncio.run(main())
        self.clock.advance(timedelta(minutes=1))
        return report

    def sweep_until(self, minutes: int) -> None:
        """Sweep every ten minutes for ``minutes`` minutes."""
        for _ in range(minutes // 10):
            self.sweep()
            self.clock.advance(timedelta(minutes=9))

    def rows(self, kind: AuditKind | None = None) -> list[AuditEvent]:
        """The audit rows of the target (of one kind)."""
        kinds = [str(kind)] if kind else []
        return self.store.audit.events(target=TARGET, kinds=kinds)

    def outcomes(self, key: str) -> list[Outcome | None]:
        """The outcome rows of one session, in order."""
        return [r.outcome for r in self.rows(AuditKind.OUTCOME) if r.session_id == key]

    def closes(self) -> int:
        """Close requests that reached the service."""
        return self.server.requests("act")


@pytest.fixture
def world(sqlite_store: Store, clock: FrozenClock, tmp_path: Path) -> World:
    """The fake service on SQLite, with AK/SK signing."""
    return World(
        store=sqlite_store,
        clock=clock,
        server=FabricServer(clock=clock, page_size=4),
        secrets=tmp_path,
    )


def test_a_never_used_session_past_the_limit_is_closed_at_the_first_sweep(world: World) -> None:
    old = world.server.add(age=timedelta(hours=3))
    young = world.server.add("ws-2", age=timedelta(minutes=30))
    world.apply(IDLE_CLOSE)

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert world.server.sessions[old.key].status == "CLOSED"
    assert world.server.sessions[young.key].status == "RUNNING"
    [outcome] = world.rows(AuditKind.OUTCOME)
    assert outcome.session_id == old.key
    assert "idle 3h ≥ 1h (policy idle-sql v1)" in outcome.reason
    assert outcome.http_status == 200
    assert outcome.provider_request_id
    assert world.server.rejected == [], "every request carried a valid signature"


def test_finished_statements_close_the_session_only_after_idle_for_of_observation(
    world: World,
) -> None:
    session = world.server.add(age=timedelta(hours=6))
    world.server.run(session.key, ago=timedelta(hours=5), status="FAILED")
    world.server.run(session.key, ago=timedelta(hours=4))
    world.apply(IDLE_CLOSE)

    world.sweep()  # t0: first sight of these statements: their idleness is unknown
    assert world.closes() == 0
    world.clock.advance(timedelta(minutes=58))
    world.sweep()  # t0 + 59 min
    assert world.closes() == 0, "finished at most 59 min ago as far as janitor knows"

    world.sweep()  # t0 + 60 min
    assert world.closes() == 1
    assert world.outcomes(session.key) == [Outcome.EXECUTED]
    assert "idle 1h" in world.rows(AuditKind.OUTCOME)[0].reason


def _last_on_the_statements_page(world: World, key: str, count: int) -> str:
    statements = [world.server.run(key, ago=timedelta(hours=2)) for _ in range(count)]
    ordered = sorted(statements, key=lambda s: hashlib.sha256(s.id.encode()).digest())
    return ordered[-1].id  # the fake sends records ordered by this hash


@pytest.mark.parametrize("active", ["RUNNING", "SUBMITTED"])
def test_a_session_with_a_running_or_submitted_statement_is_never_closed(
    world: World, active: str
) -> None:
    plain = world.server.add(age=timedelta(hours=6))
    world.server.run(plain.key, ago=timedelta(hours=5), status=active)
    paged = world.server.add(age=timedelta(hours=6))
    busy = _last_on_the_statements_page(world, paged.key, 9)  # three pages of four
    world.server.finish(paged.key, busy, status=active)
    world.apply(IDLE_CLOSE)

    world.sweep_until(180)

    assert world.closes() == 0
    assert world.server.sessions[plain.key].status == "RUNNING"
    assert world.server.sessions[paged.key].status == "RUNNING"

    world.server.finish(paged.key, busy)  # the statement ends: idle from now on
    world.sweep_until(60)
    assert world.closes() == 0, "finished at most an hour ago as far as janitor knows"
    world.sweep_until(10)
    assert world.server.sessions[paged.key].status == "CLOSED"
    assert world.server.sessions[plain.key].status == "RUNNING"


def test_a_new_statement_between_two_sweeps_restarts_the_idle_time(world: World) -> None:
    session = world.server.add(age=timedelta(hours=6))
    world.server.run(session.key, ago=timedelta(hours=5))
    world.apply(IDLE_CLOSE)
    world.sweep()  # t0
    world.clock.advance(timedelta(minutes=49))
    world.server.run(session.key)  # t0 + 50 min: a quick query, finished before the sweep

    world.clock.advance(timedelta(minutes=10))
    world.sweep()  # t0 + 60 min: without the new statement this would close it
    assert world.closes() == 0
    world.clock.advance(timedelta(minutes=58))
    world.sweep()  # t0 + 119 min: seen finished at t0 + 60 min, so idle 59 min
    assert world.closes() == 0

    world.sweep()  # t0 + 120 min
    assert world.closes() == 1


def test_a_statement_between_the_listing_and_the_recheck_is_not_closed(world: World) -> None:
    session = world.server.add(age=timedelta(hours=3))
    world.server.before["get"] = lambda: world.server.run(session.key)
    world.apply(IDLE_CLOSE)

    report = world.sweep()

    assert world.closes() == 0
    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    [row] = world.rows(AuditKind.OUTCOME)
    assert "activity None → 1 statements" in row.reason


def test_an_already_closed_session_is_never_closed_again(world: World) -> None:
    closed = world.server.add(age=timedelta(days=2), status="CLOSED")
    failed = world.server.add(age=timedelta(days=2), status="FAIL")
    running = world.server.add(age=timedelta(days=2))
    world.apply(
        {  # matches ended sessions too: no state named, and ended is quiet
            "name": "old-sql",
            "match": {"age": "1d"},
            "action": "stop",
            "mode": "enforce",
        }
    )

    world.sweep()
    world.sweep()
    world.sweep()

    assert world.closes() == 1
    assert world.server.closes == {running.key: 1}
    assert world.server.sessions[closed.key].status == "CLOSED"
    assert world.server.sessions[failed.key].status == "FAIL"
    assert world.outcomes(running.key) == [Outcome.EXECUTED]


def test_a_session_closed_by_the_service_meanwhile_is_skipped_naming_its_state(
    world: World,
) -> None:
    session = world.server.add(age=timedelta(hours=3))
    world.server.before["act"] = lambda: world.server.end(session.key)
    world.apply(IDLE_CLOSE)

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    [row] = world.rows(AuditKind.OUTCOME)
    assert "already CLOSED" in row.reason
    assert "common.01000001" in row.reason
    assert row.http_status == 400
    assert world.server.closes[session.key] == 0
    world.sweep()
    assert world.closes() == 1, "never closed again"


def test_a_refused_close_is_failed_with_huaweis_code_message_and_solution(world: World) -> None:
    session = world.server.add(age=timedelta(hours=3))
    refusal = {
        "error_code": "DataArtsFabric.1234",
        "error_msg": "the endpoint is being upgraded",
        "solution_msg": "Try again after the upgrade.",
    }
    world.server.faults.append(Fault(op="act", status=400, body=refusal))
    world.apply(IDLE_CLOSE)

    world.sweep()

    [row] = world.rows(AuditKind.OUTCOME)
    assert row.outcome is Outcome.FAILED
    assert row.http_status == 400
    assert row.error is not None
    for said in refusal.values():
        assert said in row.error
    assert world.server.sessions[session.key].status == "RUNNING"


def test_a_server_error_on_the_close_is_unknown_then_reconciled_by_rereading(
    world: World,
) -> None:
    session = world.server.add(age=timedelta(hours=3))
    world.server.faults.append(Fault(op="act", status=500, body=INTERNAL, after=True))
    world.apply(IDLE_CLOSE)

    first = world.sweep()
    assert first.targets[0].outcomes == {Outcome.UNKNOWN: 1}
    assert "common.00000500" in (world.rows(AuditKind.OUTCOME)[0].error or "")

    second = world.sweep()
    assert second.targets[0].reconciled == 1
    assert world.outcomes(session.key) == [Outcome.UNKNOWN, Outcome.EXECUTED]
    assert world.closes() == 1, "reconciled by re-reading, never re-issued"
    assert world.store.audit.pending_intents(TARGET) == []


def test_throttling_and_server_errors_on_reads_are_retried(world: World) -> None:
    session = world.server.add(age=timedelta(hours=3))
    used = world.server.add(age=timedelta(hours=3))
    world.server.run(used.key, ago=timedelta(hours=2))
    world.server.faults += [
        Fault(op="list", status=429, body=THROTTLED),
        Fault(op="list", status=408, body=TIMED_OUT),
        Fault(op="statements", status=500, body=INTERNAL),
        Fault(op="get", status=429, body=THROTTLED, headers={"retry-after": "0"}),
    ]
    world.apply(IDLE_CLOSE)

    report = world.sweep()

    assert report.targets[0].error is None
    assert world.server.sessions[session.key].status == "CLOSED"
    assert all(f.hits == 1 for f in world.server.faults)


def test_statements_that_cannot_be_read_keep_their_session(world: World) -> None:
    unreadable = world.server.add(age=timedelta(hours=3))
    other = world.server.add(age=timedelta(hours=3))
    world.server.faults.append(
        Fault(op="statements", status=500, body=INTERNAL, times=1000, where=unreadable.id)
    )
    world.apply(IDLE_CLOSE)

    world.sweep_until(120)

    assert world.server.sessions[unreadable.key].status == "RUNNING"
    assert world.server.sessions[other.key].status == "CLOSED"


def test_timestamps_without_an_offset_act_only_with_a_timestamp_zone(world: World) -> None:
    world.server.time_format = "naive"
    session = world.server.add(age=timedelta(hours=3))
    world.apply(IDLE_CLOSE)

    world.sweep()
    assert world.closes() == 0, "created when? unknown without timestamp_zone"

    world.target = {"timestamp_zone": "Asia/Shanghai"}
    world.sweep()
    assert world.server.sessions[session.key].status == "CLOSED"


def test_a_bad_signature_fails_the_listing_and_acts_on_nothing(world: World) -> None:
    world.server.add(age=timedelta(hours=3))
    (world.secrets / "secret_key_file").write_text("wrong-secret", encoding="utf-8")
    world.apply(IDLE_CLOSE)

    report = world.sweep()

    assert report.targets[0].error is not None
    [row] = world.rows(AuditKind.LIST_FAILED)
    assert "APIG.0301" in (row.error or "")
    assert "wrong-secret" not in (row.error or "")
    assert world.closes() == 0


def test_the_password_scheme_closes_with_an_iam_token(world: World) -> None:
    world.auth = "password"
    session = world.server.add(age=timedelta(hours=3))
    world.apply(IDLE_CLOSE)

    world.sweep()

    assert world.server.sessions[session.key].status == "CLOSED"
    assert world.server.requests("iam") == 1
    assert world.server.rejected == []
