"""Policy administration: a plan that shows its impact, applies that cannot lose each other's
change, rollback and diff, and the audit trail of every change (actor, version, diff)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from janitor.errors import PolicyConflict
from janitor.model import AuditKind
from janitor.policy.spec import PolicySpec
from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from tests.conftest import invoke, jupyter_toml

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

STORED = """
policies:
  - name: idle-notebooks
    priority: 10
    match: {state: [idle], idle_for: 2h, max_connections: 0}
    exempt: {name: ["keep-*"]}
    action: delete
    mode: enforce
  - name: old-sweeper
    priority: 20
    match: {idle_for: 10m}
    action: delete
"""

#: idle-notebooks now acts after 20m; dead-kernels is new; old-sweeper is gone (--prune).
PROPOSED = """
policies:
  - name: idle-notebooks
    priority: 10
    match: {state: [idle], idle_for: 20m, max_connections: 0}
    exempt: {name: ["keep-*"]}
    action: delete
    mode: enforce
  - name: dead-kernels
    priority: 5
    match: {state: [dead]}
    action: delete
"""


@pytest.fixture
def served(tmp_path: Path, db_url: str, store: Store) -> Iterator[tuple[JupyterSim, Path]]:
    sim = JupyterSim(token="test-token")
    server: SimServer = sim.serve()
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, server.url + "/"))
    yield sim, config
    server.stop()


def _file(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _apply(config: Path, file: Path, *args: str) -> Any:
    return invoke("-c", str(config), "policy", "apply", "-f", str(file), *args)


def test_plan_shows_each_change_with_its_mode_diff_and_impact_per_target(
    served: tuple[JupyterSim, Path], store: Store, tmp_path: Path
) -> None:
    sim, config = served
    for number in range(3):
        sim.add_session(f"old-{number}.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("recent.ipynb", idle_for=timedelta(minutes=40))
    sim.add_session("keep-report.ipynb", idle_for=timedelta(hours=5))
    sim.add_session("train.ipynb", state="busy", idle_for=timedelta(hours=5))
    sim.add_kernel(state="dead", idle_for=timedelta(days=1))
    first = _apply(config, _file(tmp_path, STORED))
    assert first.exit_code == 0, first.output

    plan = _apply(config, _file(tmp_path, PROPOSED, "new.yaml"), "--plan", "--prune")
    assert plan.exit_code == 0, plan.output
    out = plan.stdout
    # a change: its versions, mode and what it would act on now, against the stored version
    assert "would update idle-notebooks (v1 -> v2, enforce)" in out
    assert "notebooks: would act on 4 of 7 sessions now (the stored version: 3)" in out
    assert "-  idle_for: 2h" in out
    assert "+  idle_for: 20m" in out
    # an addition (dry-run by default) with its count
    assert "would create dead-kernels (v1, dry-run)" in out
    assert "notebooks: would act on 1 of 7 sessions now" in out
    # a prune: what the disabled policy acts on today
    assert "would disable old-sweeper (v1 -> v2, dry-run)" in out
    assert "notebooks: would act on none (acts on 2 now)" in out  # recent + the dead kernel
    assert "+enabled: false" in out
    assert out.rstrip().endswith("plan: 3 changed, 0 unchanged")
    # nothing was stored or done
    assert sim.deletes == {}
    versions = {p.name: p.version for p in store.policies.current()}
    assert versions == {"idle-notebooks": 1, "old-sweeper": 1}
    assert len(store.audit.events(kinds=["policy_change"])) == 2

    as_json = json.loads(
        _apply(config, tmp_path / "new.yaml", "--plan", "--prune", "-o", "json").stdout
    )
    by_name = {c["name"]: c for c in as_json["changes"]}
    assert by_name["idle-notebooks"]["impact"] == [
        {
            "target": "notebooks",
            "listed": 7,
            "acts_on": 4,
            "acted_on_before": 3,
            "held": None,
            "error": None,
        }
    ]
    assert by_name["dead-kernels"]["mode"] == "dry-run"
    assert by_name["old-sweeper"]["change"] == "disabled"


def test_plan_says_when_a_guard_would_hold_the_changed_policy_back(
    served: tuple[JupyterSim, Path], tmp_path: Path
) -> None:
    sim, config = served
    for number in range(3):
        sim.add_session(f"old-{number}.ipynb", idle_for=timedelta(hours=3))
    capped = PROPOSED.replace(
        "    mode: enforce\n", "    mode: enforce\n    max_actions_per_sweep: 2\n"
    )
    plan = _apply(config, _file(tmp_path, capped), "--plan")
    assert plan.exit_code == 0, plan.output
    assert "notebooks: would act on 3 of 3 sessions now; held: policy idle-notebooks would act" in (
        plan.stdout
    )
    assert "over its limit of 2 actions" in plan.stdout


def test_plan_offline_lists_nothing_and_a_failed_listing_is_an_error(
    served: tuple[JupyterSim, Path], tmp_path: Path
) -> None:
    sim, config = served
    offline = _apply(config, _file(tmp_path, PROPOSED), "--plan", "--offline")
    assert offline.exit_code == 0
    assert "would create idle-notebooks (v1, enforce)" in offline.stdout
    assert "would act on" not in offline.stdout
    assert "(impact not listed: --offline)" in offline.stdout
    assert sim.requests == [], "--offline: no request to any target"
    sim.token = "rotated"  # every request is now refused with 403
    failed = _apply(config, tmp_path / "p.yaml", "--plan")
    assert failed.exit_code == 1
    assert "notebooks: not listed (listing failed" in failed.stdout
    assert "janitor: error: target notebooks: listing failed" in failed.stderr


def _specs(text: str) -> list[PolicySpec]:
    return [PolicySpec.model_validate(p) for p in yaml.safe_load(text)["policies"]]


def test_the_second_of_two_applies_based_on_one_version_gets_a_conflict(db_url: str) -> None:
    """Two admins (two processes, two connections) read v1; the first writes v2; the second
    is refused, naming the policy and both versions, and writes nothing at all."""
    alice, bob = Store.open(db_url), Store.open(db_url)
    alice.db.upgrade()
    try:
        alice.policies.apply(_specs(STORED), actor="setup", now=NOW)
        alice_plan = alice.policies.plan(_specs(STORED.replace("idle_for: 2h", "idle_for: 1h")))
        bob_text = STORED.replace("idle_for: 2h", "idle_for: 4h") + (
            "  - {name: other, match: {state: [dead]}, action: delete}\n"
        )
        bob_plan = bob.policies.plan(_specs(bob_text))
        alice.policies.commit(alice_plan, actor="alice (cli)", now=NOW)
        with pytest.raises(PolicyConflict) as caught:
            bob.policies.commit(bob_plan, actor="bob (cli)", now=NOW + timedelta(seconds=1))
        message = str(caught.value)
        assert "policy idle-notebooks changed while this apply ran" in message
        assert "it was v1 when read and is v2 now (changed by alice (cli))" in message
        assert "nothing was applied" in message
        current = {p.name: (p.version, p.spec["match"]) for p in bob.policies.current()}
        assert current["idle-notebooks"] == (2, {"state": ["idle"], "idle_for": "1h",
                                                 "max_connections": 0})  # fmt: skip
        assert "other" not in current, "atomic: none of bob's other changes either"
        assert [e.actor for e in bob.audit.events(kinds=["policy_change"])] == [
            "setup",
            "setup",
            "alice (cli)",
        ]
        # a policy both create at once: the second finds it exists
        dead = "policies:\n  - {name: dead-kernels, match: {state: [dead]}, action: delete}\n"
        first = alice.policies.plan(_specs(dead))
        second = bob.policies.plan(_specs(dead))
        alice.policies.commit(first, actor="alice (cli)", now=NOW)
        with pytest.raises(PolicyConflict, match=r"policy dead-kernels .* it was absent when read"):
            bob.policies.commit(second, actor="bob (cli)", now=NOW)
        # enable/disable and rollback move the version too
        stale = bob.policies.plan(_specs(STORED))
        alice.policies.set_enabled("old-sweeper", False, actor="alice (cli)", now=NOW)
        with pytest.raises(PolicyConflict, match=r"policy old-sweeper .* v1 when read and is v2"):
            bob.policies.commit(stale, actor="bob (cli)", now=NOW)
    finally:
        alice.close()
        bob.close()


@pytest.mark.postgres
def test_concurrent_applies_on_postgresql_one_wins_the_other_gets_the_conflict(
    postgres_url: str,
) -> None:
    """Really at once: both read v1, then both commit in the same instant from two threads
    (two connections). The advisory lock queues them; exactly one wins each round."""
    setup = Store.open(postgres_url)
    setup.db.upgrade()
    setup.policies.apply(_specs(STORED), actor="setup", now=NOW)
    stores = [Store.open(postgres_url) for _ in range(2)]
    try:
        for round_ in range(5):
            texts = [
                STORED.replace("idle_for: 2h", f"idle_for: {10 * round_ + 11 + i}m")
                for i in range(2)
            ]
            plans = [s.policies.plan(_specs(t)) for s, t in zip(stores, texts, strict=True)]
            barrier = threading.Barrier(2)
            results: list[str] = ["", ""]

            def commit(
                i: int,
                barrier: threading.Barrier = barrier,
                plans: list[Any] = plans,
                results: list[str] = results,
            ) -> None:
                barrier.wait(timeout=30)
                try:
                    stores[i].policies.commit(plans[i], actor=f"admin-{i}", now=NOW)
                    results[i] = "applied"
                except PolicyConflict as exc:
                    results[i] = str(exc)

            threads = [threading.Thread(target=commit, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert sorted(r == "applied" for r in results) == [False, True], results
            winner = results.index("applied")
            loser = results[1 - winner]
            assert f"policy idle-notebooks changed while this apply ran: it was v{round_ + 1} " in (
                loser
            )
            assert f"is v{round_ + 2} now (changed by admin-{winner})" in loser
            stored = setup.policies.get("idle-notebooks")
            assert stored.version == round_ + 2
            assert stored.spec["match"]["idle_for"] == f"{10 * round_ + 11 + winner}m"
            assert [v.version for v in setup.policies.history("idle-notebooks")] == list(
                range(1, round_ + 3)
            ), "no version lost, none written twice"
    finally:
        for store in [setup, *stores]:
            store.close()


def test_rollback_and_diff_through_the_cli(db_url: str, store: Store, tmp_path: Path) -> None:
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, "http://127.0.0.1:9/"))
    assert _apply(config, _file(tmp_path, STORED), "--actor", "alice").exit_code == 0
    changed = STORED.replace("idle_for: 2h", "idle_for: 3h")
    assert _apply(config, _file(tmp_path, changed), "--offline", "--actor", "bob").exit_code == 0
    assert invoke("-c", str(config), "policy", "disable", "idle-notebooks").exit_code == 0

    diff = invoke("-c", str(config), "policy", "diff", "idle-notebooks", "1", "2")
    assert diff.exit_code == 0, diff.output
    assert "--- idle-notebooks (v1)" in diff.stdout
    assert "+++ idle-notebooks (v2)" in diff.stdout
    assert "-  idle_for: 2h" in diff.stdout
    assert "+  idle_for: 3h" in diff.stdout
    as_json = json.loads(
        invoke("-c", str(config), "policy", "diff", "idle-notebooks", "1", "3", "-o", "json").stdout
    )
    assert as_json["changes"] == [
        {"key": "enabled", "from": None, "to": False},
        {"key": "match.idle_for", "from": "2h", "to": "3h"},
    ]
    same = invoke("-c", str(config), "policy", "diff", "idle-notebooks", "2", "2")
    assert "are the same" in same.stdout
    missing = invoke("-c", str(config), "policy", "diff", "idle-notebooks", "1", "9")
    assert missing.exit_code == 1
    assert "policy idle-notebooks has no version 9" in missing.stderr

    preview = invoke(
        "-c", str(config), "policy", "rollback", "idle-notebooks", "--to", "1", "--plan"
    )
    assert "would roll back to v1 as v4 (was v3)" in preview.stdout
    back = invoke(
        "-c", str(config), "policy", "rollback", "idle-notebooks", "--to", "1", "--actor", "carol"
    )
    assert back.exit_code == 0, back.output
    assert "idle-notebooks: rolled back to v1 as v4 (was v3)" in back.stdout
    assert "-enabled: false" in back.stdout
    assert store.policies.version("idle-notebooks", 4).spec == (
        store.policies.version("idle-notebooks", 1).spec
    )
    history = store.policies.history("idle-notebooks")
    assert [(v.version, v.change, v.actor) for v in history] == [
        (1, "created", "alice"),
        (2, "updated", "bob"),
        (3, "disabled", history[2].actor),
        (4, "rollback", "carol"),
    ]
    assert store.policies.get("idle-notebooks").enabled
    rows = store.audit.events(kinds=[AuditKind.POLICY_CHANGE], policy="idle-notebooks")
    details = [r.details for r in rows]
    assert all(d is not None for d in details)
    assert [(r.actor, r.policy_version, r.details["previous_version"]) for r in rows] == [
        ("alice", 1, None),
        ("bob", 2, 1),
        (history[2].actor, 3, 2),
        ("carol", 4, 3),
    ]  # fmt: skip
    assert "+  idle_for: 3h" in (details[1] or {})["diff"]
    assert (details[3] or {})["rolled_back_to"] == 1
    assert rows[3].reason.startswith("policy idle-notebooks rollback to v1 by carol")
    assert store.audit.verify().ok
    again = invoke("-c", str(config), "policy", "rollback", "idle-notebooks", "--to", "1")
    assert "is already the same as v1: nothing to do" in again.stdout
    nope = invoke("-c", str(config), "policy", "rollback", "idle-notebooks", "--to", "7")
    assert nope.exit_code == 1
    assert "has no version 7" in nope.stderr
