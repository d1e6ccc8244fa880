"""The glue provider against moto in server mode on loopback: a real emulator of the Glue API.

Sessions are created through the Glue API itself (a botocore client, test setup only) and
janitor sweeps them with its own signed httpx requests. moto's gaps are emulator gaps,
handled here and not in the product:

* its ListStatements answers 500 (not implemented): the server below wraps moto's WSGI app
  and answers it with an empty list (the sessions never ran a statement);
* its StopSession leaves a session STOPPING forever: harmless for ``delete``, which moto
  allows in any state (the ``stop`` settle path is tested on tests/fakes/glue.py);
* it has no PROVISIONING, STOPPED, throttling or statements: tests/fakes/glue.py covers them.

moto checks no signature; the fake does (tests/providers/test_glue.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.session
import httpx
import pytest
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.store import Store
from tests.integration.glue_world import GlueWorld, aws_environment

REGION = "eu-west-1"
OLD_READY = {
    "name": "old-glue-sessions",
    "match": {"provider_state": ["READY"], "state": ["idle"], "age": "1h"},
    "exempt": {"labels": {"keep": "true"}},
    "action": "delete",
    "mode": "enforce",
}

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def no_statements(app: WsgiApp) -> WsgiApp:
    """moto answers ListStatements with a 500: answer an empty list instead."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("HTTP_X_AMZ_TARGET") == "AWSGlue.ListStatements":
            body = json.dumps({"Statements": []}).encode()
            start_response(
                "200 OK",
                [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        return app(environ, start_response)

    return wrapped


class GlueMoto(ThreadedMotoServer):
    """moto's threaded server on loopback, with moto's ListStatements gap patched."""

    def _server_entry(self) -> None:
        app = no_statements(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """One moto server for the module, on a free loopback port."""
    server = GlueMoto(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def glue(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A botocore Glue client on moto (test setup), on a fresh moto, with test credentials."""
    aws_environment(monkeypatch, tmp_path, access_key="AKIDMOTO", secret_key="moto-secret")
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    client = botocore.session.get_session().create_client(
        "glue", region_name=REGION, endpoint_url=moto_url
    )
    yield client
    client.close()


@pytest.fixture
def world(sqlite_store: Store, moto_url: str, glue: Any) -> GlueWorld:
    """Sweeps of a glue target at moto; janitor's clock is two hours ahead of moto's."""
    clock = FrozenClock(datetime.now(UTC) + timedelta(hours=2))
    return GlueWorld(
        store=sqlite_store,
        clock=clock,
        target={"region": REGION, "endpoint_url": moto_url, "requests_per_second": 1000},
    )


def create(glue: Any, session_id: str, **tags: str) -> None:
    """A READY session in moto (through the Glue API)."""
    glue.create_session(
        Id=session_id,
        Role="arn:aws:iam::123456789012:role/Glue",
        Command={"Name": "glueetl", "PythonVersion": "3"},
        Tags=tags,
    )


def ids(glue: Any) -> set[str]:
    """The sessions moto still has."""
    return {s["Id"] for s in glue.list_sessions()["Sessions"]}


def test_a_ready_session_past_its_limit_is_stopped_and_deleted(world: GlueWorld, glue: Any) -> None:
    create(glue, "etl-old")
    world.apply(OLD_READY)

    report = world.sweep()

    assert report.targets[0].error is None
    assert report.targets[0].outcomes == {Outcome.EXECUTED: 1}
    assert ids(glue) == set()
    [intent] = world.intents("etl-old")
    assert world.outcomes("etl-old") == [Outcome.EXECUTED]
    assert intent.action == "delete"
    assert world.store.audit.verify().ok


def test_an_exempt_tagged_session_is_not_touched(world: GlueWorld, glue: Any) -> None:
    create(glue, "etl-kept", keep="true", team="data")
    create(glue, "etl-other", team="data")
    world.apply(OLD_READY)

    world.sweep()

    assert ids(glue) == {"etl-kept"}
    assert glue.get_session(Id="etl-kept")["Session"]["Status"] == "READY", "not even stopped"
    skips = [r for r in world.rows(AuditKind.SKIP) if r.session_id == "etl-kept"]
    assert skips
    assert "exempt" in skips[0].reason


def test_paging_over_more_than_one_page_lists_every_session(
    world: GlueWorld, glue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from janitor.providers.glue import GlueProvider

    monkeypatch.setattr(GlueProvider, "page_size", 2)
    for i in range(5):
        create(glue, f"etl-{i}")
    world.apply(OLD_READY)

    report = world.sweep()

    assert report.targets[0].outcomes == {Outcome.EXECUTED: 5}
    assert ids(glue) == set()


def test_a_stop_on_moto_is_accepted_and_stays_open_while_moto_keeps_it_stopping(
    world: GlueWorld, glue: Any
) -> None:
    create(glue, "etl-stop")
    world.apply({**OLD_READY, "name": "stop-old", "action": "stop"})

    first = world.sweep()
    second = world.sweep()

    assert first.targets[0].outcomes == {Outcome.ACCEPTED: 1}
    assert glue.get_session(Id="etl-stop")["Session"]["Status"] == "STOPPING"
    assert second.targets[0].settling == 1
    assert world.outcomes("etl-stop") == [Outcome.ACCEPTED]
