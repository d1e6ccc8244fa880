"""From ``policy apply`` to audit rows, through the CLI, on SQLite and PostgreSQL.

The simulated Jupyter server is served over real HTTP on loopback, so the whole path runs:
config file, policy YAML, database, provider over HTTP, sweep, audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Database, Store
from tests.conftest import invoke, jupyter_toml

POLICIES = """
policies:
  - name: idle-notebooks
    priority: 100
    match:
      state: [idle]
      idle_for: 2h
      max_connections: 0
    exempt:
      name: ["keep-*"]
    action: delete
    mode: {mode}
  - name: dead-kernels
    priority: 10
    match:
      state: [dead]
    action: delete
    mode: {mode}
"""


@pytest.fixture
def served() -> Iterator[tuple[JupyterSim, SimServer]]:
    sim = JupyterSim(token="test-token")
    server = sim.serve()
    yield sim, server
    server.stop()


def test_apply_sweep_dry_run_then_enforce_then_verify(
    db_url: str, tmp_path: Path, served: tuple[JupyterSim, SimServer]
) -> None:
    sim, server = served
    idle = sim.add_session("work/analysis.ipynb", idle_for=timedelta(hours=3))
    busy = sim.add_session("work/train.ipynb", state="busy", idle_for=timedelta(hours=5))
    starting = sim.add_session("work/new.ipynb", state="starting", idle_for=timedelta(hours=5))
    kept = sim.add_session("work/keep-me.ipynb", idle_for=timedelta(hours=9))
    watched = sim.add_session("work/dash.ipynb", idle_for=timedelta(hours=3), connections=1)
    dead = sim.add_kernel(state="dead", idle_for=timedelta(days=2))
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, server.url + "/"))
    policies = tmp_path / "policies.yaml"
    result = invoke("-c", str(config), "db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"upgraded empty -> {Database.head_revision()}" in result.stdout

    # dry-run policies: would_act rows, no DELETE reaches the server
    policies.write_text(POLICIES.format(mode="dry-run"))
    result = invoke("-c", str(config), "policy", "apply", "-f", str(policies))
    assert result.exit_code == 0, result.output
    assert "idle-notebooks: created (v1)" in result.stdout
    result = invoke("-c", str(config), "sweep")
    assert result.exit_code == 0, result.output
    assert sim.deletes == {}
    rows = _audit(config)
    would = {r["session_id"] for r in rows if r["outcome"] == "would_act"}
    assert would == {idle.id, dead.id}

    # enforce: exactly the idle session and the dead kernel are deleted, once
    policies.write_text(POLICIES.format(mode="enforce"))
    result = invoke("-c", str(config), "policy", "apply", "-f", str(policies))
    assert "idle-notebooks: updated (v2)" in result.stdout
    result = invoke("-c", str(config), "sweep")
    assert result.exit_code == 0, result.output
    assert dict(sim.deletes) == {idle.id: 1, dead.id: 1}
    assert set(sim.sessions) == {busy.id, starting.id, kept.id, watched.id}

    rows = _audit(config)
    executed = [r for r in rows if r["kind"] == "outcome" and r["outcome"] == "executed"]
    assert {r["session_id"] for r in executed} == {idle.id, dead.id}
    intents = {r["id"]: r for r in rows if r["kind"] == "intent"}
    for row in executed:
        intent = intents[row["intent_id"]]
        assert intent["id"] < row["id"], "the intent is committed before the outcome"
        assert row["policy_version"] == 2
        assert row["fencing_token"] is not None
    assert "idle 3h" in next(r for r in executed if r["session_id"] == idle.id)["reason"]

    result = invoke("-c", str(config), "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "audit chain OK" in result.stdout

    # tamper with one row: verify fails and names it
    victim = executed[0]["id"]
    store = Store.open(db_url)
    with store.db.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET reason = 'nothing happened' WHERE id = :i"), {"i": victim}
        )
    store.close()
    result = invoke("-c", str(config), "audit", "verify")
    assert result.exit_code == 1
    assert f"row {victim}: content does not match its hash" in result.stderr


def test_second_sweep_writes_no_duplicate_skip_rows(
    db_url: str, tmp_path: Path, served: tuple[JupyterSim, SimServer]
) -> None:
    sim, server = served
    sim.add_session("busy.ipynb", state="busy")
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, server.url + "/"))
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES.format(mode="enforce"))
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    assert invoke("-c", str(config), "policy", "apply", "-f", str(policies)).exit_code == 0
    assert invoke("-c", str(config), "sweep").exit_code == 0
    first = len(_audit(config))
    assert invoke("-c", str(config), "sweep").exit_code == 0
    assert len(_audit(config)) == first, "an unchanged decision writes no new row"


def test_sweep_exits_1_when_the_target_cannot_be_listed(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, "http://127.0.0.1:9/"))  # nothing listens there
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    result = invoke("-c", str(config), "sweep", "-o", "json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["targets"][0]["listed"] is False
    rows = _audit(config)
    assert rows[-1]["kind"] == "list_failed"


def _audit(config: Path) -> list[dict[str, object]]:
    result = invoke("-c", str(config), "audit", "list", "-o", "json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows
