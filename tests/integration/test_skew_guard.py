"""Clock skew (DESIGN 5 "Time"): a provider whose clock is off takes no action, and says why.

Idle times compare the provider's timestamps with janitor's clock, so they are only right
when both clocks agree. janitor measures the provider's clock from the HTTP ``Date`` header
of its answers; beyond the target's ``skew_tolerance`` (default 2 min) the target takes no
action that sweep: no DELETE reaches the provider, one ``blocked`` row says why, and an alert
goes out. The simulated server sends a ``Date`` header off by ``date_offset``, in-process and
over loopback HTTP (``janitor sweep``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from tests.conftest import invoke, jupyter_toml
from tests.fakes.faults import World

AHEAD = "ahead of janitor's, beyond the tolerance of 2m; no action on this target"
BEHIND = "behind janitor's, beyond the tolerance of 2m; no action on this target"


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    """The simulated server and the idle-delete policy, on each database."""
    w = World.create(store, clock)
    w.apply()
    return w


@pytest.mark.parametrize(
    ("offset", "says"),
    [
        pytest.param(timedelta(hours=3), AHEAD, id="3h-ahead"),
        pytest.param(-timedelta(hours=5), BEHIND, id="5h-behind"),
        pytest.param(timedelta(minutes=2, seconds=10), AHEAD, id="just-past-the-tolerance"),
    ],
)
def test_a_skewed_provider_clock_blocks_every_delete_on_the_target(
    world: World, offset: timedelta, says: str
) -> None:
    sessions = [world.idle(f"s{i}.ipynb", hours=3 + i) for i in range(3)]
    world.sim.date_offset = offset
    asyncio.run(world.sweeps(1))

    assert world.transport.deletes() == []
    assert all(s.id in world.sim.sessions for s in sessions)
    events = world.events()
    assert [e for e in events if e.kind == AuditKind.INTENT] == []
    (blocked,) = [e for e in events if e.kind == AuditKind.BLOCKED]
    assert blocked.outcome is Outcome.BLOCKED
    assert blocked.target == "nb"
    assert blocked.reason.startswith("the provider's clock is ")
    assert blocked.reason.endswith(says)
    assert ("blocked", blocked.reason) in world.alerts


def test_a_provider_clock_within_the_tolerance_does_not_block(world: World) -> None:
    session = world.idle("a.ipynb")
    world.sim.date_offset = timedelta(seconds=30)
    asyncio.run(world.sweeps(1))
    assert world.sim.deletes[session.id] == 1
    assert [e for e in world.events() if e.kind == AuditKind.BLOCKED] == []


def test_the_tolerance_is_the_targets_setting(world: World) -> None:
    session = world.idle("a.ipynb")
    world.sim.date_offset = timedelta(hours=3)
    world.target = {"skew_tolerance": "4h"}
    asyncio.run(world.sweeps(1))
    assert world.sim.deletes[session.id] == 1


def test_janitor_sweep_says_why_a_skewed_target_was_not_touched(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    sim = JupyterSim(token="test-token")
    server = sim.serve()
    try:
        session = sim.add_session("old.ipynb", idle_for=timedelta(hours=3))
        sim.date_offset = timedelta(hours=3)
        config = tmp_path / "janitor.toml"
        config.write_text(jupyter_toml(db_url, server.url + "/"))
        policies = tmp_path / "policies.yaml"
        policies.write_text(
            "policies:\n"
            "  - name: idle-notebooks\n"
            "    match: {state: [idle], idle_for: 2h, max_connections: 0}\n"
            "    action: delete\n"
            "    mode: enforce\n"
        )
        assert invoke("-c", str(config), "policy", "apply", "-f", str(policies)).exit_code == 0

        result = invoke("-c", str(config), "sweep")
    finally:
        server.stop()

    assert not any(method == "DELETE" for method, _, _ in sim.requests)
    assert session.id in sim.sessions
    assert "blocked on notebooks: the provider's clock is " in result.stdout
    assert AHEAD in result.stdout
    (blocked,) = store.audit.events(kinds=["blocked"])
    assert blocked.target == "notebooks"
    assert AHEAD in blocked.reason
