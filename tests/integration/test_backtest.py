"""The session history log and ``janitor backtest``.

The log grows with changes, not with sweeps, and keeps each session's latest row through
retention. A backtest over what daemon sweeps recorded agrees with what the engine decided
in those sweeps: the same sessions, at the same sweeps, for a dry-run policy (its would_act
rows) and for an enforced one with min_observations and a grace (its warnings and deletes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from janitor.backtest import instants, replay_target
from janitor.clock import FrozenClock
from janitor.model import AuditKind
from janitor.policy.spec import PolicySpec, compile_policy
from janitor.sim.jupyter import NotebookSession
from janitor.store import Store
from janitor.store.history import Observed
from tests.conftest import invoke, jupyter_toml
from tests.fakes.faults import World

STEP = timedelta(minutes=5)
START = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # the replay crosses midnight

DRY = {
    "name": "idle-draft",
    "match": {"state": ["idle"], "idle_for": "1h", "max_connections": 0},
    "action": "delete",
}
ENFORCED = {
    **DRY,
    "name": "idle-enforced",
    "mode": "enforce",
    "grace": "10m",
    "min_observations": 2,
}


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    clock.advance(START - clock.now())
    return World.create(store, clock)


def run(world: World, sweeps: int, schedule: dict[int, list[Callable[[], Any]]]) -> datetime:
    """Daemon sweeps every STEP; ``schedule[i]`` happens just before sweep ``i``. Returns the
    instant of the last sweep."""
    for change in schedule.get(0, []):
        change()

    def between(index: int, _: Any) -> None:
        if index + 1 < sweeps:
            world.clock.advance(STEP)
            for change in schedule.get(index + 1, []):
                change()

    asyncio.run(world.sweeps(sweeps, between=between))
    return world.clock.now()


def a_day_of_sessions(world: World) -> tuple[dict[str, NotebookSession], dict[int, list[Any]]]:
    """Sessions that start, idle, come back, connect, leave and appear over 40 sweeps."""
    sim = world.sim
    s: dict[str, NotebookSession] = {
        "old": world.idle("old.ipynb", hours=3),
        "half": world.idle("half.ipynb", hours=0.5),
        "back": world.idle("back.ipynb", hours=0.9),
        "tab": sim.add_session("tab.ipynb", idle_for=timedelta(hours=2), connections=1),
        "gone": world.idle("gone.ipynb", hours=0.8),
        "busy": sim.add_session("busy.ipynb", state="busy", idle_for=timedelta(hours=4)),
    }

    def touch(name: str) -> Callable[[], None]:
        def change() -> None:
            if s[name].kernel_id in sim.kernels:  # unless janitor deleted it
                sim.touch(s[name].kernel_id)

        return change

    def close_tab() -> None:
        with sim.lock:
            sim.kernels[s["tab"].kernel_id].connections = 0

    def leave() -> None:
        with sim.lock:
            sim.sessions.pop(s["gone"].id, None)
            sim.kernels.pop(s["gone"].kernel_id, None)

    def appear() -> None:
        s["new"] = world.idle("new.ipynb", hours=2)

    schedule: dict[int, list[Any]] = {
        1: [touch("back")],  # the user comes back before the hour is up (acted on later)
        10: [close_tab],
        4: [leave],
        8: [appear],
        20: [touch("half")],  # comes back after half.ipynb was (or would have been) acted on
    }
    for sweep in range(0, 40, 3):  # the busy kernel reports activity now and then
        schedule.setdefault(sweep, []).append(touch("busy"))
    return s, schedule


def _specs(*policies: dict[str, Any]) -> list[PolicySpec]:
    return [PolicySpec.model_validate(p) for p in policies]


def replay(world: World, policy: dict[str, Any], since: datetime, until: datetime) -> Any:
    draft = compile_policy(_specs(policy)[0], 1)
    rt = world.runtime()
    try:
        return replay_target(
            rt.config.target("nb"),
            rt.providers["nb"],
            [draft],
            world.store.history.load("nb", since, until),
            since=since,
            until=until,
            step=STEP,
        )
    finally:
        asyncio.run(rt.providers["nb"].aclose())


def test_a_backtest_of_a_dry_run_policy_agrees_with_its_would_act_rows(world: World) -> None:
    world.apply(DRY)
    sessions, schedule = a_day_of_sessions(world)
    last = run(world, 40, schedule)

    recorded: dict[str, datetime] = {}
    for row in world.store.audit.events(kinds=[AuditKind.OUTCOME], outcomes=["would_act"]):
        assert row.session_id is not None
        recorded.setdefault(row.session_id, row.at)
    expected = ("old", "half", "back", "tab", "gone", "new")
    assert set(recorded) == {sessions[n].id for n in expected}, (
        "the scenario exercises what it means to"
    )
    result = replay(world, DRY, START, last)
    replayed = {act.session_id: act.at for act in result.acts}
    assert replayed == recorded, "the same sessions, at the same sweeps"
    assert result.sweeps == 40
    days = {(p, d): t.acts for (p, d), t in result.tallies.items()}
    by_day: dict[str, int] = {}
    for at in recorded.values():
        by_day[at.date().isoformat()] = by_day.get(at.date().isoformat(), 0) + 1
    assert days == {("idle-draft", d): n for d, n in by_day.items()}
    assert len(by_day) == 2, "the window crosses midnight: two days"


def test_a_backtest_of_an_enforced_policy_agrees_with_its_warnings_and_deletes(
    world: World,
) -> None:
    world.apply(ENFORCED)
    sessions, schedule = a_day_of_sessions(world)
    last = run(world, 40, schedule)

    deleted: dict[str, datetime] = {}
    for row in world.store.audit.events(kinds=[AuditKind.INTENT]):
        assert row.session_id is not None
        deleted[row.session_id] = row.at
    executed = world.store.audit.events(kinds=[AuditKind.OUTCOME], outcomes=["executed"])
    assert len(executed) == len(deleted) >= 3
    warned = len(world.store.audit.events(kinds=[AuditKind.WARN]))
    assert warned >= len(deleted)

    result = replay(world, ENFORCED, START, last)
    assert {a.session_id: a.at for a in result.acts} == deleted
    assert sum(t.warns for t in result.tallies.values()) == warned
    assert sessions["busy"].id not in deleted


def test_the_log_grows_with_changes_not_with_sweeps(world: World) -> None:
    world.apply(DRY)
    quiet = [world.idle(f"q{i}.ipynb", hours=0.1) for i in range(3)]
    busy = world.sim.add_session("b.ipynb", state="busy")
    schedule = {i: [lambda: world.sim.touch(busy.kernel_id)] for i in range(10)}
    run(world, 10, schedule)
    log = world.store.history.load("nb", START - timedelta(days=1), START + timedelta(days=1))
    assert {sid: len(rows) for sid, rows in log.items()} == {
        **{q.id: 1 for q in quiet},
        busy.id: 10,
    }
    # a session that goes is logged once more, as gone
    with world.sim.lock:
        world.sim.sessions.pop(quiet[0].id)
    run(world, 2, {})
    rows = world.store.history.load("nb", START, START + timedelta(days=1))[quiet[0].id]
    assert [r.gone for r in rows] == [None, "missing"]


def test_retention_keeps_each_live_sessions_latest_row(store: Store) -> None:
    old = START - timedelta(days=40)
    rows = [
        Observed(session_id="a", at=old, fields={"name": "a1"}),
        Observed(session_id="a", at=old + timedelta(days=1), fields={"name": "a2"}),
        Observed(session_id="a", at=START, fields={"name": "a3"}),
        Observed(session_id="b", at=old, fields={"name": "b1"}),  # unchanged since: stays
        Observed(session_id="c", at=old, fields={"name": "c1"}),
        Observed(session_id="c", at=old + timedelta(days=2), fields=None, gone="missing"),
    ]
    store.observations.save("nb", [], log=rows)
    removed = store.history.prune(START - timedelta(days=30))
    assert removed == 3  # a1 (superseded), c1 and its end (gone before the cut-off)
    kept = store.history.load("nb", START - timedelta(days=7), START)
    assert {sid: [r.fields for r in rs] for sid, rs in kept.items()} == {
        "a": [{"name": "a2"}, {"name": "a3"}],
        "b": [{"name": "b1"}],
    }


def test_replayed_sweeps_follow_the_daemons_interval_between_logged_changes() -> None:
    t0 = START
    changes = [t0, t0 + timedelta(minutes=12), t0 + timedelta(minutes=12)]
    points = instants(changes, t0 - timedelta(minutes=10), t0 + timedelta(minutes=30), STEP)
    assert points == [
        t0 - timedelta(minutes=5),
        t0,
        t0 + timedelta(minutes=5),
        t0 + timedelta(minutes=10),
        t0 + timedelta(minutes=12),
        t0 + timedelta(minutes=17),
        t0 + timedelta(minutes=22),
        t0 + timedelta(minutes=27),
    ]


def test_backtest_cli_reports_per_policy_target_and_day_and_touches_nothing(
    world: World, db_url: str, tmp_path: Path
) -> None:
    world.apply(DRY)
    _, schedule = a_day_of_sessions(world)
    last = run(world, 40, schedule)
    before = (world.store.audit.head(), len(world.sim.requests))
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, "http://jupyter.test/").replace("notebooks", "nb"))
    draft = tmp_path / "draft.yaml"
    later = {**DRY, "match": {"state": ["idle"], "idle_for": "70m", "max_connections": 0}}
    draft.write_text(yaml.safe_dump({"policies": [later]}))
    window = ("--since", START.isoformat(), "--until", last.isoformat())
    result = invoke("-c", str(config), "backtest", "-f", str(draft), *window, "--sessions")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "backtest from 2026-11-22 23:00:00Z to 2026-11-23 02:15:00Z, one sweep every 5m" in out
    assert "nb: 40 sweeps replayed over 7 sessions in the log" in out
    assert "idle-draft  nb      2026-11-22" in out
    assert "idle-draft (dry-run delete): would have acted on" in out
    data = json.loads(
        invoke("-c", str(config), "backtest", "-f", str(draft), *window, "-o", "json").stdout
    )
    names = {s["session"] for s in data["sessions"]}
    assert names == {"old.ipynb", "half.ipynb", "back.ipynb", "tab.ipynb", "new.ipynb"}, (
        "gone.ipynb left before it was idle for 70m; busy.ipynb is busy"
    )
    assert sum(r["acted"] for r in data["rows"]) == len(data["sessions"])
    assert {r["day"] for r in data["rows"]} == {"2026-11-22", "2026-11-23"}
    assert (world.store.audit.head(), len(world.sim.requests)) == before, "touches nothing"
    alone = invoke("-c", str(config), "backtest", "-f", str(draft), *window, "--alone")
    assert alone.exit_code == 0
    bad = invoke("-c", str(config), "backtest", "-f", str(draft), "--since", "1h", "--until", "2h")
    assert bad.exit_code == 2
    assert "--since: must be before --until" in bad.stderr
