"""The aidp provider against the fake AI Data Platform (in-process, signatures verified).

The contract suite covers what every provider must do; these tests cover what is AIDP's own:
every row of the state table, every record field, the workspace/id ids, paging by
``opc-next-page`` (and servers that get it wrong), malformed payloads, the DELETE answers
(an ambiguous 404 confirmed with a GET, 409 ``IncorrectState``, 412 on a stale etag), the
``opc-request-id`` of every call, and the rename that warns. What a real Jupyter Server does
behind the same front is in ``tests/integration/test_aidp_jupyter.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from janitor.clock import FrozenClock
from janitor.errors import ActionRejected, AuthFailed, MalformedResponse, ProviderError
from janitor.model import Action, Listing, Session, State
from janitor.providers.aidp import PREFIX, STATES, AidpProvider
from tests.conftest import NOW
from tests.fakes.aidp import (
    PLATFORM,
    WORKSPACES,
    AidpServer,
    Fault,
    aidp_config,
    shared_profile,
    signing_key,
)
from tests.fakes.oci_signing import Verifier

T = TypeVar("T")
MAIN = WORKSPACES[0]


@pytest.fixture
def platform(clock: FrozenClock) -> AidpServer:
    """The fake platform, trusting the shared test key."""
    verifier = Verifier()
    verifier.trust(signing_key())
    return AidpServer(verifier=verifier, clock=clock, max_page=4)


def run(
    platform: AidpServer,
    clock: FrozenClock,
    scenario: Callable[[AidpProvider], Awaitable[T]],
    **keys: Any,
) -> T:
    """Connect a provider to the fake in a fresh event loop and run ``scenario``."""

    async def main() -> T:
        base_url = keys.pop("base_url", "http://aidp.test/")
        config = aidp_config(base_url, shared_profile(), **keys)
        provider = AidpProvider.connect(config, clock, transport=platform.transport())
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def listing(platform: AidpServer, clock: FrozenClock, **keys: Any) -> Listing:
    """One listing."""
    return run(platform, clock, lambda p: p.list_sessions(), **keys)


def only(result: Listing) -> Session:
    """The one record of a listing."""
    (record,) = result.sessions
    return record


def served(platform: AidpServer, *items: Any) -> None:
    """The next listing of the first workspace answers exactly ``items``."""
    platform.inject(Fault(op="list", status=200, body={"items": list(items)}))


def model(**overrides: Any) -> dict[str, Any]:
    """A well-formed Session model, with ``overrides`` (None removes a key)."""
    kernel: Any = {
        "id": "5f2b6f4e-0d2a-4c1e-9a47-3b8d0c4f7e11",
        "name": "python3",
        "last_activity": "2026-11-22T09:00:00Z",
        "execution_state": "idle",
        "connections": 0,
    }
    changed = overrides.pop("kernel", {})
    kernel = {**kernel, **changed} if isinstance(changed, dict) else changed
    raw = {
        "id": "8a1c2e55-6b7d-4f80-9c1a-2e3f4a5b6c7d",
        "name": "Churn model",
        "path": "/Workspace/churn.ipynb",
        "type": "notebook",
        "cluster_id": "ocid1.cluster.oc1..c1",
        "lifecycleState": "ACTIVE",
        "kernel": kernel,
        **overrides,
    }
    return {k: v for k, v in raw.items() if v is not None}


# --- the state table ------------------------------------------------------------------------

ROWS = [
    ("CREATING", "starting", "CREATING", State.PENDING),
    ("CREATING", "idle", "CREATING", State.PENDING),
    ("FAILED", "dead", "FAILED", State.DEAD),
    ("FAILED", "idle", "FAILED", State.DEAD),
    ("ACTIVE", "idle", "idle", State.IDLE),
    ("ACTIVE", "busy", "busy", State.BUSY),
    ("ACTIVE", "starting", "starting", State.PENDING),
    ("ACTIVE", "restarting", "restarting", State.PENDING),
    ("ACTIVE", "autorestarting", "autorestarting", State.PENDING),
    ("ACTIVE", "terminating", "terminating", State.STOPPING),
    ("ACTIVE", "dead", "dead", State.DEAD),
    ("ACTIVE", "unknown", "unknown", State.UNKNOWN),
    ("ACTIVE", "hibernating", "hibernating", State.UNKNOWN),
    ("DELETING", "idle", "DELETING", State.UNKNOWN),
    ("idle", "idle", "idle", State.UNKNOWN),  # a lifecycleState is never a kernel state
]


@pytest.mark.parametrize(("lifecycle", "execution", "provider_state", "state"), ROWS)
def test_each_row_of_the_state_table(
    platform: AidpServer,
    clock: FrozenClock,
    lifecycle: str,
    execution: str,
    provider_state: str,
    state: State,
) -> None:
    platform.add("nb", lifecycle=lifecycle, execution_state=execution)

    record = only(listing(platform, clock))

    assert (record.provider_state, record.state) == (provider_state, state)
    assert record.anomalies == ()
    expected = {Action.DELETE, Action.NOTIFY} if provider_state in STATES else {Action.NOTIFY}
    assert record.actions == expected


def test_the_delete_applies_to_every_mapped_state_and_nothing_else() -> None:
    assert AidpProvider.specs[Action.DELETE].applies_to == set(STATES)
    assert "ACTIVE" not in STATES, "an ACTIVE session's provider_state is its kernel's state"
    assert AidpProvider.actions == {Action.DELETE, Action.NOTIFY}


def test_a_missing_lifecycle_state_is_unknown_and_an_anomaly(
    platform: AidpServer, clock: FrozenClock
) -> None:
    served(platform, model(lifecycleState=None))
    record = only(listing(platform, clock))
    assert record.state is State.UNKNOWN
    assert any("lifecycleState" in a for a in record.anomalies)


def test_an_active_session_without_a_kernel_state_is_unknown(
    platform: AidpServer, clock: FrozenClock
) -> None:
    served(platform, model(kernel={"execution_state": None}), model(id="other", kernel=None))
    for record in listing(platform, clock).sessions:
        assert record.state is State.UNKNOWN
        assert record.provider_state == "ACTIVE"
        assert record.anomalies


# --- records ----------------------------------------------------------------------------------


def test_every_field_of_a_record(platform: AidpServer, clock: FrozenClock) -> None:
    session = platform.add(
        "Churn model", idle_for=timedelta(hours=2), connections=2, kernel_name="pyspark"
    )

    record = only(listing(platform, clock))

    assert record.id == f"{MAIN}/{session.id}"
    assert record.target == "aidp"
    assert record.provider == "aidp"
    assert record.name == "Churn model"
    assert record.kind == "notebook"
    assert record.last_activity == NOW - timedelta(hours=2)
    assert record.connections == 2
    assert record.parent_id == session.kernel_id
    assert record.labels == {
        "workspace": MAIN,
        "kernel_name": "pyspark",
        "cluster_id": "ocid1.cluster.test",
    }
    assert record.created_at is None, "AIDP reports no creation time"
    assert record.owner is None, "nor an owner"
    assert record.etag is None, "nor an etag in the listing"
    assert record.warning is None
    assert record.raw["path"] == "/Workspace/Churn model.ipynb"


def test_ids_are_workspace_slash_id_across_workspaces(
    platform: AidpServer, clock: FrozenClock
) -> None:
    a = platform.add("a", workspace=WORKSPACES[0])
    b = platform.add("b", workspace=WORKSPACES[1])
    result = listing(platform, clock)
    assert {r.id for r in result.sessions} == {f"{WORKSPACES[0]}/{a.id}", f"{WORKSPACES[1]}/{b.id}"}
    assert {r.labels["workspace"] for r in result.sessions if r.labels} == set(WORKSPACES)


@pytest.mark.parametrize(
    ("shown", "name", "warning"),
    [
        ("[idle: cleanup at 14:30 UTC] Churn", "Churn", "[idle: cleanup at 14:30 UTC] "),
        (
            "[idle: cleanup at 2026-11-24 09:05 UTC] Churn",
            "Churn",
            "[idle: cleanup at 2026-11-24 09:05 UTC] ",
        ),
        ("[idle: may be cleaned up] Churn", "Churn", "[idle: may be cleaned up] "),
        ("[idle: do not touch] Churn", "[idle: do not touch] Churn", None),  # the user's own
        ("[idle: cleanup at 14:30 UTC]Churn", "[idle: cleanup at 14:30 UTC]Churn", None),
        ("Churn [idle: cleanup at 14:30 UTC] ", "Churn [idle: cleanup at 14:30 UTC] ", None),
    ],
)
def test_janitors_prefix_is_stripped_from_the_name_and_kept_as_the_warning(
    platform: AidpServer, clock: FrozenClock, shown: str, name: str, warning: str | None
) -> None:
    platform.add(shown)
    record = only(listing(platform, clock))
    assert (record.name, record.warning) == (name, warning)
    assert record.raw["name"] == shown


@pytest.mark.parametrize(
    ("overrides", "anomaly"),
    [
        ({"kernel": {"last_activity": "2026-11-22T09:00:00"}}, "no time zone"),
        ({"kernel": {"last_activity": "2026-11-23T09:00:00Z"}}, "future"),
        ({"kernel": {"last_activity": "yesterday"}}, "not a timestamp"),
        ({"kernel": {"connections": "3"}}, "connections is not a count"),
        ({"kernel": {"connections": -1}}, "connections is not a count"),
        ({"kernel": {"connections": True}}, "connections is not a count"),
        ({"kernel": "python3"}, "kernel is not an object"),
        ({"name": 42}, "name is not a string"),
    ],
)
def test_malformed_fields_are_anomalies(
    platform: AidpServer, clock: FrozenClock, overrides: dict[str, Any], anomaly: str
) -> None:
    served(platform, model(**overrides))
    record = only(listing(platform, clock))
    assert any(anomaly in a for a in record.anomalies), record.anomalies


@pytest.mark.parametrize("raw", [{"name": "no id"}, {"id": 7}, {"id": ""}, "a string", None])
def test_a_record_without_a_string_id_is_invalid(
    platform: AidpServer, clock: FrozenClock, raw: Any
) -> None:
    served(platform, raw, model())
    result = listing(platform, clock)
    assert len(result.sessions) == 1
    (invalid,) = result.invalid
    assert "without a string id" in invalid.reason


@pytest.mark.parametrize(
    "body", [[model()], {"sessions": [model()]}, {"items": {"id": "x"}}, "<html>"]
)
def test_a_listing_that_is_not_items_fails(
    platform: AidpServer, clock: FrozenClock, body: Any
) -> None:
    platform.inject(Fault(op="list", status=200, body=body))
    with pytest.raises(MalformedResponse):
        listing(platform, clock)


def test_html_instead_of_json_fails_the_listing(platform: AidpServer, clock: FrozenClock) -> None:
    platform.inject(Fault(op="list", status=200, headers={"content-type": "text/html"}))
    with pytest.raises(MalformedResponse, match="not JSON"):
        listing(platform, clock)


# --- paging ---------------------------------------------------------------------------------


def test_paging_follows_opc_next_page_and_sends_limit(
    platform: AidpServer, clock: FrozenClock
) -> None:
    ids = {platform.add(f"nb-{i}").ref for i in range(10)}  # pages of 4: 4, 4, 2

    result = listing(platform, clock)

    assert {r.id for r in result.sessions} == ids
    paths = [p for m, op, p, _ in platform.log if op in ("list", "list_next")]
    assert len(paths) == 3 + 1, "three pages of the first workspace, one of the second"
    assert len(platform.requests("list_next")) == 2


def test_a_server_that_ignores_paging_is_one_page(platform: AidpServer, clock: FrozenClock) -> None:
    platform.ignore_paging = True
    ids = {platform.add(f"nb-{i}").ref for i in range(10)}
    assert {r.id for r in listing(platform, clock).sessions} == ids
    assert platform.requests("list_next") == []


def test_a_server_that_ignores_the_page_token_fails_the_listing(
    platform: AidpServer, clock: FrozenClock
) -> None:
    platform.ignore_page_token = True  # honours limit, returns page 1 with a next page forever
    for i in range(10):
        platform.add(f"nb-{i}")
    with pytest.raises(MalformedResponse, match="ignores the cursor"):
        listing(platform, clock)
    assert len(platform.requests("list_next")) == 1, "it stops at the first repeat"


def test_a_workspace_that_does_not_exist_fails_the_listing(
    platform: AidpServer, clock: FrozenClock
) -> None:
    platform.add("nb")
    with pytest.raises(ProviderError, match="NotAuthorizedOrNotFound") as failed:
        listing(platform, clock, workspaces=[MAIN, "ws-gone"])
    assert failed.value.status == 404
    assert "may not read it" in str(failed.value)


def test_a_wrong_platform_id_fails_the_listing(platform: AidpServer, clock: FrozenClock) -> None:
    with pytest.raises(ProviderError) as failed:
        listing(platform, clock, ai_data_platform_id="ocid1.aidataplatform.oc1..other")
    assert failed.value.status == 404


def test_the_base_url_may_carry_a_path_prefix(platform: AidpServer, clock: FrozenClock) -> None:
    platform.add("nb")

    async def scenario(provider: AidpProvider) -> str:
        response = await provider.http.read("GET", provider._sessions(MAIN))
        return str(response.request.url)

    url = run(platform, clock, scenario, base_url="https://aidp.test/api")
    assert url == (
        f"https://aidp.test/api/20260430/aiDataPlatforms/{PLATFORM}/workspaces/{MAIN}"
        "/notebook/api/sessions"
    )


# --- request ids and signatures ---------------------------------------------------------------


def test_every_request_is_signed_and_carries_its_own_request_id(
    platform: AidpServer, clock: FrozenClock
) -> None:
    for i in range(6):
        platform.add(f"nb-{i}")

    async def scenario(provider: AidpProvider) -> None:
        for record in (await provider.list_sessions()).sessions[:2]:
            await provider.get_session(record)

    run(platform, clock, scenario)

    sent = [request_id for _, _, _, request_id in platform.log]
    assert len(sent) == 5  # two pages, the empty workspace, two GETs
    assert all(r and r.isalnum() for r in sent)
    assert len(set(sent)) == len(sent), "unique on every call"
    assert platform.verifier.verified == [signing_key().key_id] * 5


def test_a_retry_is_signed_again_with_a_new_request_id(
    platform: AidpServer, clock: FrozenClock
) -> None:
    platform.add("nb")
    platform.inject(Fault(op="list", status=429, body={"code": "TooManyRequests"}))
    only(listing(platform, clock))
    first, second = [r for _, op, _, r in platform.log if op == "list"][:2]
    assert first != second
    assert len(platform.verifier.verified) == 2, "the throttled request never reached the API"


# --- the delete -------------------------------------------------------------------------------


async def _recheck(provider: AidpProvider, ref: str) -> Session:
    listed = next(s for s in (await provider.list_sessions()).sessions if s.id == ref)
    fresh = await provider.get_session(listed)
    assert fresh is not None
    return fresh


def test_a_delete_sends_the_rechecks_etag_and_returns_the_servers_request_id(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")
    seen: dict[str, str] = {}

    async def scenario(provider: AidpProvider) -> Any:
        fresh = await _recheck(provider, session.ref)
        seen["etag"] = fresh.raw["etag"]
        return await provider.act(Action.DELETE, fresh)

    receipt = run(platform, clock, scenario)

    assert receipt.status == 204
    assert not receipt.absent
    assert not receipt.changed
    assert platform.deletes[session.ref] == 1
    sent_id = next(r for m, _, _, r in platform.log if m == "DELETE")
    assert receipt.request_id is not None
    assert receipt.request_id.startswith(f"{sent_id}/srv-"), "the id the server returned"
    assert seen["etag"]


def test_a_listed_record_without_an_etag_is_never_deleted(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> None:
        listed = only(await provider.list_sessions())
        with pytest.raises(ActionRejected, match="only with if-match"):
            await provider.act(Action.DELETE, listed)

    run(platform, clock, scenario)
    assert platform.requests(method="DELETE") == []
    assert session.ref in platform.sessions


def test_a_404_while_the_session_is_still_there_is_refused_not_absent(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")
    # NotAuthorizedOrNotFound for a session janitor can read but not delete
    platform.inject(
        Fault(op="act", status=404, body={"code": "NotAuthorizedOrNotFound", "message": "no"})
    )

    async def scenario(provider: AidpProvider) -> None:
        fresh = await _recheck(provider, session.ref)
        with pytest.raises(ActionRejected, match="may not be allowed") as refused:
            await provider.act(Action.DELETE, fresh)
        assert refused.value.status == 404

    run(platform, clock, scenario)
    gets = platform.requests("get")
    assert len(gets) == 2, "the re-check, then the GET that confirms the 404"
    assert session.ref in platform.sessions


def test_a_404_for_a_session_that_is_gone_is_already_absent(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> Any:
        fresh = await _recheck(provider, session.ref)
        del platform.sessions[session.ref]  # the user deleted it meanwhile
        return await provider.act(Action.DELETE, fresh)

    receipt = run(platform, clock, scenario)
    assert receipt.absent
    assert receipt.status == 404
    assert "NotAuthorizedOrNotFound" in receipt.detail


def test_a_session_still_creating_answers_409_not_now(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb", lifecycle="CREATING", execution_state="starting")

    async def scenario(provider: AidpProvider) -> Any:
        return await provider.act(Action.DELETE, await _recheck(provider, session.ref))

    receipt = run(platform, clock, scenario)
    assert receipt.changed
    assert receipt.status == 409
    assert "IncorrectState" in receipt.detail
    assert len(platform.requests("act")) == 1, "not retried"


def test_a_rename_after_the_recheck_gives_412_and_no_retry(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> Any:
        fresh = await _recheck(provider, session.ref)
        platform.user_renames(session.ref, "mine now")
        return await provider.act(Action.DELETE, fresh)

    receipt = run(platform, clock, scenario)
    assert receipt.changed
    assert receipt.status == 412
    assert "PreconditionFailed" in receipt.detail
    assert len(platform.requests("act")) == 1
    assert platform.sessions[session.ref].name == "mine now"


@pytest.mark.parametrize("status", [400, 405])
def test_other_refusals_are_rejected_with_the_servers_words(
    platform: AidpServer, clock: FrozenClock, status: int
) -> None:
    session = platform.add("nb")
    platform.inject(
        Fault(op="act", status=status, body={"code": "InvalidParameter", "message": "bad if-match"})
    )

    async def scenario(provider: AidpProvider) -> None:
        fresh = await _recheck(provider, session.ref)
        with pytest.raises(ActionRejected, match="InvalidParameter: bad if-match"):
            await provider.act(Action.DELETE, fresh)

    run(platform, clock, scenario)


def test_only_delete_is_an_action(platform: AidpServer, clock: FrozenClock) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> None:
        fresh = await _recheck(provider, session.ref)
        with pytest.raises(ActionRejected, match="cannot stop"):
            await provider.act(Action.STOP, fresh)

    run(platform, clock, scenario)


def test_an_id_that_is_not_workspace_slash_id_is_refused(
    platform: AidpServer, clock: FrozenClock
) -> None:
    async def scenario(provider: AidpProvider) -> None:
        stub = Session(
            target="aidp",
            provider="aidp",
            id="no-slash",
            name="",
            kind="",
            state=State.IDLE,
            provider_state="idle",
        )
        with pytest.raises(MalformedResponse, match="workspace/id"):
            await provider.get_session(stub)

    run(platform, clock, scenario)


# --- the native warning -------------------------------------------------------------------------


def test_warn_renames_with_the_time_of_the_action(platform: AidpServer, clock: FrozenClock) -> None:
    session = platform.add("Churn model")

    async def scenario(provider: AidpProvider) -> Any:
        listed = only(await provider.list_sessions())
        return await provider.warn(listed, "m", act_after=NOW + timedelta(minutes=30))

    receipt = run(platform, clock, scenario)
    assert receipt.original == "Churn model"
    assert receipt.request_id
    assert platform.sessions[session.ref].name == "[idle: cleanup at 12:30 UTC] Churn model"


@pytest.mark.parametrize(
    ("act_after", "prefix"),
    [
        (NOW + timedelta(days=2, minutes=5), "[idle: cleanup at 2026-11-24 12:05 UTC] "),
        (None, "[idle: may be cleaned up] "),
    ],
)
def test_warn_names_the_day_when_it_is_not_today_and_notify_names_no_time(
    platform: AidpServer, clock: FrozenClock, act_after: Any, prefix: str
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> Any:
        return await provider.warn(only(await provider.list_sessions()), "m", act_after=act_after)

    run(platform, clock, scenario)
    shown = platform.sessions[session.ref].name
    assert shown == prefix + "nb"
    assert PREFIX.match(shown)


def test_a_session_that_already_shows_the_warning_is_not_renamed_again(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> list[Any]:
        first = await provider.warn(only(await provider.list_sessions()), "m", act_after=NOW)
        clock.advance(timedelta(minutes=5))  # a later sweep, a later time in the message
        warned = only(await provider.list_sessions())
        return [first, await provider.warn(warned, "m", act_after=NOW + timedelta(minutes=5))]

    first, again = run(platform, clock, scenario)
    assert platform.renames() == 1, "written once"
    assert again.original == first.original == "nb"
    assert platform.sessions[session.ref].name == "[idle: cleanup at 12:00 UTC] nb"


def test_warn_does_not_rename_a_session_the_user_came_back_to(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> Any:
        listed = only(await provider.list_sessions())
        clock.advance(timedelta(minutes=1))
        platform.touch(session.ref)
        return await provider.warn(listed, "m", act_after=NOW)

    receipt = run(platform, clock, scenario)
    assert receipt.changed
    assert "last_activity" in receipt.detail
    assert platform.renames() == 0


def test_a_rename_that_loses_the_race_is_changed(platform: AidpServer, clock: FrozenClock) -> None:
    session = platform.add("nb")
    platform.inject(Fault(op="patch", before=lambda: platform.user_renames(session.ref, "mine")))

    async def scenario(provider: AidpProvider) -> Any:
        return await provider.warn(only(await provider.list_sessions()), "m", act_after=NOW)

    receipt = run(platform, clock, scenario)
    assert receipt.changed
    assert receipt.status == 412
    assert platform.sessions[session.ref].name == "mine", "the user's name is never lost"


def test_withdraw_leaves_a_name_the_user_changed_alone(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> Any:
        await provider.warn(only(await provider.list_sessions()), "m", act_after=NOW)
        # the user edits the name but keeps janitor's prefix in front of it
        platform.user_renames(session.ref, "[idle: cleanup at 12:00 UTC] nb v2")
        return await provider.withdraw(only(await provider.list_sessions()), "nb")

    receipt = run(platform, clock, scenario)
    assert receipt.changed
    assert platform.sessions[session.ref].name == "[idle: cleanup at 12:00 UTC] nb v2"
    assert platform.renames() == 1


def test_withdraw_restores_the_exact_original(platform: AidpServer, clock: FrozenClock) -> None:
    original = "  Ünïcode [draft] — v2  "
    session = platform.add(original)

    async def scenario(provider: AidpProvider) -> Any:
        warned = await provider.warn(only(await provider.list_sessions()), "m", act_after=NOW)
        assert warned.original == original
        return await provider.withdraw(only(await provider.list_sessions()), original)

    receipt = run(platform, clock, scenario)
    assert receipt.status == 200
    assert not receipt.changed
    assert platform.sessions[session.ref].name == original


def test_warn_and_withdraw_on_a_vanished_session_are_absent(
    platform: AidpServer, clock: FrozenClock
) -> None:
    session = platform.add("nb")

    async def scenario(provider: AidpProvider) -> list[Any]:
        listed = only(await provider.list_sessions())
        del platform.sessions[session.ref]
        return [
            await provider.warn(listed, "m", act_after=NOW),
            await provider.withdraw(listed, "nb"),
        ]

    assert all(r.absent for r in run(platform, clock, scenario))
    assert platform.renames() == 0


# --- auth failures ------------------------------------------------------------------------------


def test_an_untrusted_key_is_a_failed_listing(platform: AidpServer, clock: FrozenClock) -> None:
    platform.verifier.api_keys.clear()
    platform.add("nb")
    with pytest.raises(AuthFailed) as failed:
        listing(platform, clock)
    assert failed.value.status == 401
    assert "NotAuthenticated" in str(failed.value)
