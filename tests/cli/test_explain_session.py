"""``janitor explain SESSION`` and ``janitor keep``, through the CLI against a served Jupyter.

"Why?" and "why not?" for one session: a matched session, an exempt one, a kept one and a
near miss each show every policy in evaluation order with each condition's observed value,
threshold and result; the guards; janitor's memory; and the last audit rows. A session that
is gone is explained from the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from tests.conftest import invoke, jupyter_toml

POLICIES = """
policies:
  - name: dead-kernels
    priority: 10
    match: {state: [dead]}
    action: delete
    mode: enforce
  - name: idle-notebooks
    priority: 20
    match: {state: [idle], idle_for: 2h, max_connections: 0}
    exempt: {name: ["keep-*"]}
    action: delete
    mode: enforce
    max_actions_per_sweep: 10
  - name: gpu-only
    targets: ["gpu-*"]
    match: {idle_for: 30m}
    action: delete
  - name: retired
    enabled: false
    match: {idle_for: 1m}
    action: delete
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[JupyterSim, Path]]:
    sim = JupyterSim(token="test-token")
    server: SimServer = sim.serve()
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", server.url + "/"))
    (tmp_path / "p.yaml").write_text(POLICIES)
    applied = invoke("-c", str(config), "policy", "apply", "-f", str(tmp_path / "p.yaml"))
    assert applied.exit_code == 0, applied.output
    yield sim, config
    server.stop()


def explained(config: Path, *args: str) -> dict[str, Any]:
    result = invoke("-c", str(config), "explain", *args, "-o", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def checks(data: dict[str, Any], policy: str) -> dict[str, tuple[Any, ...]]:
    [row] = [p for p in data["policies"] if p["policy"].startswith(policy + " ")]
    return {
        f"{c['block']}:{c['key']}": (c["observed"], c["threshold"], c["result"])
        for c in row.get("checks", [])
    }


def policy_row(data: dict[str, Any], policy: str) -> dict[str, Any]:
    [row] = [p for p in data["policies"] if p["policy"].startswith(policy + " ")]
    return row


def test_a_matched_session_shows_each_condition_the_guards_and_what_comes_next(
    setup: tuple[JupyterSim, Path],
) -> None:
    sim, config = setup
    idle = sim.add_session("analysis.ipynb", idle_for=timedelta(hours=3, minutes=12))
    data = explained(config, "analysis.ipynb")
    assert data["session_id"] == idle.id
    assert data["verdict"] == "act"
    assert data["policy"] == "idle-notebooks v1"
    assert data["reason"].startswith("state idle and idle 3h12m")
    # every policy in evaluation order, with why it did (not) decide
    assert [(p["policy"], p["result"]) for p in data["policies"]] == [
        ("dead-kernels v1", "no match"),
        ("idle-notebooks v1", "matched"),
        ("gpu-only v1", "other targets"),
        ("retired v1", "disabled"),
    ]
    assert checks(data, "dead-kernels") == {"match:state": ("idle", "one of [dead]", "fail")}
    idle_checks = checks(data, "idle-notebooks")
    assert idle_checks["match:state"] == ("idle", "one of [idle]", "pass")
    observed, threshold, result = idle_checks["match:idle_for"]
    assert observed.startswith("idle 3h12m")
    assert (threshold, result) == ("≥ 2h", "pass")
    assert idle_checks["match:max_connections"] == ("0 connections", "≤ 0", "pass")
    assert idle_checks["exempt:name"] == ("'analysis.ipynb'", "matches ['keep-*']", "fail")
    assert policy_row(data, "idle-notebooks")["note"] == "decides"
    assert {g["guard"]: g["state"] for g in data["guards"]} == {
        "open intent": "clear",
        "parents and cascades": "clear",
        "blast radius": "clear",
        "clock skew and population": "clear",
        "kill switch": "clear",
    }
    assert data["memory"] is None, "no recorded sweep has seen it"
    assert data["audit"] == []
    # the people's view carries the same facts, aligned
    table = invoke("-c", str(config), "explain", "analysis.ipynb")
    assert table.exit_code == 0, table.output
    out = table.stdout
    assert f"session   analysis.ipynb (notebooks/{idle.id})" in out
    assert "idle 3h12m, 0 connections" in out
    assert "verdict   act (delete)" in out
    assert " 2. idle-notebooks v1  enforce delete: matched  (decides)" in out
    assert "idle_for" in out
    assert "≥ 2h" in out
    assert "GUARDS" in out
    assert sim.deletes == {}, "explain acts on nothing"


def test_an_exempt_session_says_which_exemption(setup: tuple[JupyterSim, Path]) -> None:
    sim, config = setup
    sim.add_session("keep-report.ipynb", idle_for=timedelta(hours=5))
    data = explained(config, "keep-report.ipynb")
    assert data["verdict"] == "skip"
    assert data["reason"] == (
        "exempt: name 'keep-report.ipynb' matches ['keep-*'] (policy idle-notebooks v1)"
    )
    assert policy_row(data, "idle-notebooks")["result"] == "exempt"
    assert checks(data, "idle-notebooks")["exempt:name"] == (
        "'keep-report.ipynb'",
        "matches ['keep-*']",
        "pass",
    )


def test_a_near_miss_shows_the_failing_condition_next_to_its_threshold(
    setup: tuple[JupyterSim, Path],
) -> None:
    sim, config = setup
    sim.add_session("almost.ipynb", idle_for=timedelta(hours=1, minutes=50))
    sim.add_session("watched.ipynb", idle_for=timedelta(hours=4), connections=1)
    near = explained(config, "almost.ipynb")
    assert near["verdict"] == "skip"
    assert near["reason"].startswith("no policy matched (dead-kernels: state idle not in [dead]")
    observed, threshold, result = checks(near, "idle-notebooks")["match:idle_for"]
    assert observed.startswith("idle 1h50m")
    assert (threshold, result) == ("≥ 2h", "fail")
    assert checks(near, "idle-notebooks")["match:max_connections"][2] == "pass"
    watched = explained(config, "watched.ipynb")
    assert checks(watched, "idle-notebooks")["match:max_connections"] == (
        "1 connections",
        "≤ 0",
        "fail",
    )


def test_keep_then_explain_then_remove(setup: tuple[JupyterSim, Path], tmp_path: Path) -> None:
    sim, config = setup
    kept = sim.add_session("report.ipynb", idle_for=timedelta(hours=6))
    other = sim.add_session("scratch.ipynb", idle_for=timedelta(hours=6))
    result = invoke(
        "-c", str(config), "keep", "report.ipynb", "--for", "3d", "--reason", "board demo",
        "--actor", "alice",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"kept report.ipynb (notebooks/{kept.id}) until " in result.stdout
    listed = json.loads(invoke("-c", str(config), "keep", "list", "-o", "json").stdout)
    assert [(k["session_id"], k["actor"], k["reason"]) for k in listed] == [
        (kept.id, "alice", "board demo")
    ]
    table = invoke("-c", str(config), "keep", "list")
    assert "2d23h" in table.stdout or "3d" in table.stdout, table.stdout

    data = explained(config, kept.id)
    assert data["verdict"] == "skip"
    assert data["reason"].startswith("kept until ")
    assert data["reason"].endswith("by alice: board demo")
    assert data["kept"]["actor"] == "alice"
    assert policy_row(data, "idle-notebooks")["note"] == "not consulted: kept"
    assert [a["kind"] for a in data["audit"]] == ["keep"]
    assert "kept for 3d until" in data["audit"][0]["reason"]
    overview = json.loads(invoke("-c", str(config), "explain", "-o", "json").stdout)
    verdicts = {r["session"]: r["verdict"] for r in overview["sessions"]}
    assert verdicts == {"report.ipynb": "skip", "scratch.ipynb": "act"}

    swept = invoke("-c", str(config), "sweep")
    assert swept.exit_code == 0, swept.output
    assert sim.deletes[kept.id] == 0
    assert sim.deletes[other.id] == 1

    removed = invoke("-c", str(config), "keep", "remove", "report.ipynb", "--actor", "bob")
    assert removed.exit_code == 0, removed.output
    assert "the policies apply to it again" in removed.stdout
    assert json.loads(invoke("-c", str(config), "keep", "list", "-o", "json").stdout) == []
    assert invoke("-c", str(config), "sweep").exit_code == 0
    assert sim.deletes[kept.id] == 1

    # the deleted session is still explained: from its audit rows
    gone = explained(config, "report.ipynb")
    assert gone["listed"] is False
    assert "not listed on notebooks now" in gone["note"]
    kinds = [a["kind"] for a in gone["audit"]]
    assert kinds[:2] == ["keep", "skip"]
    assert kinds[-2:] == ["intent", "outcome"]
    assert gone["audit"][-1]["outcome"] == "executed"
    text = invoke("-c", str(config), "explain", "report.ipynb")
    assert "its last audit rows say what happened" in text.stdout
    assert "unkeep" in text.stdout


def test_keep_and_explain_errors_say_where_janitor_looked(setup: tuple[JupyterSim, Path]) -> None:
    sim, config = setup
    sim.add_session("twin.ipynb", idle_for=timedelta(hours=1))
    sim.add_session("twin.ipynb", idle_for=timedelta(hours=2))
    twins = invoke("-c", str(config), "keep", "twin.ipynb", "--for", "1d", "--reason", "x")
    assert twins.exit_code == 2
    assert "2 sessions are named 'twin.ipynb'" in twins.stderr
    missing = invoke("-c", str(config), "explain", "nope.ipynb")
    assert missing.exit_code == 1
    assert "no session with the id or name 'nope.ipynb' is listed on notebooks" in missing.stderr
    long = invoke("-c", str(config), "keep", "twin.ipynb", "--for", "400d", "--reason", "x")
    assert long.exit_code == 2
    assert "at most 365d" in long.stderr
    unlisted = invoke(
        "-c", str(config), "keep", "abc-123", "--target", "notebooks", "--for", "1h",
        "--reason", "before it starts",
    )  # fmt: skip
    assert unlisted.exit_code == 0, unlisted.output
    assert "notebooks/abc-123: it is not listed now; kept by id" in unlisted.stderr
    store = Store.open(f"sqlite:///{config.parent / 'j.db'}")
    try:
        assert [k.session_id for k in store.keeps.all(store_now())] == ["abc-123"]
    finally:
        store.close()
    not_kept = invoke("-c", str(config), "keep", "remove", "twin.ipynb")
    assert not_kept.exit_code == 1
    assert "no keep for a session with the id or name 'twin.ipynb'" in not_kept.stderr


def store_now() -> Any:
    from janitor.clock import SystemClock

    return SystemClock().now()
