"""Grace, warnings, min_observations, notify and blast radius, sweep after sweep.

Runs the real sweep against the simulated Jupyter server in-process, on a frozen clock that
the test advances between sweeps, with a recording webhook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditEvent
from janitor.policy.spec import PolicySpec
from janitor.runtime import Runtime
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import SimTransport
from tests.fakes.webhook import WebhookReceiver

WEBHOOK = {
    "webhook_url": "https://hooks.example.test/janitor",
    "webhook_headers": {"Authorization": "Bearer hook-secret"},
}


def _policy(**spec: Any) -> PolicySpec:
    values: dict[str, Any] = {
        "name": "idle",
        "match": {"state": ["idle"], "idle_for": "2h"},
        "action": "delete",
        "mode": "enforce",
    }
    values.update(spec)
    return PolicySpec.model_validate(values)


class World:
    """A store, the simulator, a webhook and a clock; ``sweeps`` runs a scripted scenario."""

    def __init__(self, store: Store, sim: JupyterSim, clock: FrozenClock, **settings: Any) -> None:
        self.store, self.sim, self.clock = store, sim, clock
        self.webhook = WebhookReceiver()
        self.alerts: list[tuple[str, str]] = []
        self.config = make_config(str(store.db.url), **settings)

    def apply(self, *specs: PolicySpec) -> None:
        self.store.policies.apply(list(specs), actor="test", now=self.clock.now())

    def run(
        self, scenario: Callable[[Callable[[], Awaitable[SweepReport]]], Awaitable[None]]
    ) -> None:
        async def main() -> None:
            rt: Runtime = build_runtime(
                self.config,
                self.store,
                {"nb": SimTransport(self.sim)},
                self.clock,
                webhook_transport=self.webhook.transport(),
                sentry=lambda kind, message, tags: self.alerts.append((kind, message)),
            )
            await scenario(lambda: run_sweep(rt))

        asyncio.run(main())

    def rows(self, kind: str | None = None) -> list[AuditEvent]:
        return [e for e in self.store.audit.events() if kind is None or e.kind == kind]


@pytest.fixture
def world(store: Store, sim: JupyterSim, clock: FrozenClock) -> World:
    return World(store, sim, clock, notify=WEBHOOK)


def test_grace_warns_waits_then_acts(world: World) -> None:
    session = world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(grace="30m"))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        report = await sweep()
        assert report.targets[0].warned == 1
        assert world.sim.deletes == {}
        world.clock.advance(timedelta(minutes=29))
        await sweep()
        assert world.sim.deletes == {}
        world.clock.advance(timedelta(minutes=1))
        await sweep()
        assert dict(world.sim.deletes) == {session.id: 1}

    world.run(scenario)
    warning = world.webhook.events("warning")
    assert len(warning) == 1
    assert warning[0]["session_id"] == session.id
    assert warning[0]["act_after"].startswith("2026-11-22T12:30")
    assert world.webhook.headers[0]["authorization"] == "Bearer hook-secret"
    assert [e.kind for e in world.rows() if e.session_id == session.id] == [
        "warn",
        "wait",
        "intent",
        "outcome",
    ]
    assert world.rows("outcome")[0].outcome == "executed"


def test_activity_during_grace_unmarks_and_restarts_the_grace(world: World) -> None:
    session = world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(grace="30m"))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()
        world.clock.advance(timedelta(minutes=10))
        world.sim.touch(world.sim.sessions[session.id].kernel_id)
        await sweep()
        assert world.store.observations.load("nb")[session.id].mark is None
        world.clock.advance(timedelta(hours=3))
        await sweep()  # idle again: a new warning, a new grace
        world.clock.advance(timedelta(minutes=20))
        await sweep()
        assert world.sim.deletes == {}
        world.clock.advance(timedelta(minutes=10))
        await sweep()
        assert dict(world.sim.deletes) == {session.id: 1}

    world.run(scenario)
    assert len(world.webhook.events("warning")) == 2
    unmark = world.rows("unmark")
    assert len(unmark) == 1
    assert "mark of policy idle cleared" in unmark[0].reason


def test_undelivered_warning_means_no_action(world: World) -> None:
    session = world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(grace="30m"))
    world.webhook.status = 503

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        report = await sweep()
        assert report.targets[0].warned == 0
        world.clock.advance(timedelta(hours=2))
        await sweep()
        assert world.sim.deletes == {}, "no delivered warning, no action"
        world.webhook.status = 200
        await sweep()  # delivered now: the grace starts now
        world.clock.advance(timedelta(minutes=29))
        await sweep()
        assert world.sim.deletes == {}
        world.clock.advance(timedelta(minutes=1))
        await sweep()
        assert dict(world.sim.deletes) == {session.id: 1}

    world.run(scenario)
    failed = [e for e in world.rows("warn") if e.outcome == "failed"]
    assert failed
    assert "webhook failed" in (failed[0].error or "")


def test_min_observations(world: World) -> None:
    session = world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(min_observations=3))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()
        await sweep()
        assert world.sim.deletes == {}
        await sweep()
        assert dict(world.sim.deletes) == {session.id: 1}

    world.run(scenario)
    waits = world.rows("wait")
    assert len(waits) == 1, "the wait row is written once, not every sweep"
    assert "matched in 1 of 3 consecutive sweeps" in waits[0].reason


def test_notify_once_per_mark(world: World) -> None:
    world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(action="notify"))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        for _ in range(3):
            await sweep()
            world.clock.advance(timedelta(minutes=5))

    world.run(scenario)
    assert len(world.webhook.events("warning")) == 1
    assert world.sim.deletes == {}
    notified = [e for e in world.rows("outcome") if e.action == "notify"]
    assert [e.outcome for e in notified] == ["executed"]


def test_blast_radius_blocks_the_whole_policy_once_alerted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        world.sim.add_session(f"s{i}.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(max_actions_per_sweep=5))
    caplog.set_level(logging.ERROR)

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        first = await sweep()
        assert first.targets[0].blocked
        await sweep()

    world.run(scenario)
    assert world.sim.deletes == {}, "over the limit: nothing, not the first five"
    blocked = world.rows("blocked")
    assert len(blocked) == 2
    assert blocked[0].policy == "idle"
    assert "would act on 10 of 10 sessions, over its limit of 5 actions" in blocked[0].reason
    assert not world.rows("intent")
    assert [kind for kind, _ in world.alerts] == ["blocked"], "alerted once until it clears"
    assert len(world.webhook.events("alert")) == 1
    assert "ALERT blocked" in caplog.text


def test_percent_and_target_limits(store: Store, sim: JupyterSim, clock: FrozenClock) -> None:
    targets = [
        {
            "name": "nb",
            "provider": "jupyter",
            "base_url": "http://jupyter.test/",
            "token": "test-token",
            "max_actions_percent": 30,
        }
    ]
    world = World(store, sim, clock, targets=targets)
    for i in range(10):
        world.sim.add_session(f"s{i}.ipynb", idle_for=timedelta(hours=3))
    for i in range(3):
        world.sim.add_session(f"busy{i}.ipynb", state="busy")
    world.apply(_policy())

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()

    world.run(scenario)
    assert world.sim.deletes == {}
    (row,) = world.rows("blocked")
    assert row.policy is None
    assert "10 actions on 13 sessions, over its limit of 30% of the sessions listed" in row.reason


def test_dry_run_over_the_limit_previews_without_alerting(world: World) -> None:
    for i in range(4):
        world.sim.add_session(f"s{i}.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(mode="dry-run", max_actions_per_sweep=1))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()

    world.run(scenario)
    (row,) = world.rows("blocked")
    assert row.dry_run
    assert world.alerts == []


def test_pause_also_holds_warnings_and_notifications(world: World) -> None:
    world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.sim.add_session("b.ipynb", idle_for=timedelta(hours=3), kind="console")
    world.apply(
        _policy(grace="30m", match={"state": ["idle"], "idle_for": "2h", "kind": "notebook"}),
        _policy(name="tell", action="notify", match={"kind": "console"}),
    )
    world.store.pause.set(True, reason="incident", actor="t", now=world.clock.now())

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        report = await sweep()
        assert report.targets[0].halted is not None
        assert "paused" in report.targets[0].halted
        world.store.pause.set(False, reason="", actor="t", now=world.clock.now())
        await sweep()

    world.run(scenario)
    assert len(world.webhook.events("warning")) == 2, "sent only after resume"


def test_global_dry_run_records_would_warn(
    store: Store, sim: JupyterSim, clock: FrozenClock
) -> None:
    world = World(store, sim, clock, notify=WEBHOOK, dry_run=True)
    world.sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(grace="30m"))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()
        await sweep()

    world.run(scenario)
    assert world.webhook.received == []
    (row,) = world.rows("warn")
    assert row.outcome == "would_act"
    assert row.reason.startswith("would warn: ")


def test_a_kernel_shared_with_a_kept_session_is_not_ended(world: World) -> None:
    notebook = world.sim.add_session("keep-notes.ipynb", idle_for=timedelta(hours=3))
    kernel = world.sim.kernels[notebook.kernel_id]
    console = world.sim.add_session("console-1", kind="console", kernel=kernel)
    lone = world.sim.add_session("lone.ipynb", idle_for=timedelta(hours=3))
    world.apply(_policy(exempt={"name": ["keep-*"]}))

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()
        await sweep()

    world.run(scenario)
    assert dict(world.sim.deletes) == {lone.id: 1}
    assert {notebook.id, console.id} <= set(world.sim.sessions)
    (held,) = [e for e in world.rows("wait") if e.session_id == console.id]
    assert "shares its kernel" in held.reason
    assert "keep-notes.ipynb" in held.reason


def test_sessions_sharing_a_kernel_go_together(world: World) -> None:
    notebook = world.sim.add_session("notes.ipynb", idle_for=timedelta(hours=3))
    console = world.sim.add_session(
        "console-1", kind="console", kernel=world.sim.kernels[notebook.kernel_id]
    )
    world.apply(_policy())

    async def scenario(sweep: Callable[[], Awaitable[SweepReport]]) -> None:
        await sweep()

    world.run(scenario)
    assert world.sim.sessions == {}
    assert world.sim.kernels == {}
    outcomes = {e.session_id: e.outcome for e in world.rows("outcome")}
    assert outcomes[notebook.id] in ("executed", "already_absent")
    assert outcomes[console.id] in ("executed", "already_absent", "skipped_changed")
