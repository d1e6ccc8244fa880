"""The glue provider against the fake Glue: the state table, records, activity from statements,
tags, errors, the actions and settling, SigV4 signing and botocore's credential chain.

Every request goes to tests/fakes/glue.py through an in-process transport; the fake verifies
each SigV4 signature independently of botocore. botocore's chain reads only the test's
environment and a temporary HOME (instance metadata disabled).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from janitor.auth.sigv4 import AwsCredentials, SigV4Auth
from janitor.clock import FrozenClock
from janitor.errors import AuthFailed, MalformedResponse, ProviderError
from janitor.http import make_target_http
from janitor.model import Action, InvalidRecord, Outcome, Session, State
from janitor.observability.sentry import secrets_of
from janitor.providers.glue import GlueProvider, partition_of
from tests.conftest import NOW, make_config
from tests.fakes.glue import (
    ACCESS_KEY,
    ACCOUNT,
    REGION,
    SECRET_KEY,
    Fault,
    GlueServer,
    SignatureError,
    glue_config,
    static_credentials,
    verify_sigv4,
)
from tests.integration.glue_world import aws_environment

T = TypeVar("T")


@pytest.fixture
def server(clock: FrozenClock) -> GlueServer:
    """The fake Glue."""
    return GlueServer(clock=clock)


@pytest.fixture(autouse=True)
def _aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    aws_environment(monkeypatch, tmp_path / "home")


def run(
    server: GlueServer,
    clock: FrozenClock,
    body: Callable[[GlueProvider], Awaitable[T]],
    *,
    credentials: AwsCredentials | None = None,
    **keys: Any,
) -> T:
    """Connect a provider to the fake, run ``body``, close it."""

    async def main() -> T:
        provider = GlueProvider.connect(
            glue_config(**keys),
            clock,
            credentials=credentials or static_credentials(),
            transport=server.transport(),
        )
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def listing(server: GlueServer, clock: FrozenClock, **keys: Any) -> dict[str, Session]:
    """The listed sessions by id."""
    result = run(server, clock, lambda p: p.list_sessions(), **keys)
    return {s.id: s for s in result.sessions}


# --- the state table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "actions"),
    [
        ("PROVISIONING", State.PENDING, {Action.NOTIFY}),
        ("READY", State.IDLE, {Action.STOP, Action.DELETE, Action.NOTIFY}),
        ("STOPPING", State.STOPPING, {Action.NOTIFY}),
        ("STOPPED", State.ENDED, {Action.DELETE}),
        ("FAILED", State.ENDED, {Action.DELETE}),
        ("TIMEOUT", State.ENDED, {Action.DELETE}),
        ("EXPLODED", State.UNKNOWN, {Action.NOTIFY}),
    ],
)
def test_each_status_maps_to_its_state_and_actions(
    server: GlueServer, clock: FrozenClock, status: str, state: State, actions: set[Action]
) -> None:
    server.add("s", status=status)
    record = listing(server, clock)["s"]
    assert record.state is state
    assert record.provider_state == status
    assert record.actions == actions


def test_a_ready_session_with_a_waiting_or_running_statement_is_busy(
    server: GlueServer, clock: FrozenClock
) -> None:
    for name, state in [("waiting", "WAITING"), ("running", "RUNNING"), ("done", "AVAILABLE")]:
        server.add(name)
        server.run(name, ago=timedelta(hours=2))
        server.run(name, state=state, ago=timedelta(hours=1))
    records = listing(server, clock)
    assert records["waiting"].state is State.BUSY
    assert records["running"].state is State.BUSY
    assert records["done"].state is State.IDLE


def test_activity_is_the_latest_statement_else_the_creation(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.statement_page_size = 2
    server.add("used", age=timedelta(hours=10))
    for hours in (9, 3, 7, 5, 8):  # five statements over three pages, the latest in the middle
        server.run("used", ago=timedelta(hours=hours))
    server.add("never", age=timedelta(hours=4))
    server.add("starting", age=timedelta(minutes=5), status="PROVISIONING")

    records = listing(server, clock)

    assert records["used"].last_activity == NOW - timedelta(hours=3)
    assert records["used"].created_at == NOW - timedelta(hours=10)
    assert records["never"].last_activity == NOW - timedelta(hours=4)
    assert records["starting"].last_activity == NOW - timedelta(minutes=5)
    assert len(server.ops("ListStatements")) == 3 + 1, "every page, READY sessions only"


def test_a_running_statement_on_the_last_statements_page_makes_the_session_busy(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.statement_page_size = 2
    server.add("s", age=timedelta(hours=10))
    for hours in (9, 8, 7, 6):
        server.run("s", ago=timedelta(hours=hours))
    server.run("s", state="RUNNING", ago=timedelta(hours=5))
    assert listing(server, clock)["s"].state is State.BUSY


def test_an_ended_session_dates_its_end_from_completed_on(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s", age=timedelta(days=3))
    clock.advance(timedelta(hours=-30))
    server.end("s", "TIMEOUT")
    clock.advance(timedelta(hours=30))
    record = listing(server, clock)["s"]
    assert record.state_since == NOW - timedelta(hours=30)
    assert record.last_activity == NOW - timedelta(hours=30)
    assert server.ops("ListStatements") == []


def test_a_failed_statements_read_leaves_the_activity_unknown(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.faults.append(Fault(op="statements", status=500, times=100))
    record = listing(server, clock)["s"]
    assert record.state is State.UNKNOWN
    assert record.last_activity is None
    assert any("statements could not be read" in a for a in record.anomalies)


def test_record_fields(server: GlueServer, clock: FrozenClock) -> None:
    server.add("etl-1", age=timedelta(hours=2), tags={"team": "data"})
    record = listing(server, clock)["etl-1"]
    assert record.name == "etl-1"
    assert record.kind == "glueetl"
    assert record.owner == "arn:aws:iam::123456789012:role/GlueInteractive"
    assert record.labels == {"team": "data"}
    assert record.anomalies == ()
    assert record.etag is None


@pytest.mark.parametrize(
    ("field", "value", "anomaly"),
    [
        ("CreatedOn", "yesterday", "CreatedOn is not a number"),
        ("CreatedOn", (NOW + timedelta(hours=1)).timestamp(), "CreatedOn lies in the future"),
        ("Status", 3, "Status is not a string"),
    ],
)
def test_malformed_session_fields_are_anomalies(
    server: GlueServer,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: Any,
    anomaly: str,
) -> None:
    session = server.add("s")
    model = session.model
    monkeypatch.setattr(session, "model", lambda: {**model(), field: value})
    record = listing(server, clock)["s"]
    assert any(anomaly in a for a in record.anomalies), record.anomalies


def test_a_future_statement_time_is_an_anomaly(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s")
    server.run("s", ago=timedelta(hours=-1))
    record = listing(server, clock)["s"]
    assert any("StartedOn lies in the future" in a for a in record.anomalies)


def test_a_session_without_an_id_is_an_invalid_record(
    server: GlueServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = server.add("s")
    monkeypatch.setattr(session, "model", lambda: {"Status": "READY"})
    result = run(server, clock, lambda p: p.list_sessions())
    assert result.sessions == ()
    assert [type(r) for r in result.invalid] == [InvalidRecord]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy</html>"),
        httpx.Response(200, json={"Sessions": {"Id": "x"}}),
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
def test_a_malformed_listing_fails(clock: FrozenClock, answer: httpx.Response) -> None:
    async def main() -> None:
        provider = GlueProvider.connect(
            glue_config(account_id=ACCOUNT),
            clock,
            credentials=static_credentials(),
            transport=httpx.MockTransport(lambda request: answer),
        )
        try:
            with pytest.raises(MalformedResponse):
                await provider.list_sessions()
        finally:
            await provider.aclose()

    asyncio.run(main())


# --- paging and protocol -------------------------------------------------------------------


def test_every_page_is_listed_and_every_call_says_request_origin(
    server: GlueServer, clock: FrozenClock
) -> None:
    for i in range(7):
        server.add(f"s{i}")
    records = listing(server, clock)
    assert len(records) == 7
    assert len(server.ops("ListSessions")) == 3
    for op, body in server.log:
        if op in ("ListSessions", "GetSession", "ListStatements", "StopSession", "DeleteSession"):
            assert body["RequestOrigin"] == "janitor", op
    assert all(body["MaxResults"] == 100 for op, body in server.log if op == "ListSessions")


def test_throttling_in_a_400_is_backed_off_and_retried(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.faults.append(Fault(op="list", code="ThrottlingException"))
    assert set(listing(server, clock)) == {"s"}
    assert len(server.ops("ListSessions")) == 2


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"]
)
def test_an_auth_failure_in_a_400_fails_the_listing(
    server: GlueServer, clock: FrozenClock, code: str
) -> None:
    server.add("s")
    server.faults.append(Fault(op="list", code=code, times=10))
    with pytest.raises(AuthFailed):
        listing(server, clock)


# --- tags ----------------------------------------------------------------------------------


def test_the_account_is_read_once_from_sts(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", tags={"keep": "true"})

    async def twice(provider: GlueProvider) -> list[Any]:
        return [await provider.list_sessions(), await provider.list_sessions()]

    first, second = run(server, clock, twice)
    assert first.sessions[0].labels == {"keep": "true"}
    assert second.sessions[0].labels == {"keep": "true"}
    assert server.ops("sts") == ["sts"]


def test_a_configured_account_needs_no_sts(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", tags={"keep": "true"})
    assert listing(server, clock, account_id=ACCOUNT)["s"].labels == {"keep": "true"}
    assert server.ops("sts") == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(op="tags", code="AccessDeniedException", times=10),
        Fault(op="tags", status=500, times=10),
        Fault(op="sts", status=403, times=10),
    ],
)
def test_unreadable_tags_are_unknown_labels(
    server: GlueServer, clock: FrozenClock, fault: Fault
) -> None:
    server.add("s", tags={"keep": "true"})
    server.faults.append(fault)
    record = listing(server, clock)["s"]
    assert record.labels is None
    assert record.state is State.IDLE, "only the labels are unknown"


def test_a_wrong_account_means_unknown_labels(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", tags={"keep": "true"})
    assert listing(server, clock, account_id="000000000000")["s"].labels is None


def test_partitions_come_from_botocore() -> None:
    assert partition_of("eu-west-1") == ("aws", "amazonaws.com")
    assert partition_of("cn-north-1") == ("aws-cn", "amazonaws.com.cn")
    assert partition_of("us-gov-west-1") == ("aws-us-gov", "amazonaws.com")


# --- get -----------------------------------------------------------------------------------


def test_get_is_fresh_and_none_once_gone(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", age=timedelta(hours=5))

    async def body(provider: GlueProvider) -> tuple[Session | None, Session | None]:
        listed = (await provider.list_sessions()).sessions[0]
        server.run("s", state="RUNNING")
        fresh = await provider.get_session(listed)
        del server.sessions["s"]
        return fresh, await provider.get_session(listed)

    fresh, gone = run(server, clock, body)
    assert fresh is not None
    assert fresh.state is State.BUSY
    assert gone is None


# --- actions -------------------------------------------------------------------------------


async def _act(provider: GlueProvider, action: Action, session_id: str) -> Any:
    listed = {s.id: s for s in (await provider.list_sessions()).sessions}
    fresh = await provider.get_session(listed[session_id])
    assert fresh is not None
    return await provider.act(action, fresh)


def test_stop_is_accepted(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s")
    receipt = run(server, clock, lambda p: _act(p, Action.STOP, "s"))
    assert receipt.accepted
    assert receipt.request_id
    assert server.sessions["s"].status == "STOPPING"


def test_a_delete_stops_a_ready_session_first(server: GlueServer, clock: FrozenClock) -> None:
    server.stop_at_once = True
    server.add("s")
    receipt = run(server, clock, lambda p: _act(p, Action.DELETE, "s"))
    assert (receipt.accepted, receipt.absent, receipt.changed) == (False, False, False)
    assert server.ops("StopSession", "DeleteSession") == ["StopSession", "DeleteSession"]
    assert "s" not in server.sessions


def test_a_delete_refused_while_stopping_is_accepted(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    receipt = run(server, clock, lambda p: _act(p, Action.DELETE, "s"))
    assert receipt.accepted
    assert "STOPPING" in receipt.detail
    assert server.sessions["s"].status == "STOPPING"


def test_a_delete_tolerates_an_illegal_state_on_its_stop(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.stop_at_once = True
    server.add("s")
    server.faults.append(Fault(op="StopSession", code="IllegalSessionStateException"))

    async def body(provider: GlueProvider) -> Any:
        listed = (await provider.list_sessions()).sessions[0]
        server.end("s", "STOPPED")  # someone else stopped it meanwhile
        return await provider.act(Action.DELETE, listed)

    receipt = run(server, clock, body)
    assert not receipt.accepted
    assert server.ops("StopSession", "DeleteSession") == ["StopSession", "DeleteSession"]
    assert "s" not in server.sessions


def test_a_stopped_session_is_deleted_without_a_stop(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.end("s", "STOPPED")
    run(server, clock, lambda p: _act(p, Action.DELETE, "s"))
    assert server.ops("StopSession", "DeleteSession") == ["DeleteSession"]


@pytest.mark.parametrize("action", [Action.STOP, Action.DELETE])
@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ConcurrentModificationException", "changed"),
        ("EntityNotFoundException", "absent"),
    ],
)
def test_action_errors(
    server: GlueServer, clock: FrozenClock, action: Action, code: str, expected: str
) -> None:
    server.add("s")
    server.faults.append(Fault(op="act", code=code))
    receipt = run(server, clock, lambda p: _act(p, action, "s"))
    assert getattr(receipt, expected)
    assert server.stops["s"] == 0


def test_a_stop_of_a_session_already_stopping_is_changed_naming_the_state(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")

    async def body(provider: GlueProvider) -> Any:
        listed = (await provider.list_sessions()).sessions[0]
        server.sessions["s"].status = "STOPPING"  # stopped by someone else
        return await provider.act(Action.STOP, listed)

    receipt = run(server, clock, body)
    assert receipt.changed
    assert "STOPPING" in receipt.detail


def test_an_illegal_state_for_a_vanished_session_is_absent(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")

    async def body(provider: GlueProvider) -> Any:
        listed = (await provider.list_sessions()).sessions[0]
        server.faults.append(Fault(op="StopSession", code="IllegalSessionStateException"))
        del server.sessions["s"]
        return await provider.act(Action.STOP, listed)

    assert run(server, clock, body).absent


def test_a_throttled_stop_is_retried_and_re_signed(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s")
    server.faults.append(Fault(op="act", code="ThrottlingException", headers={"retry-after": "0"}))
    receipt = run(server, clock, lambda p: _act(p, Action.STOP, "s"))
    assert receipt.accepted
    assert server.ops("StopSession") == ["StopSession", "StopSession"]
    assert server.stops["s"] == 1


# --- settling ------------------------------------------------------------------------------


def _stub(session_id: str) -> Session:
    return Session(
        target="glue",
        provider="glue",
        id=session_id,
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state="",
    )


def settle(server: GlueServer, clock: FrozenClock, action: Action, *, accepted: bool = True) -> Any:
    return run(
        server,
        clock,
        lambda p: p.settle(action, _stub("s"), accepted=accepted, waited=timedelta(minutes=5)),
    )


def test_an_accepted_delete_asks_for_the_delete_again_once_stopped(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.end("s", "STOPPED")
    verdict = settle(server, clock, Action.DELETE)
    assert verdict.again
    assert verdict.outcome is None
    assert verdict.record is not None
    assert verdict.record.provider_state == "STOPPED"
    assert server.ops("DeleteSession") == [], "settling never calls by itself"


def test_an_accepted_delete_is_open_while_stopping(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", status="STOPPING")
    verdict = settle(server, clock, Action.DELETE)
    assert not verdict.again
    assert verdict.outcome is None


def test_an_accepted_delete_of_a_vanished_session_is_executed(
    server: GlueServer, clock: FrozenClock
) -> None:
    assert settle(server, clock, Action.DELETE).outcome is Outcome.EXECUTED


def test_a_delete_not_known_to_be_accepted_is_not_made_again(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.end("s", "STOPPED")
    verdict = settle(server, clock, Action.DELETE, accepted=False)
    assert not verdict.again
    assert verdict.outcome is Outcome.FAILED
    assert "decided anew" in verdict.reason


def test_a_stop_settles_at_stopped(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s", status="STOPPING")
    assert settle(server, clock, Action.STOP).outcome is None
    server.finish("s")
    assert settle(server, clock, Action.STOP).outcome is Outcome.EXECUTED


# --- signing and credentials -----------------------------------------------------------------


def test_a_wrong_secret_is_refused_by_the_signature_check(
    server: GlueServer, clock: FrozenClock
) -> None:
    import botocore.credentials

    wrong = AwsCredentials(
        profile=None,
        target="glue",
        static=botocore.credentials.Credentials(ACCESS_KEY, "not-the-secret"),
    )
    server.add("s")
    with pytest.raises(AuthFailed):
        run(server, clock, lambda p: p.list_sessions(), credentials=wrong)


def test_a_session_token_is_sent_and_signed(server: GlueServer, clock: FrozenClock) -> None:
    server.token = "session-token-123"
    server.add("s")
    with pytest.raises(AuthFailed):  # credentials without the token
        listing(server, clock)
    records = run(
        server,
        clock,
        lambda p: p.list_sessions(),
        credentials=static_credentials(token="session-token-123"),
    )
    assert [s.id for s in records.sessions] == ["s"]


def test_the_query_is_signed_as_aws_reads_it_and_trace_headers_are_stripped() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        verify_sigv4(
            request, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, service="glue"
        )
        return httpx.Response(200, json={})

    async def main() -> None:
        http = make_target_http(
            target="t",
            base_url="http://glue.test/",
            auth=SigV4Auth(static_credentials(), region=REGION, service="glue"),
            timeout=timedelta(seconds=5),
            concurrency=1,
            rate=100,
            transport=httpx.MockTransport(handle),
        )
        try:
            await http.read(
                "GET",
                "path",
                params={"filter": "name eq 'a b'", "x": "~ok+"},
                headers={"sentry-trace": "abc-def-1", "baggage": "sentry-x=1"},
            )
        finally:
            await http.aclose()

    asyncio.run(main())
    [request] = seen
    assert b"+" not in request.url.query.replace(b"%2B", b"")
    assert "sentry-trace" not in request.headers
    assert "baggage" not in request.headers


def test_the_fake_refuses_a_tampered_request() -> None:
    request = httpx.Request("POST", "http://glue.test/", content=b"{}")
    SigV4Auth(static_credentials(), region=REGION, service="glue").sign(
        request, static_credentials().frozen_sync()
    )
    verify_sigv4(
        request, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, service="glue"
    )
    tampered = httpx.Request("POST", "http://glue.test/", content=b"{1}", headers=request.headers)
    with pytest.raises(SignatureError):
        verify_sigv4(
            tampered, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, service="glue"
        )


def test_credentials_from_the_environment(
    server: GlueServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(monkeypatch, tmp_path, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    server.add("s")
    chain = AwsCredentials(profile=None, target="glue")
    assert [
        s.id for s in run(server, clock, lambda p: p.list_sessions(), credentials=chain).sessions
    ] == ["s"]


def test_credentials_from_a_profile_in_the_shared_files(
    server: GlueServer, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(monkeypatch, tmp_path)
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n"
        f"[janitor]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    server.add("s")

    async def body(provider: GlueProvider) -> Any:
        return await provider.list_sessions()

    async def main() -> Any:
        provider = GlueProvider.connect(
            glue_config(profile="janitor"), clock, transport=server.transport()
        )
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    assert [s.id for s in asyncio.run(main()).sessions] == ["s"]


def test_no_credentials_is_an_auth_failure_never_an_empty_listing(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")

    async def main() -> Any:
        provider = GlueProvider.connect(glue_config(), clock, transport=server.transport())
        try:
            return await provider.list_sessions()
        finally:
            await provider.aclose()

    with pytest.raises(AuthFailed, match="no AWS credentials"):
        asyncio.run(main())
    assert server.log == [], "nothing unsigned is sent"


def test_a_missing_profile_is_an_auth_failure(server: GlueServer, clock: FrozenClock) -> None:
    async def main() -> Any:
        provider = GlueProvider.connect(
            glue_config(profile="nope"), clock, transport=server.transport()
        )
        try:
            return await provider.list_sessions()
        finally:
            await provider.aclose()

    with pytest.raises(AuthFailed, match="ProfileNotFound"):
        asyncio.run(main())


def test_credentials_are_resolved_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(monkeypatch, tmp_path, access_key=ACCESS_KEY, secret_key=SECRET_KEY)
    chain = AwsCredentials(profile=None, target="glue")
    threads: list[threading.Thread] = []
    original = chain.frozen_sync

    def recorded() -> Any:
        threads.append(threading.current_thread())
        return original()

    monkeypatch.setattr(chain, "frozen_sync", recorded)

    async def main() -> Any:
        return await chain.frozen()

    frozen = asyncio.run(main())
    assert frozen.access_key == ACCESS_KEY
    assert threads
    assert threads[0] is not threading.main_thread()


# --- secrets -------------------------------------------------------------------------------


def test_aws_secrets_are_scrubbed_from_sentry_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    aws_environment(
        monkeypatch, tmp_path, access_key=ACCESS_KEY, secret_key=SECRET_KEY, token="tok-env-123"
    )
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(
        "[ops]\naws_access_key_id = AKIDOPS\naws_secret_access_key = ops-secret-456\n"
    )
    (tmp_path / ".aws" / "config").write_text("[profile ops]\naws_session_token = cfg-token-789\n")
    identity = tmp_path / "web-identity"
    identity.write_text("jwt.header.payload\n")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(identity))
    config = make_config(
        "sqlite://", [{"name": "g", "provider": "glue", "region": REGION, "profile": "ops"}]
    )
    secrets = secrets_of(config)
    for value in (
        SECRET_KEY,
        "tok-env-123",
        "ops-secret-456",
        "cfg-token-789",
        "jwt.header.payload",
    ):
        assert value in secrets


def test_reading_never_writes(server: GlueServer, clock: FrozenClock) -> None:
    server.add("s")
    server.run("s", ago=timedelta(hours=2))
    run(server, clock, lambda p: p.list_sessions())
    assert server.ops("StopSession", "DeleteSession") == []
    assert len(server.sessions["s"].statements) == 1


def test_an_unexpected_read_error_is_a_provider_error(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.faults.append(Fault(op="get", code="InvalidInputException"))

    async def body(provider: GlueProvider) -> Any:
        return await provider.get_session(_stub("s"))

    with pytest.raises(ProviderError, match="InvalidInputException"):
        run(server, clock, body)


def test_a_statement_in_an_unknown_state_is_an_anomaly(
    server: GlueServer, clock: FrozenClock
) -> None:
    server.add("s")
    server.run("s", state="PONDERING", ago=timedelta(hours=2))
    record = listing(server, clock)["s"]
    assert any("unknown state 'PONDERING'" in a for a in record.anomalies)
