"""The fabric_sql provider against the fake DataArts Fabric (tests/fakes/fabric.py).

One test per row of the state table; every record field; the statements that decide idle or
busy (all pages, in no order); timestamps with and without an offset (``timestamp_zone``);
paging, throttling and malformed answers; the close's error mapping. Assertions are on the
records janitor builds and on what the fake received.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from janitor.clock import FrozenClock
from janitor.errors import (
    ActionRejected,
    AuthFailed,
    MalformedResponse,
    OutcomeUnknown,
    ProviderError,
)
from janitor.model import Action, Listing, Session, State
from janitor.providers.fabric_sql import FabricSqlProvider
from tests.conftest import NOW
from tests.fakes.fabric import (
    INTERNAL,
    THROTTLED,
    TIMED_OUT,
    FabricServer,
    Fault,
    fabric_config,
)

T = TypeVar("T")


@pytest.fixture
def server(clock: FrozenClock) -> FabricServer:
    return FabricServer(clock=clock, page_size=4)


@pytest.fixture
def run(server: FabricServer, clock: FrozenClock, tmp_path: Path) -> Callable[..., Any]:
    """Run ``body(provider)`` on a provider connected to the fake (token auth by default)."""

    def runner(body: Callable[[FabricSqlProvider], Awaitable[T]], **keys: Any) -> T:
        auth = keys.pop("auth", "token")

        async def main() -> T:
            config = fabric_config(auth, tmp_path, **keys)
            provider = FabricSqlProvider.connect(config, clock, transport=server.transport())
            try:
                return await body(provider)
            finally:
                await provider.aclose()

        return asyncio.run(main())

    return runner


def listing(run: Callable[..., Any], **keys: Any) -> Listing:
    return run(lambda p: p.list_sessions(), **keys)  # type: ignore[no-any-return]


def record(run: Callable[..., Any], key: str, **keys: Any) -> Session:
    (found,) = [s for s in listing(run, **keys).sessions if s.id == key]
    return found


# --- the state table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "closable"),
    [
        ("RUNNING", State.IDLE, True),
        ("CREATING", State.PENDING, False),
        ("WAITING", State.QUEUED, True),
        ("CLOSED", State.ENDED, False),
        ("FAIL", State.ENDED, False),
        ("SUSPENDED", State.UNKNOWN, False),
    ],
)
def test_each_status_maps_to_its_state_and_allowed_actions(
    server: FabricServer, run: Callable[..., Any], status: str, state: State, closable: bool
) -> None:
    session = server.add(status=status)
    found = record(run, session.key)
    assert found.state is state
    assert found.provider_state == status
    assert (Action.STOP in (found.actions or ())) is closable
    assert Action.DELETE not in (found.actions or ()), "a session record cannot be removed"
    assert Action.NOTIFY in (found.actions or ()) or state is State.ENDED


def test_a_never_used_session_is_idle_since_it_was_created(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add(age=timedelta(hours=3))
    found = record(run, session.key)
    assert found.state is State.IDLE
    assert found.activity is None, "no statement: no fingerprint to wait for"
    assert found.last_activity == found.created_at == NOW - timedelta(hours=3)
    assert found.owner is None
    assert found.anomalies == ()


def test_a_session_whose_statements_all_finished_is_idle_with_a_fingerprint(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add(age=timedelta(hours=5))
    server.run(session.key, ago=timedelta(hours=2), user="bob", status="FAILED")
    server.run(session.key, ago=timedelta(hours=1), user="carol")  # the latest
    server.run(session.key, ago=timedelta(hours=4), user="dave", status="CANCELED")
    server.run(session.key, ago=timedelta(hours=3), user="erin", status="ERROR")
    found = record(run, session.key)
    assert found.state is State.IDLE
    assert found.last_activity == NOW - timedelta(hours=1)
    assert found.owner == "carol", "the latest statement's user, whatever the record order"
    assert found.activity is not None
    assert found.activity.startswith("4 statements ")
    assert found.anomalies == ()


@pytest.mark.parametrize("active", ["RUNNING", "SUBMITTED"])
def test_a_running_or_submitted_statement_makes_the_session_busy(
    server: FabricServer, run: Callable[..., Any], active: str
) -> None:
    session = server.add(age=timedelta(hours=5))
    server.run(session.key, ago=timedelta(hours=4), status=active)
    for _ in range(9):  # the busy one lands on some page of four
        server.run(session.key, ago=timedelta(hours=1))
    found = record(run, session.key)
    assert found.state is State.BUSY
    assert server.requests("statements") == 3, "every page of statements was read"


def test_a_busy_statement_on_the_last_statements_page_is_seen(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    statements = [server.run(session.key, ago=timedelta(hours=2)) for _ in range(9)]
    # the fake orders records by a hash of their ids: make the last one the busy one
    ordered = sorted(statements, key=lambda s: hashlib.sha256(s.id.encode()).digest())
    server.finish(session.key, ordered[-1].id, status="RUNNING")
    assert record(run, session.key).state is State.BUSY
    assert server.targets[-1].endswith("offset=8"), "the last page was asked for"


def test_the_fingerprint_changes_with_a_new_statement_or_a_status_and_only_then(
    server: FabricServer, run: Callable[..., Any], clock: FrozenClock
) -> None:
    session = server.add()
    running = server.run(session.key, ago=timedelta(hours=1), status="RUNNING")
    busy = record(run, session.key)
    assert record(run, session.key).activity == busy.activity, "reading changes nothing"
    server.finish(session.key, running.id)
    finished = record(run, session.key)
    assert finished.state is State.IDLE
    assert finished.activity != busy.activity, "a statement that finished is news"
    clock.advance(timedelta(minutes=5))
    server.run(session.key)
    again = record(run, session.key)
    assert again.activity != finished.activity
    assert again.last_activity == clock.now()


def test_an_undocumented_statement_status_makes_the_state_unknown(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.run(session.key, status="PAUSED")
    found = record(run, session.key)
    assert found.state is State.UNKNOWN
    assert any("PAUSED" in a and "does not document" in a for a in found.anomalies)


def test_statements_that_cannot_be_read_leave_the_activity_unknown(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    broken, fine = server.add(), server.add()
    server.faults.append(
        Fault(op="statements", status=500, body=INTERNAL, times=10, where=broken.id)
    )
    found = {s.id: s for s in listing(run).sessions}
    assert found[broken.key].state is State.UNKNOWN
    assert found[broken.key].last_activity is None
    assert any("statements could not be read" in a for a in found[broken.key].anomalies)
    assert "common.00000500" in found[broken.key].anomalies[0]
    assert found[fine.key].state is State.IDLE
    assert found[fine.key].anomalies == ()


def test_a_statements_total_larger_than_delivered_leaves_the_activity_unknown(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.run(session.key)
    server.faults.append(
        Fault(op="statements", status=200, body={"records": [], "total": 1}, times=10)
    )
    found = record(run, session.key)
    assert found.state is State.UNKNOWN
    assert found.anomalies


def test_statements_janitor_may_not_read_fail_the_listing(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    server.add()
    server.faults.append(
        Fault(op="statements", status=403, body={"error_code": "DataArtsFabric.0403"}, times=5)
    )
    with pytest.raises(AuthFailed, match="403"):
        listing(run)


# --- record fields and workspaces ---------------------------------------------------------


def test_every_field_of_the_record(server: FabricServer, run: Callable[..., Any]) -> None:
    session = server.add("ws-2", age=timedelta(hours=2), session_id="5f2c-77aa")
    server.run(session.key, ago=timedelta(minutes=30), user="alice")
    found = record(run, "ws-2/5f2c-77aa")
    assert found.target == "fabric"
    assert found.provider == "fabric_sql"
    assert found.name == "5f2c-77aa"
    assert found.kind == "sql_session"
    assert found.created_at == NOW - timedelta(hours=2)
    assert found.created_at.tzinfo is UTC
    assert found.last_activity == NOW - timedelta(minutes=30)
    assert found.owner == "alice"
    assert found.labels == {
        "workspace": "ws-2",
        "endpoint_id": "ep-0001",
        "endpoint_name": "sql-endpoint",
    }
    assert found.etag is None
    assert found.connections is None
    assert found.parent_id is None
    assert found.raw["session_id"] == "5f2c-77aa"


def test_every_workspace_is_listed_on_every_page(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    ids = {server.add("ws-1").key for _ in range(6)} | {server.add("ws-2").key for _ in range(5)}
    found = listing(run)
    assert {s.id for s in found.sessions} == ids
    assert found.server_skew is not None
    assert "/v1/workspaces/ws-1/sessions?limit=100&offset=4" in server.targets
    assert "/v1/workspaces/ws-2/sessions?limit=100&offset=4" in server.targets


def test_an_unknown_workspace_fails_the_listing(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    with pytest.raises(ProviderError, match=r"404 common\.01000001"):
        listing(run, workspaces=["ws-1", "nope"])


def test_the_listing_reads_only_and_asks_statements_of_running_sessions_only(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    for status in ("RUNNING", "CLOSED", "FAIL", "CREATING", "WAITING"):
        server.add(status=status)
    listing(run)
    assert {method for method, _ in server.log} == {"GET"}
    assert server.requests("statements") == 1


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize("time_format", ["offset", "utc"])
def test_timestamps_with_an_offset_are_read_as_they_are(
    server: FabricServer, run: Callable[..., Any], time_format: str
) -> None:
    server.time_format = time_format
    session = server.add(age=timedelta(hours=3))
    assert record(run, session.key).created_at == NOW - timedelta(hours=3)


def test_timestamps_without_an_offset_are_unknown_without_a_timestamp_zone(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    server.time_format = "naive"
    session = server.add(age=timedelta(hours=3))
    used = server.add(age=timedelta(hours=3))
    server.run(used.key, ago=timedelta(hours=2))
    found = {s.id: s for s in listing(run).sessions}
    for key in (session.key, used.key):
        assert found[key].created_at is None
        assert found[key].last_activity is None
        assert any("set the target's timestamp_zone" in a for a in found[key].anomalies)


def test_timestamp_zone_says_how_to_read_timestamps_without_an_offset(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    server.time_format = "naive"
    session = server.add(age=timedelta(hours=3))
    server.run(session.key, ago=timedelta(hours=2))
    found = record(run, session.key, timestamp_zone="Asia/Shanghai")
    assert found.created_at == NOW - timedelta(hours=3)
    assert found.last_activity == NOW - timedelta(hours=2)
    assert found.anomalies == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("2026-11-22T13:00:00+00:00", "lies in the future"),
        (1_763_800_000_000, "is not a string"),
        ("yesterday", "is not a timestamp"),
    ],
)
def test_a_bad_create_time_is_an_anomaly(
    server: FabricServer, run: Callable[..., Any], value: object, problem: str
) -> None:
    session = server.add()
    body = {
        "sessions": [{"session_id": session.id, "status": "RUNNING", "create_time": value}],
        "total": 1,
    }
    server.faults.append(Fault(op="list", status=200, body=body, times=2))
    found = record(run, session.key, workspaces=["ws-1"])
    assert found.created_at is None
    assert any(problem in a for a in found.anomalies)


# --- paging, throttling and malformed answers ----------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (429, THROTTLED, {}),
        (429, THROTTLED, {"retry-after": "0"}),
        (408, TIMED_OUT, {}),
        (500, INTERNAL, {}),
    ],
)
def test_reads_back_off_and_retry(
    server: FabricServer,
    run: Callable[..., Any],
    status: int,
    body: Any,
    headers: dict[str, str],
) -> None:
    session = server.add()
    server.run(session.key)
    server.faults += [
        Fault(op="list", status=status, body=body, headers=headers),
        Fault(op="statements", status=status, body=body, headers=headers),
    ]
    found = record(run, session.key)
    assert found.state is State.IDLE
    assert found.anomalies == ()
    assert server.requests("statements") == 2


@pytest.mark.parametrize(
    "body",
    [
        {"total": 1},
        {"sessions": {}, "total": 0},
        {"sessions": [], "total": "1"},
        {"sessions": [], "total": -1},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_listing_fails(
    server: FabricServer, run: Callable[..., Any], body: Any
) -> None:
    server.faults.append(Fault(op="list", status=200, body=body))
    with pytest.raises(MalformedResponse):
        listing(run)


def test_a_body_that_is_not_json_fails_the_listing(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    server.faults.append(Fault(op="list", status=200, raw=b"<html>gateway</html>"))
    with pytest.raises(MalformedResponse, match="not JSON"):
        listing(run)


@pytest.mark.parametrize("session_id", [None, "", "../../v2/x", "a/b", 17])
def test_a_session_without_a_usable_id_is_an_invalid_record(
    server: FabricServer, run: Callable[..., Any], session_id: object
) -> None:
    body = {"sessions": [{"session_id": session_id, "status": "RUNNING"}], "total": 1}
    server.faults.append(Fault(op="list", status=200, body=body))
    found = listing(run, workspaces=["ws-1"])
    assert found.sessions == ()
    assert len(found.invalid) == 1
    assert "no valid session_id" in found.invalid[0].reason
    assert server.requests("statements") == 0, "no URL is built from it"


def test_a_listing_shorter_than_its_total_fails(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    for _ in range(5):
        server.add()
    server.short_once = True
    with pytest.raises(MalformedResponse, match="total"):
        listing(run)


def test_the_password_scheme_lists_with_an_iam_token(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    assert record(run, session.key, auth="password").state is State.IDLE
    assert server.requests("iam") == 1
    assert server.rejected == []


# --- the re-check ---------------------------------------------------------------------------


def test_get_session_is_fresh_and_keeps_the_listed_create_time(
    server: FabricServer, run: Callable[..., Any], clock: FrozenClock
) -> None:
    session = server.add(age=timedelta(hours=3))

    async def body(provider: FabricSqlProvider) -> tuple[Session, Session | None]:
        listed = next(s for s in (await provider.list_sessions()).sessions if s.id == session.key)
        clock.advance(timedelta(minutes=1))
        server.run(session.key)
        return listed, await provider.get_session(listed)

    listed, fresh = run(body)
    assert fresh is not None
    assert fresh.created_at == listed.created_at
    assert fresh.activity is not None
    assert fresh.last_activity == clock.now()
    assert listed.activity is None


def test_get_session_works_from_the_id_alone_and_is_none_once_gone(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add(status="CLOSED")
    stub = Session(
        target="fabric",
        provider="fabric_sql",
        id=session.key,
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state="",
    )
    fresh = run(lambda p: p.get_session(stub))
    assert fresh.provider_state == "CLOSED"
    assert fresh.created_at is None, "the get answers only session_id and status"
    del server.sessions[session.key]
    assert run(lambda p: p.get_session(stub)) is None


def test_get_session_refuses_an_id_that_is_not_workspace_slash_session(
    run: Callable[..., Any],
) -> None:
    stub = Session(
        target="fabric",
        provider="fabric_sql",
        id="ws-1/../../x",
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state="",
    )
    with pytest.raises(MalformedResponse, match="workspace/session_id"):
        run(lambda p: p.get_session(stub))


# --- the close ------------------------------------------------------------------------------


async def _close(provider: FabricSqlProvider, key: str) -> Any:
    listed = next(s for s in (await provider.list_sessions()).sessions if s.id == key)
    return await provider.act(Action.STOP, listed)


def test_closing_a_running_session_leaves_it_closed(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    receipt = run(lambda p: _close(p, session.key))
    assert receipt.status == 200
    assert not receipt.absent
    assert not receipt.changed
    assert not receipt.accepted
    assert receipt.request_id
    assert server.sessions[session.key].status == "CLOSED"
    assert server.closes[session.key] == 1
    assert ("DELETE", "act") in server.log


def test_a_404_on_the_close_means_already_absent(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.before["act"] = lambda: server.sessions.pop(session.key)
    receipt = run(lambda p: _close(p, session.key))
    assert receipt.absent
    assert "common.01000001" in receipt.detail


def test_a_400_for_a_session_closed_meanwhile_is_changed_naming_the_state(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.before["act"] = lambda: server.end(session.key, "FAIL")
    receipt = run(lambda p: _close(p, session.key))
    assert receipt.changed
    assert "already FAIL" in receipt.detail
    assert "common.01000001" in receipt.detail
    assert "solution: Query the session status" in receipt.detail
    assert server.closes[session.key] == 0


def test_a_400_for_a_session_still_running_is_a_refusal_with_huaweis_words(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    refusal = {
        "error_code": "DataArtsFabric.1234",
        "error_msg": "the endpoint is being upgraded",
        "solution_msg": "Try again after the upgrade.",
    }
    server.faults.append(Fault(op="act", status=400, body=refusal))
    with pytest.raises(ActionRejected) as caught:
        run(lambda p: _close(p, session.key))
    text = str(caught.value)
    assert "DataArtsFabric.1234" in text
    assert "the endpoint is being upgraded" in text
    assert "Try again after the upgrade." in text
    assert "the session is 'RUNNING'" in text
    assert caught.value.status == 400


@pytest.mark.parametrize(("status", "body"), [(408, TIMED_OUT), (500, INTERNAL), (502, None)])
def test_a_408_or_5xx_on_the_close_is_unknown_and_not_retried(
    server: FabricServer, run: Callable[..., Any], status: int, body: Any
) -> None:
    session = server.add()
    server.faults.append(Fault(op="act", status=status, body=body, times=5))
    with pytest.raises(OutcomeUnknown) as caught:
        run(lambda p: _close(p, session.key))
    assert server.requests("act") == 1
    if body:
        assert body["error_code"] in str(caught.value)


def test_a_throttled_close_is_retried(server: FabricServer, run: Callable[..., Any]) -> None:
    session = server.add()
    server.faults.append(Fault(op="act", status=429, body=THROTTLED))
    receipt = run(lambda p: _close(p, session.key))
    assert receipt.status == 200
    assert server.requests("act") == 2
    assert server.closes[session.key] == 1


def test_a_close_janitor_may_not_make_is_an_auth_failure(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.faults.append(
        Fault(
            op="act",
            status=403,
            body={"error_code": 403, "error_msg": "X-Auth-Token is invalid in the request"},
        )
    )
    with pytest.raises(AuthFailed, match="X-Auth-Token is invalid"):
        run(lambda p: _close(p, session.key))


def test_a_timeout_after_sending_the_close_is_unknown(
    server: FabricServer, run: Callable[..., Any]
) -> None:
    session = server.add()
    server.faults.append(Fault(op="act", error=httpx.ReadTimeout, after=True))
    with pytest.raises(OutcomeUnknown):
        run(lambda p: _close(p, session.key))
    assert server.sessions[session.key].status == "CLOSED"


def test_delete_is_not_offered(server: FabricServer, run: Callable[..., Any]) -> None:
    session = server.add()

    async def body(provider: FabricSqlProvider) -> Any:
        listed = next(s for s in (await provider.list_sessions()).sessions)
        return await provider.act(Action.DELETE, listed)

    with pytest.raises(ActionRejected, match="cannot delete"):
        run(body)
    assert server.closes[session.key] == 0
    assert Action.DELETE not in FabricSqlProvider.actions
