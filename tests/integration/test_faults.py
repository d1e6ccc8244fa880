"""The fault matrix: provider faults and garbage on list, get and delete (T13-T16).

Every case runs real sweeps (the daemon's ``run_sweep``, one runtime for several sweeps)
against the simulated Jupyter server with faults injected at the HTTP edge, and checks:

* no wrong action: a DELETE reaches the server only for a session janitor may delete, and
  at most once per intent;
* every case is audited with its reason (``list_failed``, ``invalid_record``, a skip saying
  "record not trusted", or the intent's outcome: ``failed``, ``unknown``,
  ``skipped_changed``, ``already_absent``);
* the sweep never raises, and the next sweep after the fault clears does the work.

Status semantics (T16): 404/410 on DELETE → ``already_absent``, no retry; 5xx, timeouts and
connections lost after sending → ``unknown``, then the next sweep reconciles by re-reading
(``already_absent`` if gone, ``failed`` if still there) and never re-sends the old DELETE: a
session still there is decided anew, under a new intent with its own re-check, so the
assertion is "at most one DELETE per intent, and the reconcile itself sends none". 409/412
→ ``skipped_changed`` is checked with a test-only provider whose DELETE takes a precondition,
since Jupyter's API has none (a 409 from Jupyter is a refusal: ``failed``).

Retries: reads retry 429, 5xx and timeouts; writes only 429 and connection failures (the
request surely was not processed). ``stamina`` runs in test mode (no sleeps, 3 attempts);
Retry-After is honoured by the target's rate limiter, which is checked with request times.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from janitor.clock import FrozenClock
from janitor.errors import ProviderError
from janitor.http import CircuitBreaker
from janitor.model import Action, AuditEvent, AuditKind, Outcome, Verdict
from janitor.policy.engine import decide
from janitor.policy.spec import PolicySpec, compile_policy
from janitor.providers import config_model
from janitor.providers.base import Receipt
from janitor.providers.jupyter import NO_TRACK, JupyterProvider
from janitor.runtime import Runtime
from janitor.store import Store
from janitor.sweep import SweepReport
from tests.conftest import FULL
from tests.fakes.faults import (
    IDLE_POLICY,
    World,
    list_kernels,
    list_sessions,
    memory_backed_store,
    one,
)
from tests.fakes.jupyter import Fault

HTML = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


@pytest.fixture
def world(clock: FrozenClock) -> Iterator[World]:
    """A world on a RAM-backed SQLite store with the idle-delete policy."""
    with memory_backed_store() as store:
        w = World.create(store, clock)
        w.apply()
        yield w


@pytest.fixture
def any_world(store: Store, clock: FrozenClock) -> World:
    """The same on each supported database (SQLite file and PostgreSQL)."""
    w = World.create(store, clock)
    w.apply()
    return w


def sweep(world: World, count: int = 1, **kw: Any) -> list[SweepReport]:
    """Run ``count`` sweeps with one runtime; they must never raise."""
    return asyncio.run(world.sweeps(count, **kw))


def rows(
    world: World, session_id: str | None = None, kind: AuditKind | None = None
) -> list[AuditEvent]:
    """Audit rows, optionally of one session and one kind."""
    return [
        r
        for r in world.events()
        if (session_id is None or r.session_id == session_id) and (kind is None or r.kind == kind)
    ]


def outcomes(world: World, session_id: str) -> list[Outcome | None]:
    """The outcomes recorded for a session's intents, in order."""
    return [r.outcome for r in rows(world, session_id, AuditKind.OUTCOME)]


def deletes_of(world: World, record_id: str) -> int:
    """DELETE requests for one session that reached the transport (retries included)."""
    return len(world.transport.matching("DELETE", f"/{record_id}"))


# --- T14/T15: the listing ------------------------------------------------------------

RETRIED = 3  # stamina test mode: at most 3 attempts
LIST_FAULTS = [
    pytest.param({"error": httpx.ReadTimeout}, RETRIED, "ReadTimeout", id="read-timeout"),
    pytest.param({"error": httpx.ConnectTimeout}, RETRIED, "ConnectTimeout", id="connect-timeout"),
    pytest.param({"error": httpx.ConnectError}, RETRIED, "ConnectError", id="connect-error"),
    pytest.param({"error": httpx.ReadError}, RETRIED, "ReadError", id="read-error"),
    pytest.param({"error": httpx.RemoteProtocolError}, RETRIED, "RemoteProtocolError", id="reset"),
    pytest.param({"status": 500, "body": {"message": "boom"}}, RETRIED, ": 500", id="500"),
    pytest.param({"status": 502, "raw": HTML}, RETRIED, ": 502", id="502-html"),
    pytest.param({"status": 503, "body": None}, RETRIED, ": 503", id="503"),
    pytest.param({"status": 504, "body": None}, RETRIED, ": 504", id="504"),
    pytest.param({"status": 429, "body": None}, RETRIED, "429 throttled", id="429-storm"),
    pytest.param(
        {"status": 429, "body": None, "headers": {"Retry-After": "0"}},
        RETRIED,
        "429 throttled",
        id="429-storm-retry-after-0",
    ),
    pytest.param({"status": 401, "body": None}, 1, "401 credentials rejected", id="401"),
    pytest.param({"status": 403, "body": None}, 1, "403 credentials rejected", id="403"),
    pytest.param({"status": 404, "body": {"message": "Not Found"}}, 1, "got 404", id="404"),
    pytest.param({"status": 200, "raw": b'[{"id": "4c1f'}, 1, "body is not JSON", id="truncated"),
    pytest.param({"status": 200, "raw": HTML}, 1, "body is not JSON", id="html-200"),
    pytest.param({"status": 200, "body": {"kernels": []}}, 1, "got a JSON dict", id="object"),
    pytest.param({"status": 200, "body": None}, 1, "got a JSON NoneType", id="null"),
]


@pytest.mark.parametrize("which", [list_kernels, list_sessions], ids=["kernels", "sessions"])
@pytest.mark.parametrize(("fault", "attempts", "reason"), LIST_FAULTS)
def test_a_failed_listing_means_no_action_on_the_target(
    world: World,
    which: Callable[[str, str], bool],
    fault: dict[str, Any],
    attempts: int,
    reason: str,
) -> None:
    idle = [world.idle(f"idle{i}.ipynb") for i in range(3)]
    world.transport.add(Fault(when=which, times=attempts, **fault))

    def recover(index: int, report: SweepReport) -> None:
        if index == 0:
            target = report.targets[0]
            assert not target.listed
            assert target.failed
            assert reason in (target.error or "")
            assert world.transport.deletes() == []
            assert world.transport.matching("GET", "/api/sessions/") == []  # no re-check
            failing = [r for r in world.transport.requests if which(r.method, r.path)]
            assert len(failing) == attempts, "reads retry 429, 5xx and timeouts, nothing else"
            world.transport.clear()

    _first, second = sweep(world, 2, between=recover)
    listed = rows(world, kind=AuditKind.LIST_FAILED)
    assert len(listed) == 1
    assert listed[0].reason.startswith("listing failed, no action on this target this sweep")
    assert reason in listed[0].reason
    assert [kind for kind, _ in world.alerts if kind == "target_failed"] == ["target_failed"]
    # the daemon keeps going: the next sweep lists and acts
    assert second.targets[0].listed
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 3}
    assert {s.id: world.sim.deletes[s.id] for s in idle} == {s.id: 1 for s in idle}


def test_a_failed_listing_is_audited_on_each_database(any_world: World) -> None:
    world = any_world
    world.idle("a.ipynb")
    world.transport.add(Fault(when=list_sessions, times=RETRIED, error=httpx.ReadTimeout))
    first, second = sweep(world, 2)
    assert not first.targets[0].listed
    assert [r.kind for r in rows(world, kind=AuditKind.LIST_FAILED)] == [AuditKind.LIST_FAILED]
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert world.store.audit.verify().ok


def test_duplicate_ids_fail_the_listing(world: World) -> None:
    session = world.idle("twice.ipynb")
    world.transport.mutate(list_sessions, lambda body: body + body, times=1)
    first, _second = sweep(world, 2)
    assert "listing has the id" in (first.targets[0].error or "")
    assert world.sim.deletes[session.id] == 1  # only in the second sweep
    assert rows(world, kind=AuditKind.LIST_FAILED)[0].error is not None


def test_a_population_drop_blocks_the_target(world: World) -> None:
    """T15: the listing shrank by more than max_population_drop_percent: act on nothing."""
    watched = [world.idle(f"w{i}.ipynb", connections=1) for i in range(20)]

    def between(index: int, report: SweepReport) -> None:
        if index == 0:  # all 20 remembered, none deletable; now they are, but 15 vanish
            assert report.targets[0].outcomes == {}
            for session in watched:
                world.sim.kernel_of(session.id).connections = 0
            world.transport.mutate(list_sessions, lambda body: body[:5], times=1)
            world.transport.mutate(list_kernels, lambda body: body[:5], times=1)
        if index == 1:
            target = report.targets[0]
            assert target.outcomes == {}
            assert world.transport.deletes() == []
            assert any("partial listing is suspected" in b for b in target.blocked)

    *_, third = sweep(world, 3, between=between)
    blocked = rows(world, kind=AuditKind.BLOCKED)
    assert len(blocked) == 1
    assert "5 sessions where janitor remembers 20" in blocked[0].reason
    assert blocked[0].outcome is Outcome.BLOCKED
    assert "blocked" in [kind for kind, _ in world.alerts]
    # the next complete listing is trusted again (5 remembered: below the guard's minimum)
    assert third.targets[0].outcomes == {Outcome.EXECUTED: 20}


# --- T13: garbage records in the listing -------------------------------------------------


def _kernel(record: dict[str, Any]) -> dict[str, Any]:
    kernel = record["kernel"]
    assert isinstance(kernel, dict)
    return kernel


def _set_kernel(field: str, value: object) -> Callable[[dict[str, Any]], object]:
    def change(record: dict[str, Any]) -> object:
        _kernel(record)[field] = value
        return record

    return change


def _drop(field: str, *, kernel: bool = False) -> Callable[[dict[str, Any]], object]:
    def change(record: dict[str, Any]) -> object:
        (_kernel(record) if kernel else record).pop(field)
        return record

    return change


def _set(field: str, value: object) -> Callable[[dict[str, Any]], object]:
    def change(record: dict[str, Any]) -> object:
        record[field] = value
        return record

    return change


ID_MISSING = _drop("id")


def _not_an_object(record: dict[str, Any]) -> object:
    """Replace the whole record by a string."""
    return "garbage"


NOT_AN_OBJECT = _not_an_object


GARBAGE = [
    pytest.param(
        _set_kernel("execution_state", "zombie"),
        AuditKind.SKIP,
        "provider state 'zombie' is unknown",
        id="unknown-enum",
    ),
    pytest.param(
        _set_kernel("execution_state", 5),
        AuditKind.SKIP,
        "record not trusted: execution_state is not a string",
        id="state-wrong-type",
    ),
    pytest.param(
        _set_kernel("last_activity", 1795000000),
        AuditKind.SKIP,
        "record not trusted: last_activity is not a string",
        id="activity-number",
    ),
    pytest.param(
        _set_kernel("last_activity", "yesterday"),
        AuditKind.SKIP,
        "record not trusted: last_activity is not a timestamp",
        id="activity-junk",
    ),
    pytest.param(
        _set_kernel("last_activity", "2026-11-22T09:00:00.000000"),
        AuditKind.SKIP,
        "record not trusted: last_activity has no time zone",
        id="activity-naive",
    ),
    pytest.param(
        _set_kernel("last_activity", "2026-11-23T09:00:00.000000Z"),
        AuditKind.SKIP,
        "record not trusted: last_activity lies in the future",
        id="activity-future",
    ),
    pytest.param(
        _set_kernel("last_activity", "9999-12-31T23:59:59-23:59"),
        AuditKind.SKIP,
        "record not trusted: last_activity is out of range",
        id="activity-out-of-range",
    ),
    pytest.param(
        _set_kernel("connections", "0"),
        AuditKind.SKIP,
        "record not trusted: connections is not a count",
        id="connections-string",
    ),
    pytest.param(
        _set_kernel("connections", -1),
        AuditKind.SKIP,
        "record not trusted: connections is not a count",
        id="connections-negative",
    ),
    pytest.param(
        _set_kernel("connections", False),
        AuditKind.SKIP,
        "record not trusted: connections is not a count",
        id="connections-bool",
    ),
    pytest.param(
        _drop("last_activity", kernel=True),
        AuditKind.SKIP,
        "no policy matched",
        id="activity-missing",
    ),
    pytest.param(
        _drop("kernel"),
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a kernel object",
        id="kernel-missing",
    ),
    pytest.param(
        _set("kernel", None),
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a kernel object",
        id="kernel-null",
    ),
    pytest.param(
        ID_MISSING,
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a string id",
        id="id-missing",
    ),
    pytest.param(
        _set("id", 1234),
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a string id",
        id="id-number",
    ),
    pytest.param(
        _set("id", ["a", "b"]),
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a string id",
        id="id-list",
    ),
    pytest.param(
        NOT_AN_OBJECT,
        AuditKind.INVALID_RECORD,
        "record skipped: session record without a string id",
        id="not-an-object",
    ),
]


@pytest.mark.parametrize(("change", "kind", "reason"), GARBAGE)
def test_a_garbage_record_is_never_acted_on(
    world: World,
    change: Callable[[dict[str, Any]], object],
    kind: AuditKind,
    reason: str,
) -> None:
    victim = world.idle("keep-me.ipynb", hours=30)
    other = world.idle("plain.ipynb")
    world.transport.mutate(list_sessions, _patch(victim.id, change))
    first, second = sweep(world, 2)
    for report in (first, second):
        target = report.targets[0]
        assert target.listed, target.error
        assert target.error is None
    # neither the session nor its kernel (which no valid session claims) is touched
    assert world.sim.deletes[victim.id] == 0
    assert world.sim.deletes[victim.kernel_id] == 0
    assert victim.id in world.sim.sessions
    assert world.sim.deletes[other.id] == 1, "the rest of the target is still swept"
    audited = [r for r in world.events() if r.kind == kind and reason in r.reason]
    # once per reason; a record with no id at all cannot be remembered: once per sweep
    expected = 2 if change in (ID_MISSING, NOT_AN_OBJECT) else 1
    assert len(audited) == expected, [(r.kind, r.reason) for r in world.events()]
    assert rows(world, victim.id, AuditKind.INTENT) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param(
            {"last_activity": "2026-11-22T06:00:00.000000"},
            "record not trusted: last_activity has no time zone",
            id="naive",
        ),
        pytest.param({"execution_state": None}, "record not trusted", id="state-null"),
        pytest.param({"id": ["x"]}, "kernel record without a string id", id="id-list"),
        pytest.param({"id": {"a": 1}}, "kernel record without a string id", id="id-object"),
    ],
)
def test_a_garbage_bare_kernel_is_never_acted_on(
    world: World, change: dict[str, Any], reason: str
) -> None:
    kernel = world.sim.add_kernel(idle_for=timedelta(hours=30))
    world.transport.mutate(
        list_kernels, lambda body: [{**k, **change} if k["id"] == kernel.id else k for k in body]
    )
    for report in sweep(world, 2):
        assert report.targets[0].error is None
    assert world.transport.deletes() == []
    assert any(reason in r.reason for r in world.events())


def test_a_kernel_of_a_malformed_session_is_not_cleaned_up_as_bare(world: World) -> None:
    """A session record without a kernel object: every bare kernel may be its kernel."""
    victim = world.idle("keep-me.ipynb", hours=30)
    world.apply({**IDLE_POLICY, "exempt": {"name": ["keep-*"]}})
    world.transport.mutate(list_sessions, _patch(victim.id, _drop("kernel")))
    sweep(world)
    assert world.sim.deletes == {}
    kernel_rows = rows(world, victim.kernel_id, AuditKind.SKIP)
    assert "a malformed session record may own this kernel" in kernel_rows[0].reason


@pytest.mark.parametrize(
    ("written", "deleted"),
    [
        pytest.param("2026-11-22T09:00:00.000000+00:00Z", True, id="utc-offset-then-Z"),
        pytest.param("2026-11-22T14:30:00+05:30Z", True, id="plus-offset-then-Z-3h"),
        pytest.param("2026-11-22T06:00:00-05:00Z", False, id="minus-offset-then-Z-1h"),
        pytest.param("2026-11-22 09:00:00+00:00", True, id="space-separator"),
        pytest.param("2026-11-22T09:00:00.123456789Z", True, id="nanoseconds"),
        pytest.param("2026-11-22T11:00:00+00:00", False, id="recent"),
    ],
)
def test_odd_timestamp_formats_are_read_as_the_instant_they_name(
    world: World, written: str, deleted: bool
) -> None:
    """ "…+00:00Z" and friends name one instant: janitor must act on that instant, or skip."""
    session = world.idle("odd.ipynb", hours=30)
    patch = _patch(session.id, _set_kernel("last_activity", written))
    world.transport.mutate(list_sessions, patch)
    world.transport.mutate(one("GET", "sessions", session.id), patch)
    sweep(world)
    assert world.sim.deletes[session.id] == (1 if deleted else 0)


# --- T14: the re-check GET ------------------------------------------------------------

RECHECK_FAULTS = [
    pytest.param({"error": httpx.ReadTimeout, "times": RETRIED}, "ReadTimeout", id="timeout"),
    pytest.param({"error": httpx.ConnectError, "times": RETRIED}, "ConnectError", id="refused"),
    pytest.param({"error": httpx.ReadError, "times": RETRIED}, "ReadError", id="read-error"),
    pytest.param(
        {"error": httpx.RemoteProtocolError, "times": RETRIED}, "RemoteProtocolError", id="reset"
    ),
    pytest.param({"status": 500, "body": None, "times": RETRIED}, ": 500", id="500"),
    pytest.param({"status": 503, "raw": HTML, "times": RETRIED}, ": 503", id="503-html"),
    pytest.param({"status": 429, "body": None, "times": RETRIED}, "429", id="429-storm"),
    pytest.param({"status": 401, "body": None}, "401 credentials rejected", id="401"),
    pytest.param({"status": 403, "body": None}, "403 credentials rejected", id="403"),
    pytest.param({"status": 400, "body": {"message": "?"}}, "expected 200 or 404", id="400"),
    pytest.param({"status": 200, "raw": b'{"id": '}, "body is not JSON", id="truncated"),
    pytest.param({"status": 200, "raw": HTML}, "body is not JSON", id="html-200"),
    pytest.param({"status": 200, "body": {}}, "without a string id", id="empty-object"),
    pytest.param({"status": 200, "body": []}, "without a string id", id="array"),
]


@pytest.mark.parametrize(("fault", "reason"), RECHECK_FAULTS)
def test_a_failed_recheck_means_no_delete(world: World, fault: dict[str, Any], reason: str) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("GET", "sessions", session.id), **fault))
    first, second = sweep(world, 2)
    assert first.targets[0].outcomes == {Outcome.FAILED: 1}
    assert outcomes(world, session.id) == [Outcome.FAILED, Outcome.EXECUTED]
    failed = rows(world, session.id, AuditKind.OUTCOME)[0]
    assert failed.reason.startswith("the re-check failed, so nothing is done")
    assert reason in failed.reason
    assert deletes_of(world, session.id) == 1  # in the second sweep only
    assert second.targets[0].outcomes == {Outcome.EXECUTED: 1}


RECHECK_GARBAGE = [
    pytest.param(_set_kernel("execution_state", "zombie"), "state idle → unknown", id="enum"),
    pytest.param(_set_kernel("execution_state", "busy"), "state idle → busy", id="busy"),
    pytest.param(
        _set_kernel("last_activity", "2026-11-22T09:00:00"),
        "the fresh record is not trusted: last_activity has no time zone",
        id="naive",
    ),
    pytest.param(
        _set_kernel("last_activity", "2026-11-23T09:00:00Z"),
        "the fresh record is not trusted: last_activity lies in the future",
        id="future",
    ),
    pytest.param(
        _set_kernel("connections", "1"),
        "the fresh record is not trusted: connections is not a count",
        id="connections-string",
    ),
    pytest.param(_set_kernel("connections", 2), "connections 0 → 2", id="connected"),
    pytest.param(_drop("last_activity", kernel=True), "last_activity", id="activity-missing"),
]


@pytest.mark.parametrize(("change", "reason"), RECHECK_GARBAGE)
def test_a_changed_or_untrusted_recheck_is_skipped_changed(
    world: World, change: Callable[[dict[str, Any]], object], reason: str
) -> None:
    session = world.idle("a.ipynb")
    world.transport.mutate(one("GET", "sessions", session.id), change, times=1)
    sweep(world)
    assert world.transport.deletes() == []
    outcome = rows(world, session.id, AuditKind.OUTCOME)[0]
    assert outcome.outcome is Outcome.SKIPPED_CHANGED
    assert reason in outcome.reason


def test_a_recheck_answered_with_another_sessions_record_deletes_neither(world: World) -> None:
    """A proxy or cache answering with the wrong record: the id is compared too."""
    asked = world.idle("asked.ipynb")
    other = world.idle("other.ipynb", connections=1)
    world.transport.mutate(
        one("GET", "sessions", asked.id),
        lambda body: {**body, "id": other.id},
        times=1,
    )
    world.target = {"max_concurrency": 1}
    sweep(world)
    assert world.transport.deletes() == []
    outcome = rows(world, asked.id, AuditKind.OUTCOME)[0]
    assert outcome.outcome is Outcome.SKIPPED_CHANGED
    assert f"id {asked.id} → {other.id}" in outcome.reason


def test_404_at_the_recheck_is_already_absent_without_a_delete(world: World) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(
        Fault(when=one("GET", "sessions", session.id), before=lambda: _vanish(world, session.id))
    )
    (report,) = sweep(world)
    assert report.targets[0].outcomes == {Outcome.ALREADY_ABSENT: 1}
    assert world.transport.deletes() == []


def test_a_transient_5xx_at_the_recheck_is_retried(world: World) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("GET", "sessions", session.id), status=503, times=2))
    (report,) = sweep(world)
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert len(world.transport.matching("GET", f"/api/sessions/{session.id}")) == 3


# --- T16: the DELETE ------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_gone_on_delete_is_already_absent_and_not_retried(world: World, status: int) -> None:
    session = world.idle("a.ipynb")
    fault = Fault(
        when=one("DELETE", "sessions", session.id),
        before=lambda: _vanish(world, session.id),
        status=status,
        body={"message": "gone"},
    )
    world.transport.add(fault)
    sweep(world, 2)
    assert outcomes(world, session.id) == [Outcome.ALREADY_ABSENT]
    assert deletes_of(world, session.id) == 1


UNKNOWN_FAULTS = [
    pytest.param({"status": 500, "body": None}, id="500"),
    pytest.param({"status": 502, "raw": HTML}, id="502"),
    pytest.param({"status": 503, "body": None, "headers": {"Retry-After": "0"}}, id="503"),
    pytest.param({"status": 504, "body": None}, id="504"),
    pytest.param({"error": httpx.ReadTimeout}, id="read-timeout"),
    pytest.param({"error": httpx.WriteTimeout}, id="write-timeout"),
    pytest.param({"error": httpx.RemoteProtocolError}, id="reset"),
    pytest.param({"error": httpx.ReadError}, id="read-error"),
]


@pytest.mark.parametrize("processed", [True, False], ids=["processed", "not-processed"])
@pytest.mark.parametrize("fault", UNKNOWN_FAULTS)
def test_an_unknown_delete_is_reconciled_never_resent(
    world: World, fault: dict[str, Any], processed: bool
) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), after=processed, **fault))
    marks: list[int] = []
    first, second = sweep(world, 2, between=lambda i, r: marks.append(world.transport.count))

    # sweep 1: one DELETE, not retried, outcome unknown
    assert first.targets[0].outcomes == {Outcome.UNKNOWN: 1}
    assert len([r for r in world.transport.deletes() if r.n <= marks[0]]) == 1
    unknown = rows(world, session.id, AuditKind.OUTCOME)[0]
    assert unknown.outcome is Outcome.UNKNOWN
    assert unknown.reason.startswith("result not known")

    # sweep 2 starts with a re-read of the session, never with a DELETE
    in_second = world.transport.requests[marks[0] :]
    on_session = [r for r in in_second if session.id in r.path]
    assert on_session[0].method == "GET"
    intents = rows(world, session.id, AuditKind.INTENT)
    results = rows(world, session.id, AuditKind.OUTCOME)
    reconciled = results[1]
    assert reconciled.intent_id == intents[0].id
    assert reconciled.reason.startswith("reconciled:")
    if processed:
        assert reconciled.outcome is Outcome.ALREADY_ABSENT
        assert len(intents) == 1
        assert deletes_of(world, session.id) == 1
        assert world.sim.deletes[session.id] == 1
    else:
        # still there: decided anew under a new intent, re-checked, deleted once more
        assert reconciled.outcome is Outcome.FAILED
        assert len(intents) == 2
        assert reconciled.id is not None
        assert intents[1].id is not None
        assert reconciled.id < intents[1].id
        assert [r.outcome for r in results] == [
            Outcome.UNKNOWN,
            Outcome.FAILED,
            Outcome.EXECUTED,
        ]
        assert [r.method for r in on_session] == ["GET", "GET", "DELETE"]
        assert deletes_of(world, session.id) == 2  # one per intent
        assert world.sim.deletes[session.id] == 1
    assert second.targets[0].reconciled == 1


def test_an_unknown_delete_is_reconciled_on_each_database(any_world: World) -> None:
    world = any_world
    session = world.idle("a.ipynb")
    world.transport.add(
        Fault(when=one("DELETE", "sessions", session.id), status=502, raw=HTML, after=True)
    )
    _first, _second = sweep(world, 2)
    assert outcomes(world, session.id) == [Outcome.UNKNOWN, Outcome.ALREADY_ABSENT]
    assert deletes_of(world, session.id) == 1
    assert world.store.audit.pending_intents("nb") == []
    assert world.store.audit.verify().ok


def test_an_unknown_delete_stays_pending_while_the_session_cannot_be_read(world: World) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), status=502))
    ticker = Ticker()

    def between(index: int, report: SweepReport) -> None:
        if index == 0:  # the session cannot be read now: reconcile must wait
            world.transport.add(
                Fault(when=one("GET", "sessions", session.id), status=503, times=10**6)
            )
        if index == 1:
            # not reconciled, and the record of an open intent takes no new action (DESIGN 6)
            assert report.targets[0].reconciled == 0
            assert report.targets[0].settling == 1
            assert len(world.store.audit.pending_intents("nb")) == 1
            world.transport.clear()
            ticker.now += 61  # let the breaker the 503s opened cool down

    sweep(world, 3, between=between, setup=_install_breaker(ticker))
    intents = rows(world, session.id, AuditKind.INTENT)
    results = rows(world, session.id, AuditKind.OUTCOME)
    assert [(r.intent_id, r.outcome) for r in results] == [
        (intents[0].id, Outcome.UNKNOWN),  # sweep 1
        (intents[0].id, Outcome.FAILED),  # sweep 3: reconciled, the session is still there
        (intents[1].id, Outcome.EXECUTED),  # sweep 3: decided anew, deleted
    ]
    assert len(intents) == 2  # sweep 2 held the session back: its intent was still open
    assert deletes_of(world, session.id) == 2  # intents 1 and 2; none from the reconcile
    assert world.store.audit.pending_intents("nb") == []


def test_a_delete_refused_before_sending_is_retried(world: World) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), error=httpx.ConnectError))
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), status=429))
    (report,) = sweep(world)
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert deletes_of(world, session.id) == 3
    assert world.sim.deletes[session.id] == 1


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param({"error": httpx.ConnectError}, "ConnectError (not sent)", id="refused"),
        pytest.param({"error": httpx.ConnectTimeout}, "ConnectTimeout (not sent)", id="timeout"),
        pytest.param({"status": 429, "body": None}, "429 throttled", id="429-storm"),
    ],
)
def test_a_delete_that_surely_was_not_processed_fails_after_its_retries(
    world: World, fault: dict[str, Any], reason: str
) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), times=RETRIED, **fault))
    _first, second = sweep(world, 2)
    assert deletes_of(world, session.id) == RETRIED + 1
    results = rows(world, session.id, AuditKind.OUTCOME)
    assert results[0].outcome is Outcome.FAILED
    assert reason in results[0].reason
    assert second.targets[0].reconciled == 0, "failed is final: nothing to reconcile"
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.EXECUTED]


@pytest.mark.parametrize("status", [400, 401, 403, 409, 412])
def test_a_refused_delete_fails_and_is_not_retried(world: World, status: int) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(
        Fault(when=one("DELETE", "sessions", session.id), status=status, body={"message": "no"})
    )
    sweep(world)
    assert deletes_of(world, session.id) == 1
    result = rows(world, session.id, AuditKind.OUTCOME)[0]
    assert result.outcome is Outcome.FAILED
    assert result.http_status == status


class PreconditionJupyter(JupyterProvider):
    """Test-only: a Jupyter whose DELETE takes a precondition, answering 409/412 when it fails.

    Jupyter's own API has no precondition. This provider maps a failed one the way the
    Provider protocol asks (``Receipt(changed=True)``), to check what the sweep makes of it.
    """

    async def act(self, action: Action, session: Any) -> Receipt:
        """DELETE the session; 409/412 mean it changed since the re-check."""
        response = await self.http.write("DELETE", f"api/sessions/{session.id}", params=NO_TRACK)
        if response.status_code in (409, 412):
            return Receipt(status=response.status_code, changed=True, detail="etag mismatch")
        if response.status_code == 404:
            return Receipt(status=404, absent=True)
        return Receipt(status=response.status_code)


@pytest.mark.parametrize("status", [409, 412])
def test_a_failed_precondition_is_skipped_changed(world: World, status: int) -> None:
    session = world.idle("a.ipynb")
    world.transport.add(Fault(when=one("DELETE", "sessions", session.id), status=status))

    def precondition(rt: Runtime) -> None:
        plain = cast(JupyterProvider, rt.providers["nb"])
        rt.providers["nb"] = PreconditionJupyter(plain.config, plain.http, plain.clock)

    (report,) = sweep(world, setup=precondition)
    assert report.targets[0].outcomes == {Outcome.SKIPPED_CHANGED: 1}
    result = rows(world, session.id, AuditKind.OUTCOME)[0]
    assert result.reason == "not done: etag mismatch"
    assert result.http_status == status
    assert deletes_of(world, session.id) == 1
    assert world.store.audit.pending_intents("nb") == []


# --- Retry-After and the circuit breaker -------------------------------------------------


def test_retry_after_on_the_listing_delays_the_next_request(world: World) -> None:
    world.idle("a.ipynb")
    world.transport.add(Fault(when=list_kernels, status=429, headers={"Retry-After": "1"}))
    (report,) = sweep(world)
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    throttled, following = world.transport.requests[0], world.transport.requests[1]
    assert throttled.result == "429"
    assert throttled.answered is not None
    assert following.arrived - throttled.answered >= 1.0


def test_retry_after_on_a_delete_holds_every_request_to_the_target(world: World) -> None:
    sessions = [world.idle(f"s{i}.ipynb") for i in range(8)]
    world.target = {"max_concurrency": 4}
    victim = sessions[2]
    world.transport.add(
        Fault(when=one("DELETE", "sessions", victim.id), status=429, headers={"Retry-After": "1"})
    )
    limiters: list[Any] = []
    (report,) = sweep(
        world,
        setup=lambda rt: limiters.append(cast(JupyterProvider, rt.providers["nb"]).http.limiter),
    )
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 8}
    assert all(world.sim.deletes[s.id] == 1 for s in sessions)
    throttled = next(r for r in world.transport.requests if r.result == "429")
    held_until = limiters[0].held_until
    assert throttled.answered is not None
    assert held_until >= throttled.answered + 1.0
    later = world.transport.requests[throttled.n :]
    assert later, "requests followed the 429"
    hold_set = held_until - 1.0
    # nothing went out between the moment janitor read the 429 and the end of the hold
    assert [r for r in later if hold_set <= r.arrived < held_until] == []
    assert all(r.arrived >= held_until for r in later if r.arrived > hold_set)
    assert later[0].arrived >= held_until


class Ticker:
    """A monotonic clock for the breaker that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _install_breaker(ticker: Ticker) -> Callable[[Runtime], None]:
    def setup(rt: Runtime) -> None:
        provider = cast(JupyterProvider, rt.providers["nb"])
        provider.http.breaker = CircuitBreaker("nb", monotonic=ticker)

    return setup


def test_an_error_storm_at_the_recheck_opens_the_breaker(world: World) -> None:
    sessions = [world.idle(f"s{i}.ipynb") for i in range(12)]
    world.target = {"max_concurrency": 1}
    world.transport.add(
        Fault(when=lambda m, p: m == "GET" and "/api/sessions/" in p, status=503, times=10**6)
    )
    ticker = Ticker()

    def between(index: int, report: SweepReport) -> None:
        target = report.targets[0]
        if index == 0:
            assert target.halted is not None
            assert "circuit breaker of target nb is open" in target.halted
            storm = world.transport.matching("GET", "/api/sessions/")
            assert len(storm) <= 10, "the breaker opens within 10 failing calls"
            assert world.transport.deletes() == []
            world.transport.clear()
        if index == 1:  # still cooling down: even the listing is refused, fast
            assert not target.listed
            assert "circuit breaker" in (target.error or "")
            ticker.now += 61
        if index == 2:  # half-open: the listing is the trial call; it closes the breaker
            assert target.listed
            assert target.outcomes == {Outcome.EXECUTED: 12}

    sweep(world, 3, between=between, setup=_install_breaker(ticker))
    intents = rows(world, kind=AuditKind.INTENT)
    failed = [r for r in rows(world, kind=AuditKind.OUTCOME) if r.outcome is Outcome.FAILED]
    assert len(intents) == 12 + 2, "the breaker stopped new intents at once"
    assert len(failed) == 2
    assert "503" in failed[0].reason
    assert "circuit breaker of target nb is open" in failed[1].reason
    assert "circuit_open" in [kind for kind, _ in world.alerts]
    assert all(world.sim.deletes[s.id] == 1 for s in sessions)


def test_an_error_storm_on_deletes_stops_further_deletes(world: World) -> None:
    for i in range(12):
        world.idle(f"s{i}.ipynb")
    world.target = {"max_concurrency": 1}
    world.transport.add(Fault(when=lambda m, p: m == "DELETE", status=503, times=10**6))
    ticker = Ticker()
    (report,) = sweep(world, setup=_install_breaker(ticker))
    target = report.targets[0]
    sent = world.transport.deletes()
    assert len(sent) == 5, "5 failures in the last 10 calls open the breaker"
    assert target.outcomes.get(Outcome.UNKNOWN) == 5
    assert target.halted is not None
    assert "circuit breaker" in target.halted
    last_delete = sent[-1].n
    assert [r for r in world.transport.requests if r.n > last_delete] == []


# --- the sweep never raises ----------------------------------------------------------


class BuggyJupyter(JupyterProvider):
    """Test-only: a provider with a bug (an exception janitor does not expect)."""

    async def list_sessions(self) -> Any:
        """Fail the way a bug would."""
        raise KeyError("execution_state")


def test_a_bug_on_one_target_does_not_stop_the_others(world: World) -> None:
    world.target = {}
    session = world.idle("a.ipynb")

    def setup(rt: Runtime) -> None:
        plain = cast(JupyterProvider, rt.providers["nb"])
        buggy = BuggyJupyter(
            plain.config.model_copy(update={"name": "broken"}), plain.http, plain.clock
        )
        rt.providers["broken"] = buggy
        rt.config.targets = (*rt.config.targets, buggy.config)

    (report,) = sweep(world, setup=setup)
    by_name = {t.target: t for t in report.targets}
    assert "internal error: KeyError" in (by_name["broken"].error or "")
    assert by_name["nb"].outcomes == {Outcome.EXECUTED: 1}
    assert world.sim.deletes[session.id] == 1


# --- helpers ---------------------------------------------------------------------------


def _patch(session_id: str, change: Callable[[dict[str, Any]], object]) -> Callable[[Any], Any]:
    """A mutation of a sessions list (or of one session) that changes one record."""

    def mutate(body: Any) -> Any:
        if isinstance(body, dict):
            return change(copy.deepcopy(body)) if body.get("id") == session_id else body
        return [
            change(copy.deepcopy(r)) if isinstance(r, dict) and r.get("id") == session_id else r
            for r in body
        ]

    return mutate


def _vanish(world: World, session_id: str) -> None:
    """Someone else deleted the session (another replica, the user)."""
    with world.sim.lock:
        session = world.sim.sessions.pop(session_id)
        world.sim.kernels.pop(session.kernel_id, None)


# --- T13: generated garbage, through the provider and the decision engine ---------------

JUNK: list[object] = [
    None,
    "",
    0,
    -1,
    1,
    2.5,
    True,
    False,
    [],
    {},
    "zombie",
    "idle ",
    "IDLE",
    "busy",
    "2026-11-22T09:00:00",  # naive
    "2026-11-23T09:00:00Z",  # future
    "2026-11-22T09:00:00+00:00Z",
    "2026-11-22T14:30:00+05:30Z",
    "2026-11-22T06:00:00-05:00Z",  # 1h ago, written with an offset then Z
    "2026-11-22T09:00:00.000000Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+01:00",
    "Sun, 22 Nov 2026 09:00:00 GMT",
    1795000000,
    "x" * 300,
    "keep-me.ipynb",
    "\x00",
]
FIELDS = ["id", "name", "path", "type", "kernel"]
KERNEL_FIELDS = ["id", "name", "execution_state", "last_activity", "connections"]
BODY_JUNK = [b"", b"null", b"{}", b'{"kernels": []}', b"[", HTML, b'[{"id": "a"', b"\xff\xfe"]


def garbage(rng: random.Random) -> tuple[Any, Any]:
    """A Jupyter listing (kernels, sessions) with random damage, as JSON or raw bytes."""
    sessions: list[Any] = [_session_model(i, rng.choice(["keep-me", "nb"])) for i in range(3)]
    kernels: list[Any] = [copy.deepcopy(s["kernel"]) for s in sessions]
    kernels += [_kernel_model(f"bare-{i}") for i in range(2)]
    for _ in range(rng.randint(0, 6)):
        where = rng.choice(["session", "session-kernel", "kernel"])
        if where == "kernel":
            record, field = rng.choice(kernels), rng.choice(KERNEL_FIELDS)
        else:
            session = rng.choice(sessions)
            record = session if where == "session" else session.get("kernel")
            field = rng.choice(FIELDS if where == "session" else KERNEL_FIELDS)
        if isinstance(record, dict):
            if rng.random() < 0.25:
                record.pop(field, None)
            else:
                record[field] = copy.deepcopy(rng.choice(JUNK))
    if rng.random() < 0.1:
        sessions[rng.randint(0, 2)] = copy.deepcopy(rng.choice(JUNK))
    if rng.random() < 0.1:
        sessions.append(copy.deepcopy(sessions[0]))  # a duplicate
    kernels_body: Any = kernels
    sessions_body: Any = sessions
    if rng.random() < 0.05:
        kernels_body = rng.choice(BODY_JUNK)
    if rng.random() < 0.05:
        sessions_body = rng.choice(BODY_JUNK)
    return kernels_body, sessions_body


def _kernel_model(kernel_id: str) -> dict[str, Any]:
    return {
        "id": kernel_id,
        "name": "python3",
        "execution_state": "idle",
        "last_activity": "2026-11-22T08:00:00.000000Z",  # 4h before the frozen clock
        "connections": 0,
    }


def _session_model(index: int, name: str) -> dict[str, Any]:
    return {
        "id": f"session-{index}",
        "path": f"{name}-{index}.ipynb",
        "name": f"{name}-{index}.ipynb",
        "type": "notebook",
        "kernel": _kernel_model(f"kernel-{index}"),
    }


def test_generated_garbage_never_leads_to_an_action(clock: FrozenClock) -> None:
    """T13: every generated listing fails as a whole, or yields only trustworthy actions.

    The oracle re-derives, from the raw JSON alone, what may be deleted: an ``idle`` kernel
    with ``connections`` exactly 0 and an aware ``last_activity`` at least 2h old, whose
    owning session (if any) is well-formed and not named ``keep-*``, and that no malformed
    session might own. The CI profile generates 1,000 listings, ``JANITOR_TEST_FULL`` 10,000.
    """
    spec = PolicySpec.model_validate({**IDLE_POLICY, "exempt": {"name": ["keep-*"]}})
    policies = [compile_policy(spec, version=1)]
    bodies: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = bodies[request.url.path.rsplit("/", 1)[-1]]
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(200, content=content)

    config = config_model("jupyter").model_validate(
        {
            "name": "nb",
            "provider": "jupyter",
            "base_url": "http://j.test/",
            "token": "t",
            "requests_per_second": 1e6,
        }
    )
    provider = JupyterProvider.connect(config, clock, transport=httpx.MockTransport(handler))
    loop = asyncio.new_event_loop()

    @settings(max_examples=10_000 if FULL else 1_000)
    @given(st.integers(0, 2**64))
    def check(seed: int) -> None:
        listing = garbage(random.Random(seed))
        bodies["kernels"], bodies["sessions"] = listing
        try:
            result = loop.run_until_complete(provider.list_sessions())
        except ProviderError:
            return  # the whole listing failed: no action on the target
        for session in result.sessions:
            decision = decide(session, policies, clock.now(), None)
            if decision.verdict is Verdict.ACT:
                _may_be_deleted(session.id, session.kind, *listing, clock.now())

    try:
        check()
    finally:
        loop.run_until_complete(provider.aclose())
        loop.close()


def _may_be_deleted(record_id: str, kind: str, kernels: Any, sessions: Any, now: datetime) -> None:
    """Assert, from the raw JSON only, that deleting ``record_id`` is right."""
    assert isinstance(sessions, list)
    assert isinstance(kernels, list)
    if kind == "kernel":
        kernel = next(k for k in kernels if isinstance(k, dict) and k.get("id") == record_id)
        for entry in sessions:  # no session, well-formed or not, may own this kernel
            assert isinstance(entry, dict), f"bare kernel {record_id} acted on next to {entry!r}"
            owner = entry.get("kernel")
            assert isinstance(owner, dict), f"{record_id}: a session without a kernel: {entry}"
            assert owner.get("id") != record_id
    else:
        (session,) = [s for s in sessions if isinstance(s, dict) and s.get("id") == record_id]
        name = session.get("name") or session.get("path") or record_id
        assert not str(name).startswith("keep-"), f"exempt session acted on: {session}"
        kernel = session["kernel"]
    assert kernel["execution_state"] == "idle", kernel
    connections = kernel["connections"]
    assert type(connections) is int, kernel
    assert connections == 0, kernel
    written = kernel["last_activity"]
    assert isinstance(written, str), kernel
    parsed = datetime.fromisoformat(re.sub(r"([+-]\d\d:\d\d)Z$", r"\1", written))
    assert parsed.tzinfo is not None, kernel
    assert now - parsed >= timedelta(hours=2), kernel
