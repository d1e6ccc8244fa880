"""The jupyter provider against the simulated Jupyter Server (in-process, with fault injection).

What a real jupyter_server does is checked in ``tests/integration/test_jupyter_real.py``; here
the simulator and injected answers cover what a real server rarely produces: every state value,
malformed records, duplicate ids, bodies that are not JSON, and the statuses of a delete.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from janitor.clock import FrozenClock
from janitor.errors import ActionRejected, AuthFailed, MalformedResponse
from janitor.model import Action, Listing, Session, State
from janitor.providers.jupyter import JupyterConfig, JupyterProvider
from janitor.sim.jupyter import JupyterSim, NotebookSession, iso
from tests.conftest import NOW
from tests.fakes.jupyter import Fault, SimTransport, on

T = TypeVar("T")


def run(
    transport: SimTransport,
    clock: FrozenClock,
    scenario: Callable[[JupyterProvider], Awaitable[T]],
    **config: Any,
) -> T:
    """Connect a provider to the simulator inside a fresh event loop and run ``scenario``."""
    settings = {
        "name": "nb",
        "provider": "jupyter",
        "base_url": "http://jupyter.test/",
        "token": "test-token",
        **config,
    }

    async def main() -> T:
        provider = JupyterProvider.connect(
            JupyterConfig.model_validate(settings), clock, transport=transport
        )
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def listing(transport: SimTransport, clock: FrozenClock, **config: Any) -> Listing:
    """One listing of the simulator."""
    return run(transport, clock, lambda p: p.list_sessions(), **config)


def kernels_answer(*models: object) -> Fault:
    """GET api/kernels answers exactly ``models`` (once)."""
    return Fault(when=on("GET", "api/kernels"), status=200, body=list(models))


def sessions_answer(*models: object) -> Fault:
    """GET api/sessions answers exactly ``models`` (once)."""
    return Fault(when=on("GET", "api/sessions"), status=200, body=list(models))


def kernel_model(kernel_id: str = "k-1", **fields: Any) -> dict[str, Any]:
    """A well-formed kernel model, with ``fields`` replacing (or, as None, removing) keys."""
    model = {
        "id": kernel_id,
        "name": "python3",
        "last_activity": iso(NOW - timedelta(hours=1)),
        "execution_state": "idle",
        "connections": 0,
    }
    model.update(fields)
    return {k: v for k, v in model.items() if v is not None}


def by_id(result: Listing) -> dict[str, Session]:
    """The listed sessions by id."""
    return {s.id: s for s in result.sessions}


# --- the normalized record -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("execution_state", "state"),
    [
        ("idle", State.IDLE),
        ("busy", State.BUSY),
        ("starting", State.PENDING),
        ("restarting", State.PENDING),
        ("autorestarting", State.PENDING),
        ("terminating", State.STOPPING),
        ("dead", State.DEAD),
        ("connected", State.UNKNOWN),
        ("IDLE", State.UNKNOWN),
        ("", State.UNKNOWN),
    ],
)
def test_state_mapping(
    sim: JupyterSim,
    transport: SimTransport,
    clock: FrozenClock,
    execution_state: str,
    state: State,
) -> None:
    session = sim.add_session("a.ipynb", state=execution_state)
    bare = sim.add_kernel(state=execution_state)

    records = by_id(listing(transport, clock))

    for record_id in (session.id, bare.id):
        assert records[record_id].state is state
        assert records[record_id].provider_state == execution_state
        assert records[record_id].anomalies == ()


def test_a_session_record(sim: JupyterSim, transport: SimTransport, clock: FrozenClock) -> None:
    session = sim.add_session("work/analysis.ipynb", idle_for=timedelta(hours=3), connections=2)
    console = sim.add_session("work/console-1", kind="console")
    kernel = sim.kernel_of(session.id)

    records = by_id(listing(transport, clock))

    assert set(records) == {session.id, console.id}, "a session's kernel is not listed again"
    record = records[session.id]
    assert record.target == "nb"
    assert record.provider == "jupyter"
    assert record.name == "analysis.ipynb"
    assert record.kind == "notebook"
    assert record.state is State.IDLE
    assert record.last_activity == NOW - timedelta(hours=3)
    assert record.last_activity.tzinfo is not None
    assert record.connections == 2
    assert record.parent_id == kernel.id
    assert record.labels == {"kernel_name": "python3"}
    assert record.etag is None
    assert record.owner is None
    assert records[console.id].kind == "console"


def test_kernels_without_a_session_are_listed_as_kind_kernel(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    session = sim.add_session("a.ipynb")
    bare = sim.add_kernel(state="dead", idle_for=timedelta(days=1))

    records = by_id(listing(transport, clock))

    assert set(records) == {session.id, bare.id}
    record = records[bare.id]
    assert record.kind == "kernel"
    assert record.name == f"python3-{bare.id[:8]}"
    assert record.parent_id is None
    assert record.state is State.DEAD
    assert record.last_activity == NOW - timedelta(days=1)


def test_a_failed_kernel_keeps_its_reason_as_a_label(
    transport: SimTransport, clock: FrozenClock
) -> None:
    reason = "[Errno 2] No such file or directory: '/opt/python'"
    transport.add(kernels_answer(kernel_model(execution_state="dead", reason=reason)))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.state is State.DEAD
    assert record.labels == {"kernel_name": "python3", "kernel_reason": reason}


def test_kernels_are_listed_before_sessions(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    """A session opened between the two requests is listed as a session, never as a bare
    kernel (which a policy on kernels could delete under the new session)."""
    opened: list[NotebookSession] = []
    transport.add(
        Fault(when=on("GET", "api/sessions"), before=lambda: opened.append(sim.add_session("n")))
    )

    result = listing(transport, clock)

    assert [(m, p) for m, p, _ in sim.requests] == [
        ("GET", "/api/kernels"),
        ("GET", "/api/sessions"),
    ]
    assert [(r.id, r.kind) for r in result.sessions] == [(opened[0].id, "notebook")]


def test_the_server_clock_skew_is_reported(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    sim.date_offset = timedelta(minutes=10)

    skew = listing(transport, clock).server_skew

    assert skew is not None
    assert timedelta(minutes=9) < skew < timedelta(minutes=11)


def test_base_url_with_a_path_prefix(clock: FrozenClock) -> None:
    sim = JupyterSim(token="test-token", clock=clock, base_path="/20260430/aiDataPlatforms/x/")
    session = sim.add_session("a.ipynb")

    result = listing(
        SimTransport(sim), clock, base_url="http://jupyter.test/20260430/aiDataPlatforms/x"
    )

    assert [r.id for r in result.sessions] == [session.id]
    assert {path for _, path, _ in sim.requests} == {
        "/20260430/aiDataPlatforms/x/api/kernels",
        "/20260430/aiDataPlatforms/x/api/sessions",
    }


# --- malformed records: skipped or distrusted, never guessed -------------------------------


def test_records_without_an_id_are_invalid_and_the_rest_is_listed(
    transport: SimTransport, clock: FrozenClock
) -> None:
    transport.add(kernels_answer(kernel_model("k-ok"), kernel_model(None), "not-an-object"))
    transport.add(
        sessions_answer(
            {"path": "no-id.ipynb", "kernel": kernel_model("k-1")},
            {"id": "", "kernel": kernel_model("k-2")},
            {"id": "s-no-kernel", "path": "x.ipynb", "kernel": None},
            {"id": 17, "kernel": kernel_model("k-3")},
        )
    )

    result = listing(transport, clock)

    assert [r.id for r in result.sessions] == ["k-ok"]
    assert Counter((i.id, i.reason) for i in result.invalid) == {
        (None, "kernel record without a string id"): 2,
        (None, "session record without a string id"): 1,
        ("", "session record without a string id"): 1,
        ("17", "session record without a string id"): 1,
        ("s-no-kernel", "session record without a kernel object"): 1,
    }
    assert all(i.target == "nb" for i in result.invalid)


def test_a_malformed_session_still_owns_its_kernel(
    transport: SimTransport, clock: FrozenClock
) -> None:
    """Its kernel is not judged as a bare kernel (without the session's name and exemptions)."""
    transport.add(kernels_answer(kernel_model("k-1"), kernel_model("k-2")))
    transport.add(sessions_answer({"path": "keep-me.ipynb", "kernel": kernel_model("k-1")}))

    result = listing(transport, clock)

    assert [(r.id, r.kind, r.anomalies) for r in result.sessions] == [("k-2", "kernel", ())]
    assert [i.reason for i in result.invalid] == ["session record without a string id"]


def test_bare_kernels_are_distrusted_when_a_malformed_session_hides_its_kernel(
    transport: SimTransport, clock: FrozenClock
) -> None:
    transport.add(kernels_answer(kernel_model("k-1")))
    transport.add(sessions_answer({"id": "s-1", "path": "x.ipynb", "kernel": None}))

    (record,) = listing(transport, clock).sessions

    assert record.id == "k-1"
    assert record.anomalies == ("a malformed session record may own this kernel",)


@pytest.mark.parametrize(
    ("last_activity", "problem"),
    [
        ("2026-11-22T11:00:00", "has no time zone"),
        ("2026-11-22T11:00:00.123456", "has no time zone"),
        (iso(NOW + timedelta(hours=1)), "lies in the future"),
        ("yesterday", "is not a timestamp"),
        (1_700_000_000, "is not a string"),
    ],
)
def test_an_untrustworthy_last_activity_is_an_anomaly(
    transport: SimTransport, clock: FrozenClock, last_activity: object, problem: str
) -> None:
    transport.add(kernels_answer(kernel_model(last_activity=last_activity)))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.last_activity is None
    assert len(record.anomalies) == 1
    assert record.anomalies[0].startswith("last_activity ")
    assert problem in record.anomalies[0]


def test_last_activity_slightly_ahead_within_the_skew_tolerance_is_kept(
    transport: SimTransport, clock: FrozenClock
) -> None:
    ahead = NOW + timedelta(seconds=30)
    transport.add(kernels_answer(kernel_model(last_activity=iso(ahead))))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.last_activity == ahead
    assert record.anomalies == ()


def test_an_offset_timestamp_is_converted_to_utc(
    transport: SimTransport, clock: FrozenClock
) -> None:
    transport.add(kernels_answer(kernel_model(last_activity="2026-11-22T13:00:00+02:00")))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.last_activity == NOW - timedelta(hours=1)
    assert record.last_activity.utcoffset() == timedelta(0)


@pytest.mark.parametrize("connections", ["2", -1, True, 1.5, [1]])
def test_connections_that_are_not_a_count_are_an_anomaly(
    transport: SimTransport, clock: FrozenClock, connections: object
) -> None:
    transport.add(kernels_answer(kernel_model(connections=connections)))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.connections is None
    assert record.anomalies == (f"connections is not a count: {connections!r}",)


def test_missing_connections_are_unknown_not_zero(
    transport: SimTransport, clock: FrozenClock
) -> None:
    transport.add(kernels_answer({k: v for k, v in kernel_model().items() if k != "connections"}))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.connections is None


@pytest.mark.parametrize("execution_state", [None, 3, ["idle"]])
def test_an_execution_state_that_is_not_a_string_is_an_anomaly(
    transport: SimTransport, clock: FrozenClock, execution_state: object
) -> None:
    model = kernel_model()
    model["execution_state"] = execution_state
    transport.add(kernels_answer(model))
    transport.add(sessions_answer())

    (record,) = listing(transport, clock).sessions

    assert record.state is State.UNKNOWN
    assert record.anomalies == (f"execution_state is not a string: {execution_state!r}",)


# --- malformed answers: the whole listing fails ----------------------------------------------


def test_duplicate_session_ids_fail_the_listing(
    transport: SimTransport, clock: FrozenClock
) -> None:
    twice = {"id": "s-1", "path": "a.ipynb", "type": "notebook", "kernel": kernel_model("k-1")}
    transport.add(kernels_answer(kernel_model("k-1")))
    transport.add(sessions_answer(twice, {**twice, "kernel": kernel_model("k-2")}))

    with pytest.raises(MalformedResponse, match="listing has the id s-1 twice"):
        listing(transport, clock)


def test_duplicate_kernel_ids_fail_the_listing(transport: SimTransport, clock: FrozenClock) -> None:
    transport.add(kernels_answer(kernel_model("k-1"), kernel_model("k-1")))
    transport.add(sessions_answer())

    with pytest.raises(MalformedResponse, match="listing has the id k-1 twice"):
        listing(transport, clock)


@pytest.mark.parametrize("path", ["api/kernels", "api/sessions"])
@pytest.mark.parametrize(
    ("status", "raw"),
    [
        (200, b"<html>Jupyter is restarting</html>"),
        (200, b'{"items": []}'),
        (200, b""),
        (404, b"<html>404: Not Found</html>"),
        (404, b'{"message": "Not Found"}'),
        (400, b'{"message": "Bad Request"}'),
    ],
)
def test_a_body_that_is_not_a_json_array_fails_the_listing(
    transport: SimTransport, clock: FrozenClock, path: str, status: int, raw: bytes
) -> None:
    transport.add(Fault(when=on("GET", path), status=status, raw=raw, times=10))

    with pytest.raises(MalformedResponse) as failed:
        listing(transport, clock)

    assert failed.value.status == status
    assert f"GET {path}" in str(failed.value) or "/" + path in str(failed.value)


def test_a_wrong_token_is_auth_failed_never_an_empty_listing(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    sim.add_session("a.ipynb")

    with pytest.raises(AuthFailed) as failed:
        listing(transport, clock, token="not-the-token")

    assert failed.value.status == 403
    assert "not-the-token" not in str(failed.value)


# --- re-reading one session -------------------------------------------------------------------


def test_get_session_rereads_a_session_and_a_bare_kernel(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    session = sim.add_session("a.ipynb", idle_for=timedelta(hours=2))
    bare = sim.add_kernel(idle_for=timedelta(hours=5))

    async def scenario(provider: JupyterProvider) -> tuple[Listing, list[Session | None]]:
        first = await provider.list_sessions()
        sim.touch(sim.kernel_of(session.id).id, state="busy")
        return first, [await provider.get_session(r) for r in first.sessions]

    first, fresh = run(transport, clock, scenario)

    before = by_id(first)
    after = {s.id: s for s in fresh if s is not None}
    assert after[bare.id] == before[bare.id]
    assert after[session.id].state is State.BUSY
    assert after[session.id].last_activity == NOW
    assert ("GET", f"/api/sessions/{session.id}") in [(m, p) for m, p, _ in sim.requests]
    assert ("GET", f"/api/kernels/{bare.id}") in [(m, p) for m, p, _ in sim.requests]


def test_get_session_returns_none_when_it_is_gone(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    session = sim.add_session("a.ipynb")
    bare = sim.add_kernel()

    async def scenario(provider: JupyterProvider) -> list[Session | None]:
        records = (await provider.list_sessions()).sessions
        sim.sessions.clear()
        sim.kernels.clear()
        return [await provider.get_session(r) for r in records]

    assert run(transport, clock, scenario) == [None, None]
    assert {p for _, p, _ in sim.requests} >= {
        f"/api/sessions/{session.id}",
        f"/api/kernels/{bare.id}",
    }


def test_get_session_of_a_bare_kernel_adopted_by_a_session_returns_none(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    bare = sim.add_kernel(idle_for=timedelta(hours=5))

    async def scenario(provider: JupyterProvider) -> Session | None:
        (record,) = (await provider.list_sessions()).sessions
        assert record.kind == "kernel"
        # a notebook is opened on the running kernel: it is no bare kernel any more
        sim.sessions["s-new"] = NotebookSession(
            id="s-new", path="n.ipynb", name="n.ipynb", type="notebook", kernel_id=bare.id
        )
        return await provider.get_session(record)

    assert run(transport, clock, scenario) is None
    assert sim.deletes == {}


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (
            Fault(when=on("GET", "api/sessions/"), status=400, body={"message": "bad"}),
            MalformedResponse,
        ),
        (Fault(when=on("GET", "api/sessions/"), status=200, raw=b"<html/>"), MalformedResponse),
        (
            Fault(when=on("GET", "api/sessions/"), status=200, body={"id": "s", "kernel": None}),
            MalformedResponse,
        ),
        (
            Fault(when=on("GET", "api/sessions/"), status=403, body={"message": "Forbidden"}),
            AuthFailed,
        ),
    ],
)
def test_get_session_fails_on_an_unexpected_answer(
    sim: JupyterSim,
    transport: SimTransport,
    clock: FrozenClock,
    fault: Fault,
    error: type[Exception],
) -> None:
    sim.add_session("a.ipynb")

    async def scenario(provider: JupyterProvider) -> Session | None:
        (record,) = (await provider.list_sessions()).sessions
        transport.add(fault)
        return await provider.get_session(record)

    with pytest.raises(error):
        run(transport, clock, scenario)


# --- acting -----------------------------------------------------------------------------------


def test_delete_a_session_and_a_bare_kernel(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    session = sim.add_session("a.ipynb")
    kernel = sim.kernel_of(session.id)
    bare = sim.add_kernel()

    async def scenario(provider: JupyterProvider) -> list[Any]:
        records = (await provider.list_sessions()).sessions
        return [await provider.act(Action.DELETE, r) for r in records]

    receipts = run(transport, clock, scenario)

    assert [r.status for r in receipts] == [204, 204]
    assert not any(r.absent for r in receipts)
    assert dict(sim.deletes) == {session.id: 1, bare.id: 1}
    assert sim.sessions == {}
    assert kernel.id not in sim.kernels, "deleting the session shut its kernel down"
    deletes = [p for m, p, _ in sim.requests if m == "DELETE"]
    assert sorted(deletes) == sorted([f"/api/sessions/{session.id}", f"/api/kernels/{bare.id}"])


@pytest.mark.parametrize("status", [404, 410])
def test_delete_answered_404_or_410_means_already_absent(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock, status: int
) -> None:
    sim.add_session("a.ipynb")
    message = {404: "Session not found", 410: "Kernel deleted before session"}[status]
    transport.add(Fault(when=on("DELETE"), status=status, body={"message": message}))

    async def scenario(provider: JupyterProvider) -> Any:
        (record,) = (await provider.list_sessions()).sessions
        return await provider.act(Action.DELETE, record)

    receipt = run(transport, clock, scenario)

    assert receipt.absent
    assert receipt.status == status
    assert receipt.detail == message


def test_delete_of_a_session_already_gone_on_the_simulator_is_absent(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    sim.add_session("a.ipynb")

    async def scenario(provider: JupyterProvider) -> Any:
        (record,) = (await provider.list_sessions()).sessions
        sim.sessions.clear()
        return await provider.act(Action.DELETE, record)

    assert run(transport, clock, scenario).absent


def test_a_refused_delete_is_action_rejected(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    sim.add_session("a.ipynb")
    transport.add(Fault(when=on("DELETE"), status=400, body={"message": "nope"}))

    async def scenario(provider: JupyterProvider) -> Any:
        (record,) = (await provider.list_sessions()).sessions
        return await provider.act(Action.DELETE, record)

    with pytest.raises(ActionRejected) as rejected:
        run(transport, clock, scenario)
    assert rejected.value.status == 400
    assert "nope" in str(rejected.value)


@pytest.mark.parametrize("action", [Action.STOP, Action.CANCEL, Action.NOTIFY])
def test_only_delete_is_a_provider_action(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock, action: Action
) -> None:
    sim.add_session("a.ipynb")

    async def scenario(provider: JupyterProvider) -> Any:
        (record,) = (await provider.list_sessions()).sessions
        return await provider.act(action, record)

    with pytest.raises(ActionRejected):
        run(transport, clock, scenario)
    assert sim.deletes == {}
    assert JupyterProvider.actions == {Action.DELETE, Action.NOTIFY}
    assert JupyterProvider.native_warning is False


# --- polling is not activity -------------------------------------------------------------------


def test_every_request_carries_no_track_activity(
    sim: JupyterSim, transport: SimTransport, clock: FrozenClock
) -> None:
    sim.add_session("a.ipynb")
    sim.add_session("b.ipynb")
    sim.add_kernel()

    async def scenario(provider: JupyterProvider) -> None:
        records = (await provider.list_sessions()).sessions
        for record in records:
            await provider.get_session(record)
        for record in records[1:]:
            await provider.act(Action.DELETE, record)

    run(transport, clock, scenario)

    methods = {(m, p.split("/")[2]) for m, p, _ in sim.requests}
    assert methods == {
        ("GET", "kernels"),
        ("GET", "sessions"),
        ("DELETE", "kernels"),
        ("DELETE", "sessions"),
    }
    for method, path, query in sim.requests:
        assert query.get("no_track_activity") == ["1"], f"{method} {path} counts as activity"
