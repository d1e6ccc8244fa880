"""The ess provider against the fake scheduler (tests/fakes/ess.py), in-process.

The contract suite (test_contract.py) covers what every provider must do; here is what is
ESS's own: each row of the state table, each field of a record, the listing's two passes over
the state queries (requests that move between queries, pages that shift, a server that counts
pages from 1 or ignores the filter), malformed records and bodies, per-record actions, and
how each answer to a cancel or force cancel is read. Auth is in test_ess_auth.py, sweeps in
tests/integration/test_ess_sweeps.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from janitor.clock import FrozenClock
from janitor.errors import ActionRejected, AuthFailed, MalformedResponse, OutcomeUnknown
from janitor.model import Action, Listing, Session, State
from janitor.providers.ess import QUERIED, STATES, EssProvider
from janitor.targets import EssConfig
from tests.conftest import NOW
from tests.fakes.ess import DROP, EssServer, Fault, Request, ess_target

T = TypeVar("T")


@pytest.fixture
def server(clock: FrozenClock) -> EssServer:
    """The fake scheduler, three requests to a page."""
    return EssServer(clock=clock, page_size=3)


@pytest.fixture
def connect(server: EssServer, clock: FrozenClock, tmp_path: Path) -> Callable[..., EssProvider]:
    """A provider on the fake (Basic auth), with target keys overridden by ``keys``."""

    def make(**keys: Any) -> EssProvider:
        config = EssConfig.model_validate(ess_target(tmp_path, server, **keys))
        return EssProvider.connect(config, clock, transport=server.transport())

    return make


def run(provider: EssProvider, scenario: Callable[[EssProvider], Awaitable[T]]) -> T:
    """Run ``scenario`` with the provider in a fresh event loop, then close it."""

    async def main() -> T:
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def listing(provider: EssProvider) -> Listing:
    """One listing."""
    return run(provider, lambda p: p.list_sessions())


def fetched(provider: EssProvider, request: Request) -> Session | None:
    """The provider's fresh read of ``request``."""
    return run(provider, lambda p: p.get_session(stub(str(request.id))))


def stub(request_id: str, provider_state: str = "RUNNING") -> Session:
    """What janitor knows of a request before reading it."""
    return Session(
        target="ess",
        provider="ess",
        id=request_id,
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state=provider_state,
    )


def queries(server: EssServer) -> list[tuple[str, int]]:
    """(state, pageIndex) of every listing request, in order."""
    found = []
    for _, op, path in server.log:
        if op in ("list", "list_next"):
            parts = urlsplit(path)
            q = parse_qs(parts.query)["q"][0]
            found.append((q.split('"')[1], int(parts.path.rsplit("/", 1)[1])))
    return found


# --- the state table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ess_state", "expected"),
    [
        *STATES.items(),
        ("ERROR_AUTO_RETRY", State.UNKNOWN),
        ("UNKNOWN", State.UNKNOWN),
        ("SOMETHING_NEW", State.UNKNOWN),
    ],
)
def test_every_ess_state_maps_to_its_row_of_the_table(
    server: EssServer, connect: Callable[..., EssProvider], ess_state: str, expected: State
) -> None:
    request = server.add(state=ess_state)

    record = fetched(connect(), request)

    assert record is not None
    assert record.state is expected
    assert record.provider_state == ess_state
    assert record.anomalies == ()


def test_the_table_covers_the_documented_states_and_the_listing_every_unfinished_one() -> None:
    ended = {s for s, state in STATES.items() if state is State.ENDED}
    assert ended == {
        "SUCCEEDED",
        "WARNING",
        "ERROR",
        "CANCELLED",
        "EXPIRED",
        "VALIDATION_FAILED",
        "FINISHED",
        "SCHEDULE_ENDED",
    }
    assert set(QUERIED) == (set(STATES) - ended) | {"ERROR_AUTO_RETRY", "UNKNOWN"}


# --- records ----------------------------------------------------------------------------------


def test_a_record_carries_every_field_janitor_uses(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    parent = server.add("PayrollRun", state="PAUSED", since=timedelta(hours=7), submitter="bob")
    child = server.add(
        "PayrollStep", state="RUNNING", since=timedelta(hours=6), submitter="bob", parent=parent
    )
    server.touch(child.id)

    records = {s.id: s for s in listing(connect()).sessions}

    record = records[str(child.id)]
    assert record.provider == "ess"
    assert record.name == "PayrollStep"
    assert record.kind == "SUB_REQUEST"
    assert record.owner == "bob"
    assert record.parent_id == str(parent.id)
    assert record.created_at == child.submitted
    assert record.state_since == child.changed == NOW - timedelta(hours=6)
    assert record.last_activity == NOW, "the latest of submission, process start, state change"
    assert record.etag is None
    assert record.labels == {
        "application": "FinancialsEss",
        "product": "AP",
        "job_type": "JAVA_TYPE",
        "job_definition": "JobDefinition://oracle/apps/ess/financials/PayrollStep",
    }
    assert record.actions == {Action.CANCEL, Action.NOTIFY}
    top = records[str(parent.id)]
    assert top.parent_id is None
    assert top.kind == "JOBSET"
    assert top.state is State.BUSY


@pytest.mark.parametrize(
    ("requested", "since"),
    [
        (NOW + timedelta(hours=5), NOW + timedelta(hours=5)),  # scheduled for later
        (NOW - timedelta(hours=2), NOW - timedelta(hours=2)),  # due two hours ago
        (NOW - timedelta(days=3), NOW - timedelta(days=1)),  # due before it entered WAIT
        (None, NOW - timedelta(days=1)),
    ],
)
def test_a_waiting_request_counts_from_its_requested_start(
    server: EssServer, connect: Callable[..., EssProvider], requested: Any, since: Any
) -> None:
    request = server.add(state="WAIT", since=timedelta(days=1), requested_start=requested)

    record = fetched(connect(), request)

    assert record is not None
    assert record.state_since == since
    assert record.anomalies == (), "a start in the future is a schedule, not an anomaly"
    assert record.last_activity is not None
    assert record.last_activity <= NOW


def test_only_a_wait_counts_from_its_requested_start(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(
        state="RUNNING", since=timedelta(hours=1), requested_start=NOW - timedelta(minutes=30)
    )
    record = fetched(connect(), request)
    assert record is not None
    assert record.state_since == NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("flags", "state", "allowed"),
    [
        ({}, "RUNNING", {Action.CANCEL, Action.NOTIFY}),
        ({"isCancellable": False}, "RUNNING", {Action.NOTIFY}),
        ({"isCancellable": DROP}, "RUNNING", {Action.NOTIFY}),  # not reported: not allowed
        ({}, "CANCELLING", {Action.NOTIFY}),  # not asynchronous, not 30 minutes yet
        ({"isForceCancelAllowed": True, "isAsynchronous": True}, "CANCELLING", None),
        ({"isForceCancelAllowed": True, "isAsynchronous": False}, "CANCELLING", {Action.NOTIFY}),
        ({"isForceCancelAllowed": False, "isAsynchronous": True}, "CANCELLING", {Action.NOTIFY}),
        ({"isCancellable": True}, "CANCELLED", set()),  # ended: nothing, not even notify
    ],
)
def test_a_record_allows_what_its_state_and_its_flags_allow(
    server: EssServer,
    connect: Callable[..., EssProvider],
    flags: dict[str, Any],
    state: str,
    allowed: set[Action] | None,
) -> None:
    request = server.add(state=state)
    request.overrides = flags

    record = fetched(connect(), request)

    assert record is not None
    assert record.actions == (
        allowed if allowed is not None else {Action.FORCE_CANCEL, Action.NOTIFY}
    )


def test_force_cancel_is_allowed_by_the_server_s_rule(
    server: EssServer, connect: Callable[..., EssProvider], clock: FrozenClock
) -> None:
    request = server.add(state="CANCELLING", since=timedelta(minutes=10), asynchronous=True)
    early = fetched(connect(), request)
    clock.advance(timedelta(minutes=20))
    late = fetched(connect(), request)
    assert early is not None
    assert late is not None
    assert Action.FORCE_CANCEL not in (early.actions or ())
    assert Action.FORCE_CANCEL in (late.actions or ())


@pytest.mark.parametrize(
    ("overrides", "anomaly"),
    [
        ({"state": 7}, "state is not a string"),
        ({"stateChangeTime": "2026-11-22T10:00:00"}, "stateChangeTime has no time zone"),
        ({"stateChangeTime": "2026-11-23T10:00:00Z"}, "stateChangeTime lies in the future"),
        ({"submissionTime": "yesterday"}, "submissionTime is not a timestamp"),
        ({"processStartTime": 1700000000}, "processStartTime is not a string"),
        ({"requestedStartTime": "2026-11-22T10:00:00"}, "requestedStartTime has no time zone"),
        ({"isCancellable": "true"}, "isCancellable is not a boolean"),
        ({"submitter": 42}, "submitter is not a string"),
        ({"parentRequestId": "300001"}, "parentRequestId is not an integer"),
        ({"parentRequestId": DROP, "absParentRequestId": 1}, "own parent is unknown"),
        ({"application": ["a"]}, "application is not a string"),
    ],
)
def test_a_malformed_field_is_an_anomaly(
    server: EssServer,
    connect: Callable[..., EssProvider],
    overrides: dict[str, Any],
    anomaly: str,
) -> None:
    request = server.add(state="RUNNING")
    request.overrides = overrides

    record = fetched(connect(), request)

    assert record is not None
    assert any(anomaly in a for a in record.anomalies), record.anomalies


def test_a_top_level_request_has_no_parent_whatever_it_reports(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    for parent in (None, 0, "self"):
        request = server.add()
        request.overrides = {"parentRequestId": request.id if parent == "self" else parent}
        record = fetched(connect(), request)
        assert record is not None
        assert record.parent_id is None
        assert record.anomalies == ()


def test_a_request_without_an_integer_id_is_an_invalid_record(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    good = server.add("Good")
    for bad_id in ("abc", DROP, True, -3):
        server.add("Bad").overrides = {"requestId": bad_id}

    result = listing(connect())

    assert [s.id for s in result.sessions] == [str(good.id)]
    assert len(result.invalid) == 4, "each malformed record once, not once per pass"
    assert all("without an integer requestId" in i.reason for i in result.invalid)


def test_a_job_definition_that_is_missing_names_the_request_by_its_id(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add()
    request.overrides = {"jobDefinitionId": DROP}
    record = fetched(connect(), request)
    assert record is not None
    assert record.name == f"request {request.id}"
    assert "job_definition" not in (record.labels or {})


# --- the listing ------------------------------------------------------------------------------


def test_the_listing_asks_every_unfinished_state_twice_along_the_life_cycle(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    server.add(state="RUNNING")
    ended = server.add(state="SUCCEEDED")

    result = listing(connect())

    first_pages = [state for state, index in queries(server) if index == 0]
    assert first_pages == [*QUERIED, *QUERIED]
    assert str(ended.id) not in {s.id for s in result.sessions}, "terminal requests are not listed"
    path = server.calls("list")[0]
    assert path.startswith("/ess/rest/scheduler/v1/requests/search/0?")
    assert "q=state%20eq%20%22PENDING_VALIDATION%22" in path, "spaces as %20, quotes encoded"
    assert "orderBy=requestId:asc" in path
    assert "fields=requestId,state," in path


def test_pages_are_followed_from_zero_until_an_empty_page(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    ids = {str(server.add(state="RUNNING").id) for _ in range(7)}

    result = listing(connect())

    assert {s.id for s in result.sessions} == ids
    running = [index for state, index in queries(server) if state == "RUNNING"]
    assert running == [0, 1, 2, 3, 0, 1, 2, 3], "three pages and an empty one, in each pass"


def test_a_request_moving_on_between_two_queries_is_listed_once_in_its_new_state(
    server: EssServer, connect: Callable[..., EssProvider], clock: FrozenClock
) -> None:
    request = server.add(state="WAIT", since=timedelta(hours=2))

    def start(state: str, index: int) -> None:
        if state == "BLOCKED" and request.state == "WAIT":  # after WAIT was asked
            clock.advance(timedelta(seconds=1))
            server.set_state(request.id, "RUNNING")

    server.on_page = start
    result = listing(connect())

    [record] = result.sessions
    assert record.provider_state == "RUNNING", "the fresher copy wins"
    assert record.state_since == request.changed


def test_a_request_moving_back_during_the_first_pass_is_found_by_the_second(
    server: EssServer, connect: Callable[..., EssProvider], caplog: pytest.LogCaptureFixture
) -> None:
    held = server.add(state="HOLD", since=timedelta(days=2))
    seen: list[str] = []

    def release(state: str, index: int) -> None:
        if index != 0:
            return
        seen.append(state)
        if state == "READY" and seen.count("READY") == 1:  # WAIT asked, HOLD not yet
            server.set_state(held.id, "WAIT")

    server.on_page = release
    with caplog.at_level(logging.INFO, logger="janitor.providers.ess"):
        result = listing(connect())

    assert [s.id for s in result.sessions] == [str(held.id)]
    assert result.sessions[0].provider_state == "WAIT"
    assert "found only by the second pass" in caplog.text, "a miss of the first pass is said"


def test_a_request_moving_back_then_on_is_found_by_the_second_pass(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    held = server.add(state="HOLD", since=timedelta(days=2))
    asked: list[str] = []

    def release_then_start(state: str, index: int) -> None:
        if index != 0:
            return
        asked.append(state)
        if state == "READY" and asked.count("READY") == 1:  # pass 1: after WAIT was asked
            server.set_state(held.id, "WAIT")
        if state == "BLOCKED" and asked.count("BLOCKED") == 2:  # pass 2: WAIT asked, READY not
            server.set_state(held.id, "READY")

    server.on_page = release_then_start
    result = listing(connect())

    assert [(s.id, s.provider_state) for s in result.sessions] == [(str(held.id), "READY")]


def test_a_request_that_slides_to_an_earlier_page_is_not_missed(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    running = [server.add(state="RUNNING") for _ in range(5)]
    done = False

    def finish_first(state: str, index: int) -> None:
        nonlocal done
        if state == "RUNNING" and index == 1 and not done:  # page 0 was read
            done = True
            server.set_state(running[0].id, "SUCCEEDED")  # running[3] slides onto page 0

    server.on_page = finish_first
    result = listing(connect())

    assert {s.id for s in result.sessions} >= {str(r.id) for r in running[1:]}


@pytest.mark.parametrize("retry_after", [None, "0"])
def test_a_throttled_page_is_asked_again(
    server: EssServer, connect: Callable[..., EssProvider], retry_after: str | None
) -> None:
    ids = {str(server.add(state="RUNNING").id) for _ in range(4)}
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    server.faults.append(Fault(op="list_next", status=429, headers=headers, body={}))

    result = listing(connect())

    assert {s.id for s in result.sessions} == ids
    throttled = [path for _, op, path in server.log if op == "list_next"][:2]
    assert throttled[0] == throttled[1], "the same page, once more"


def test_a_duplicate_within_one_page_fails_the_listing(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="PENDING_VALIDATION")  # the first state asked
    model = request.model(NOW, None)
    server.faults.append(Fault(op="list", status=200, body={"items": [model, model], "count": 2}))
    with pytest.raises(MalformedResponse, match="twice"):
        listing(connect())


@pytest.mark.parametrize("answer", ["empty", "clamp", "error"])
def test_a_server_that_counts_pages_from_one_fails_the_listing(
    clock: FrozenClock, tmp_path: Path, answer: Any
) -> None:
    server = EssServer(clock=clock, page_size=3, first_page=1, below_first=answer)
    server.add(state="RUNNING")
    config = EssConfig.model_validate(ess_target(tmp_path, server))
    provider = EssProvider.connect(config, clock, transport=server.transport())

    with pytest.raises(MalformedResponse) as failure:
        listing(provider)

    assert {"empty": "does not count pages from 0", "clamp": "repeats", "error": "400"}[
        answer
    ] in str(failure.value)


def test_an_empty_page_zero_is_checked_until_the_server_has_shown_it_counts_from_zero(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    provider = connect()

    async def twice(p: EssProvider) -> tuple[Listing, Listing]:
        empty = await p.list_sessions()  # nothing anywhere: every empty page 0 is checked
        server.add(state="RUNNING")
        return empty, await p.list_sessions()

    empty, second = run(provider, twice)

    assert empty.sessions == ()
    asked = queries(server)
    first, later = asked[: 4 * len(QUERIED)], asked[4 * len(QUERIED) :]
    assert [index for _, index in first] == [0, 1] * (2 * len(QUERIED))
    checked = [state for state, index in later if index == 1 and state != "RUNNING"]
    assert checked == ["PENDING_VALIDATION", "WAIT", "BLOCKED", "READY", "HOLD"], (
        "checked until RUNNING's page 0 held a request, never again"
    )
    assert len(second.sessions) == 1


def test_a_server_that_ignores_the_filter_fails_the_listing(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    server.ignore_filter = True
    server.add(state="RUNNING")
    server.add(state="SUCCEEDED")
    with pytest.raises(MalformedResponse, match="ignores the filter"):
        listing(connect())


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(op="list", status=200, body={"items": {}, "count": 0}), "items is not a list"),
        (Fault(op="list", status=200, body={"items": [], "count": 3}), "count says 3"),
        (Fault(op="list", status=200, body=["not", "an", "object"]), "not a JSON object"),
        (Fault(op="list", status=404, body={"title": "Not Found"}), "expected 200, got 404"),
        (Fault(op="list", status=400, body={"title": "Bad", "detail": "q"}), "got 400: q"),
    ],
)
def test_a_listing_answer_that_is_not_what_the_api_documents_fails_it(
    server: EssServer, connect: Callable[..., EssProvider], fault: Fault, message: str
) -> None:
    server.faults.append(fault)
    with pytest.raises(MalformedResponse, match=message):
        listing(connect())


def test_an_html_page_instead_of_json_fails_the_listing(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    server.faults.append(Fault(op="list", html="<html><body>Sign in</body></html>"))
    with pytest.raises(MalformedResponse, match="not a JSON object"):
        listing(connect())


def test_get_is_none_for_an_unknown_request_and_refuses_an_id_that_is_no_number(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    assert run(connect(), lambda p: p.get_session(stub("999999"))) is None
    with pytest.raises(MalformedResponse, match="not an ESS request id"):
        run(connect(), lambda p: p.get_session(stub("1/../../x")))
    assert server.calls("get") == ["/ess/rest/scheduler/v1/requests/999999?" + _fields(server)]


def _fields(server: EssServer) -> str:
    return server.calls("get")[0].split("?", 1)[1]


# --- acting -----------------------------------------------------------------------------------


def act(provider: EssProvider, action: Action, request: Request, state: str = "RUNNING") -> Any:
    """``action`` on a record of ``request`` seen in ``state``."""
    return run(provider, lambda p: p.act(action, stub(str(request.id), state)))


def test_a_cancel_is_accepted_and_sends_what_ess_needs(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING")

    receipt = act(connect(), Action.CANCEL, request)

    assert receipt.status == 200
    assert receipt.accepted
    assert receipt.request_id is not None
    assert receipt.request_id.startswith("ecid-"), "the ECID is kept for the audit row"
    assert server.calls("act") == [f"/ess/rest/scheduler/v1/requests/{request.id}/cancel"]
    assert request.state == "CANCELLING"


def test_a_queued_request_is_cancelled_at_once(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="WAIT")
    assert act(connect(), Action.CANCEL, request, "WAIT").accepted
    assert request.state == "CANCELLED"


def test_a_parent_s_cancel_reaches_every_descendant(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    parent = server.add(state="PAUSED")
    step = server.add(state="RUNNING", parent=parent)
    queued = server.add(state="WAIT", parent=parent)
    grandchild = server.add(state="RUNNING", parent=step)

    act(connect(), Action.CANCEL, parent, "PAUSED")

    assert len(server.calls("act")) == 1
    assert (parent.state, step.state, queued.state, grandchild.state) == (
        "CANCELLING",
        "CANCELLING",
        "CANCELLED",
        "CANCELLING",
    )
    server.finish(parent.id)
    assert {r.state for r in (parent, step, queued, grandchild)} == {"CANCELLED"}


def test_force_cancel_posts_to_force_cancel(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="CANCELLING", since=timedelta(minutes=45), asynchronous=True)

    receipt = act(connect(), Action.FORCE_CANCEL, request, "CANCELLING")

    assert receipt.accepted
    assert server.calls("act") == [f"/ess/rest/scheduler/v1/requests/{request.id}/forceCancel"]
    assert request.state == "CANCELLED"
    assert request.force_cancels == 1


def test_force_cancel_before_the_thirty_minutes_is_refused_and_failed(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="CANCELLING", since=timedelta(minutes=10), asynchronous=True)
    with pytest.raises(ActionRejected, match="still CANCELLING"):
        act(connect(), Action.FORCE_CANCEL, request, "CANCELLING")
    assert request.state == "CANCELLING"


@pytest.mark.parametrize(
    ("status", "field"),
    [(404, "absent"), (409, "changed")],
)
def test_not_found_is_absent_and_a_conflict_is_changed(
    server: EssServer, connect: Callable[..., EssProvider], status: int, field: str
) -> None:
    request = server.add(state="RUNNING")
    body = {"type": "about:blank", "title": "t", "status": status, "detail": "concurrent op"}
    server.faults.append(Fault(op="act", status=status, body=body))

    receipt = act(connect(), Action.CANCEL, request)

    assert getattr(receipt, field)
    assert request.cancels == 0


def test_unsupported_state_for_an_ended_request_means_already_done_naming_the_state(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING")
    server.set_state(request.id, "SUCCEEDED")  # it finished between the re-check and the call

    receipt = act(connect(), Action.CANCEL, request)

    assert receipt.changed
    assert receipt.status == 400
    assert "already ended: it is SUCCEEDED" in receipt.detail
    assert "ESS-04001" in receipt.detail, "ESS's own words are kept"
    assert server.calls("get"), "the state was read again"


def test_unsupported_state_after_a_change_is_changed(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING")
    server.set_state(request.id, "ERROR_MANUAL_RECOVERY")

    receipt = act(connect(), Action.CANCEL, request)

    assert receipt.changed
    assert "ERROR_MANUAL_RECOVERY now, no longer RUNNING" in receipt.detail


def test_unsupported_state_for_an_unchanged_request_is_a_refusal(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING", cancellable=False)
    with pytest.raises(ActionRejected, match="still RUNNING") as refused:
        act(connect(), Action.CANCEL, request)
    assert refused.value.status == 400


def test_unsupported_state_for_a_request_gone_since_is_absent(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING")
    server.faults.append(Fault(op="act", status=400, body={"title": "Unsupported state"}))
    server.faults.append(Fault(op="get", status=404, body={"title": "Not Found"}))
    assert act(connect(), Action.CANCEL, request).absent


def test_a_forbidden_cancel_is_an_auth_failure_and_a_server_error_unknown(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add(state="RUNNING")
    server.faults.append(Fault(op="act", status=403, body={"title": "Not authorized"}))
    with pytest.raises(AuthFailed):
        act(connect(), Action.CANCEL, request)
    server.faults.append(Fault(op="act", status=500, body={"errorCode": "ESS-00500"}))
    with pytest.raises(OutcomeUnknown, match="ESS-00500"):
        act(connect(), Action.CANCEL, request)
    assert request.cancels == 0


def test_an_action_ess_does_not_have_is_refused_without_a_call(
    server: EssServer, connect: Callable[..., EssProvider]
) -> None:
    request = server.add()
    with pytest.raises(ActionRejected, match="ess cannot delete"):
        act(connect(), Action.DELETE, request)
    with pytest.raises(MalformedResponse):
        run(connect(), lambda p: p.act(Action.CANCEL, stub("12 OR 1=1")))
    assert server.calls("act") == []


# --- the fake is strict -----------------------------------------------------------------------


def test_the_fake_refuses_what_ess_refuses(server: EssServer) -> None:
    request = server.add()
    client = httpx.Client(transport=server.transport(), base_url="http://ess.test")
    auth = httpx.BasicAuth(server.username, server.password)
    search = "/ess/rest/scheduler/v1/requests/search"

    def status(method: str, url: str, **kw: Any) -> int:
        return client.request(method, url, auth=kw.pop("auth", auth), **kw).status_code

    assert status("GET", f"{search}/0", params={"q": 'state eq "RUNNING"'}) == 200
    assert status("GET", f"{search}/0", params={"q": 'state ne "RUNNING"'}) == 400
    assert status("GET", f"{search}/0", params={"q": 'submitter eq "alice"'}) == 400
    assert status("GET", f"{search}/0", params={"q": 'state eq "RUNNING" and x eq 1'}) == 400
    assert status("GET", f"{search}/-1", params={"q": 'state eq "RUNNING"'}) == 400
    assert status("GET", f"{search}/0", params={"q": 'state eq "RUNNING"'}, auth=None) == 401
    bad = httpx.BasicAuth(server.username, "wrong")
    assert status("GET", f"/ess/rest/scheduler/v1/requests/{request.id}", auth=bad) == 401
    cancel = f"/ess/rest/scheduler/v1/requests/{request.id}/cancel"
    assert status("POST", cancel) == 400, "X-Requested-By is required on POSTs"
    response = client.post(cancel, auth=auth, headers={"x-requested-by": "t"})
    assert response.status_code == 200
    again = client.post(cancel, auth=auth, headers={"x-requested-by": "t"})
    assert again.status_code == 400
    assert again.json()["title"] == "Unsupported state for operation"
    assert again.headers["date"]
    assert set(again.json()) == {"type", "title", "status", "detail", "errorCode"}
