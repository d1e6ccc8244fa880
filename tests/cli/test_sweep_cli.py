"""``janitor explain``, ``sweep --dry-run`` and ``audit list`` filters, through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from tests.conftest import invoke, jupyter_toml

POLICIES = """
policies:
  - name: idle-notebooks
    match: {state: [idle], idle_for: 2h, max_connections: 0}
    exempt: {name: ["keep-*"]}
    action: delete
    mode: enforce
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[JupyterSim, Path]]:
    sim = JupyterSim(token="test-token")
    server: SimServer = sim.serve()
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", server.url + "/"))
    (tmp_path / "p.yaml").write_text(POLICIES)
    assert (
        invoke("-c", str(config), "policy", "apply", "-f", str(tmp_path / "p.yaml")).exit_code == 0
    )
    yield sim, config
    server.stop()


def test_explain_shows_every_session_and_acts_on_nothing(setup: tuple[JupyterSim, Path]) -> None:
    sim, config = setup
    idle = sim.add_session("old.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("keep-me.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("busy.ipynb", state="busy")
    table = invoke("-c", str(config), "explain")
    assert table.exit_code == 0, table.output
    assert "old.ipynb" in table.stdout
    assert "act" in table.stdout
    result = invoke("-c", str(config), "explain", "-o", "json")
    rows = {r["session"]: r for r in json.loads(result.stdout)["sessions"]}
    assert rows["old.ipynb"]["verdict"] == "act"
    assert rows["old.ipynb"]["policy"] == "idle-notebooks v1"
    assert rows["old.ipynb"]["idle"].startswith("3h")  # real time passes while it runs
    assert rows["keep-me.ipynb"]["verdict"] == "skip"
    assert rows["keep-me.ipynb"]["evaluations"][0]["exempt"].startswith("name 'keep-me.ipynb'")
    assert rows["busy.ipynb"]["verdict"] == "skip"
    assert sim.deletes == {}
    assert idle.id in sim.sessions
    assert not any(m == "DELETE" for m, _, _ in sim.requests)
    store = Store.open(f"sqlite:///{config.parent / 'j.db'}")
    assert store.observations.load("notebooks") == {}, "explain writes no observations"
    assert store.audit.events(kinds=["skip", "intent", "outcome"]) == []
    store.close()


def test_sweep_dry_run_reports_would_act_and_writes_no_memory(
    setup: tuple[JupyterSim, Path],
) -> None:
    sim, config = setup
    idle = sim.add_session("old.ipynb", idle_for=timedelta(hours=3))
    result = invoke("-c", str(config), "sweep", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dry-run sweep ")
    assert "1 would_act" in result.stdout
    assert sim.deletes == {}
    rows = json.loads(
        invoke("-c", str(config), "audit", "list", "--kind", "outcome", "-o", "json").stdout
    )
    assert [(r["session_id"], r["outcome"], r["dry_run"]) for r in rows] == [
        (idle.id, "would_act", True)
    ]
    store = Store.open(f"sqlite:///{config.parent / 'j.db'}")
    assert store.observations.load("notebooks") == {}
    store.close()


def test_unknown_target_is_a_usage_error(setup: tuple[JupyterSim, Path]) -> None:
    _, config = setup
    for command in ("sweep", "explain"):
        result = invoke("-c", str(config), command, "--target", "nope")
        assert result.exit_code == 2
        assert "no target named 'nope' (targets: notebooks)" in result.stderr


def test_audit_list_filters(setup: tuple[JupyterSim, Path]) -> None:
    sim, config = setup
    one = sim.add_session("one.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("two.ipynb", idle_for=timedelta(hours=4))
    assert invoke("-c", str(config), "sweep").exit_code == 0
    everything = json.loads(invoke("-c", str(config), "audit", "list", "-o", "json").stdout)
    mine = json.loads(
        invoke("-c", str(config), "audit", "list", "--session", one.id, "-o", "json").stdout
    )
    assert [r["kind"] for r in mine] == ["intent", "outcome"]
    assert {r["session_id"] for r in mine} == {one.id}
    recent = json.loads(
        invoke("-c", str(config), "audit", "list", "--since", "1h", "-o", "json").stdout
    )
    assert len(recent) == len(everything)
    other = json.loads(
        invoke("-c", str(config), "audit", "list", "--target", "elsewhere", "-o", "json").stdout
    )
    assert other == []
    last = json.loads(
        invoke("-c", str(config), "audit", "list", "--limit", "1", "-o", "json").stdout
    )
    assert last == everything[-1:]
    for key in (
        "id",
        "at",
        "sweep_id",
        "kind",
        "target",
        "session_id",
        "session_name",
        "policy",
        "policy_version",
        "action",
        "dry_run",
        "outcome",
        "reason",
        "http_status",
        "provider_request_id",
        "error",
        "actor",
        "fencing_token",
        "prev_hash",
        "hash",
    ):
        assert key in everything[-1], f"audit field {key} (DESIGN 2.5)"
    bad = invoke("-c", str(config), "audit", "list", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since: invalid duration 'yesterday'" in bad.stderr
    table = invoke("-c", str(config), "audit", "list")
    assert table.stdout.splitlines()[0].split()[:4] == ["ID", "AT", "KIND", "TARGET"]
