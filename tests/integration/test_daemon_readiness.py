"""``/readyz`` follows the database; ``/healthz`` does not (a real daemon, a real PostgreSQL).

The database is made unreachable with ``ALLOW_CONNECTIONS false`` plus terminating its
sessions, then brought back. The daemon re-checks the database every few seconds
(``janitor.dbwatch.DB_CHECK_PERIOD``); the waits below are hang guards, not timings.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from janitor.sim.jupyter import JupyterSim
from tests.conftest import invoke
from tests.fakes.daemon import (
    NotifySocket,
    daemon_env,
    free_port,
    http_get,
    running_daemon,
    wait_until,
)


@pytest.fixture
def dedicated_database(postgres_server: str) -> Iterator[tuple[str, str]]:
    """(name, URL) of a fresh database of its own, dropped at the end."""
    name = f"janitor_ready_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield name, url
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def set_reachable(admin_url: str, name: str, reachable: bool) -> None:
    """Let clients connect to ``name`` again, or refuse them and end their sessions."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(reachable).lower()}')
        if not reachable:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def probe(port: int, path: str) -> tuple[int, list[str]]:
    status, body = http_get(f"http://127.0.0.1:{port}{path}")
    return status, list(json.loads(body)["problems"])


@pytest.mark.postgres
def test_readyz_follows_the_database_and_healthz_does_not(
    tmp_path: Path, postgres_server: str, dedicated_database: tuple[str, str]
) -> None:
    name, url = dedicated_database
    sim = JupyterSim(token="test-token")
    server = sim.serve()
    notify = NotifySocket()
    port = free_port()
    config = tmp_path / "janitor.toml"
    config.write_text(
        f'database_url = "{url}"\nlisten = "127.0.0.1:{port}"\n'
        'sweep_interval = "1h"\nsweep_jitter = "0s"\nlog_format = "json"\n\n'
        '[[targets]]\nname = "notebooks"\nprovider = "jupyter"\n'
        f'base_url = "{server.url}/"\ntoken = "test-token"\n',
        encoding="utf-8",
    )
    try:
        assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
        with running_daemon(config, daemon_env(notify), tmp_path / "daemon.log") as daemon:
            notify.wait_for("READY=1")
            notify.wait_for("STATUS=last sweep")  # the first sweep is done; the next in 1h
            assert probe(port, "/readyz") == (200, [])

            set_reachable(postgres_server, name, False)
            _, problems = wait_until(
                lambda: (p := probe(port, "/readyz"))[0] == 503 and p, "/readyz to turn 503"
            )
            assert any("database unreachable" in p for p in problems), problems
            assert probe(port, "/healthz") == (200, []), "liveness ignores the database"
            assert "not ready: database unreachable" in notify.wait_for("STATUS=not ready")

            set_reachable(postgres_server, name, True)
            wait_until(lambda: probe(port, "/readyz") == (200, []), "/readyz to recover")
            assert daemon.terminate() == 0
            log = daemon.log()
    finally:
        set_reachable(postgres_server, name, True)
        notify.close()
        server.stop()
    assert "database is back: sweeping now" in log
