"""Shared fixtures: clocks, databases (SQLite and PostgreSQL), the simulated Jupyter server,
configs and runtimes. PostgreSQL tests skip on a laptop without a server and fail in CI
(``JANITOR_REQUIRE_POSTGRES=1``, set by ``.ci/run``).
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import stamina
from hypothesis import HealthCheck, settings

from janitor.clock import FrozenClock
from janitor.runtime import Runtime
from janitor.settings import Config, Settings, load_config
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.targets import TargetConfig
from tests.fakes.jupyter import SimTransport

POSTGRES_URL = os.environ.get(
    "JANITOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("JANITOR_REQUIRE_POSTGRES") == "1"
FULL = os.environ.get("JANITOR_TEST_FULL") == "1"
QUICK = os.environ.get("JANITOR_TEST_QUICK") == "1"  # make test-quick: the edit-test loop

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "full",
    derandomize=False,
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# `make test-quick` and `make mutants` (docs/mutation-testing.md, once per mutant): fewer,
# still derandomized examples, so a mutant's verdict does not depend on the run.
settings.register_profile(
    "quick",
    derandomize=True,
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("full" if FULL else "quick" if QUICK else "ci")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No JANITOR_* or systemd variables leak into a test; retries do not sleep."""
    for name in list(os.environ):
        if name.startswith("JANITOR_") and name not in (
            "JANITOR_TEST_POSTGRES_URL",
            "JANITOR_REQUIRE_POSTGRES",
            "JANITOR_TEST_FULL",
            "JANITOR_TEST_QUICK",
        ):
            monkeypatch.delenv(name)
    for name in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CREDENTIALS_DIRECTORY",
        "STATE_DIRECTORY",
        "JOURNAL_STREAM",
        "SENTRY_DSN",
    ):
        monkeypatch.delenv(name, raising=False)
    stamina.set_testing(True, attempts=3, cap=True)


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    """A CLI command run in-process (``janitor sweep``) tunes the collector for sweeping
    (:mod:`janitor.gc_tuning`): undo it, so no test freezes the test run's objects."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FrozenClock:
    """A frozen clock at a fixed instant."""
    return FrozenClock(NOW)


def _postgres_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 (any failure means "not available")
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL URL, or skip (fail in CI) when the server is missing."""
    problem = _postgres_available()
    if problem is not None:
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {problem}"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " (JANITOR_REQUIRE_POSTGRES=1: CI must run these tests)")
        pytest.skip(message + " (set JANITOR_REQUIRE_POSTGRES=1 to make this a failure)")
    return POSTGRES_URL


def postgres_schema_url(base: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema for one test."""
    yield from postgres_schema_url(postgres_server)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'janitor.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database janitor supports: the test runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'janitor.db'}"
    else:
        base = request.getfixturevalue("postgres_server")
        yield from postgres_schema_url(base)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on each database."""
    store = Store.open(db_url)
    store.db.upgrade()
    yield store
    store.close()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    """A migrated SQLite store (for tests that need only one backend)."""
    store = Store.open(sqlite_url)
    store.db.upgrade()
    yield store
    store.close()


@pytest.fixture
def sim(clock: FrozenClock) -> JupyterSim:
    """A simulated Jupyter server on the frozen clock."""
    return JupyterSim(token="test-token", clock=clock)


def make_config(
    db_url: str, targets: list[dict[str, Any]] | None = None, **settings_kw: Any
) -> Config:
    """A Config built in code (the same validation as a TOML file)."""
    from janitor.providers import config_model

    raw_targets = (
        targets
        if targets is not None
        else [
            {
                "name": "nb",
                "provider": "jupyter",
                "base_url": "http://jupyter.test/",
                "token": "test-token",
            }
        ]
    )
    settings_obj = Settings(database_url=db_url, targets=raw_targets, **settings_kw)
    configs: tuple[TargetConfig, ...] = tuple(
        config_model(t["provider"]).model_validate(t) for t in raw_targets
    )
    return Config(settings_obj, configs, "test")


def write_config(path: Path, text: str) -> Config:
    """Write a TOML file and load it like the CLI does."""
    path.write_text(text, encoding="utf-8")
    return load_config(str(path))


@pytest.fixture
def transport(sim: JupyterSim) -> SimTransport:
    """The in-process transport to the simulator."""
    return SimTransport(sim)


def build_runtime(
    config: Config, store: Store, transports: dict[str, Any], clock: FrozenClock, **kw: Any
) -> Runtime:
    """A runtime over a store and in-process transports. Build it inside the event loop
    that uses it (``asyncio.run(scenario())``): its events and locks bind to that loop."""
    return Runtime.build(config, clock=clock, store=store, transports=transports, **kw)


def policy_doc(*policies: dict[str, Any]) -> dict[str, Any]:
    """A policy document from dicts."""
    return {"policies": list(policies)}


@pytest.fixture
def hour() -> timedelta:
    """One hour, for readability."""
    return timedelta(hours=1)


def invoke(*args: str) -> Any:
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from janitor.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def jupyter_toml(db_url: str, base_url: str, token: str = "test-token", **extra: str) -> str:
    """A config file for one jupyter target."""
    lines = [f'database_url = "{db_url}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    lines += [
        "",
        "[[targets]]",
        'name = "notebooks"',
        'provider = "jupyter"',
        f'base_url = "{base_url}"',
        f'token = "{token}"',
    ]
    return "\n".join(lines) + "\n"
