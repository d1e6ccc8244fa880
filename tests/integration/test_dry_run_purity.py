"""T18: dry-run is pure. Every way of previewing makes zero mutating requests.

The provider transport and the webhook transport fail the test on any DELETE, POST, PATCH or
PUT (recording it first, so even a caller that swallowed the failure is caught at the end).
Covered, on SQLite and PostgreSQL:

* ``janitor sweep --dry-run`` (``run_sweep(rt, dry_run=True, record=False)``) over enforced
  policies: no mutating request, and no observation row written or changed;
* dry-run policies (including grace and notify ones) in a normal daemon sweep;
* the global ``dry_run = true`` setting over enforced policies;
* ``janitor explain`` (``explain_targets``): no mutating request and no row written at all.

Previews are recorded, deliveries are not: ``would_act`` outcome rows, and "would warn" rows
(kind ``warn``, outcome ``would_act``) for enforced grace policies under a dry run; no
warning is sent and no grace starts (no mark gets a ``warned_at``).

The fleet has sessions every kind of policy would act on: idle ones (delete), ones under a
grace policy (warn), a dead kernel (notify) and a long-busy one (a policy listing ``busy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from janitor.clock import FrozenClock
from janitor.explain import explain_targets
from janitor.model import AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.runtime import Runtime
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.store.tables import AuditRow, ObservationRow
from janitor.sweep import run_sweep
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import SimTransport

MUTATING = frozenset({"DELETE", "POST", "PATCH", "PUT"})
WEBHOOK = {"webhook_url": "https://hooks.example.test/janitor"}


class ReadOnlyTransport(SimTransport):
    """The simulator, but any mutating request fails the test."""

    def __init__(self, sim: JupyterSim) -> None:
        super().__init__(sim)
        self.mutations: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer reads from the simulator; fail on writes."""
        if request.method in MUTATING:
            self.mutations.append((request.method, request.url.path))
            pytest.fail(f"dry-run made a mutating request: {request.method} {request.url.path}")
        return await super().handle_async_request(request)


class NoWebhook:
    """A webhook endpoint that must not be called (no warning, no notification)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url}: {request.content[:200]!r}")
        pytest.fail(f"dry-run called the webhook: {request.method} {request.content[:200]!r}")


def _policies(mode: str) -> list[PolicySpec]:
    specs: list[dict[str, Any]] = [
        {
            "name": "graceful",
            "priority": 10,
            "match": {"name": "grace-*", "idle_for": "1h"},
            "action": "delete",
            "grace": "30m",
        },
        {"name": "dead", "priority": 20, "match": {"state": ["dead"]}, "action": "notify"},
        {
            "name": "stuck",
            "priority": 30,
            "match": {"state": ["busy"], "idle_for": "12h"},
            "action": "delete",
        },
        {
            "name": "idle",
            "priority": 100,
            "match": {"state": ["idle"], "idle_for": "2h", "max_connections": 0},
            "exempt": {"name": ["keep-*"]},
            "action": "delete",
        },
    ]
    return [PolicySpec.model_validate({**spec, "mode": mode}) for spec in specs]


def _fleet(sim: JupyterSim) -> None:
    for i in range(5):
        sim.add_session(f"work/idle-{i}.ipynb", idle_for=timedelta(hours=3))
    for i in range(3):
        sim.add_session(f"work/grace-{i}.ipynb", idle_for=timedelta(hours=2))
    sim.add_session("work/keep-me.ipynb", idle_for=timedelta(days=3))
    sim.add_session("work/stuck.ipynb", state="busy", idle_for=timedelta(days=1))
    sim.add_session("work/busy.ipynb", state="busy", idle_for=timedelta(minutes=5))
    sim.add_kernel(state="dead", idle_for=timedelta(days=2))


class World:
    def __init__(self, db_url: str, store: Store, clock: FrozenClock, **settings: Any) -> None:
        self.store, self.clock = store, clock
        self.sim = JupyterSim(token="test-token", clock=clock)
        _fleet(self.sim)
        self.transport = ReadOnlyTransport(self.sim)
        self.webhook = NoWebhook()
        self.config = make_config(db_url, notify=WEBHOOK, **settings)

    def apply(self, mode: str) -> None:
        self.store.policies.apply(_policies(mode), actor="test", now=self.clock.now())

    def run(self, scenario: Callable[[Runtime], Awaitable[None]]) -> None:
        async def main() -> None:
            rt = build_runtime(
                self.config,
                self.store,
                {"nb": self.transport},
                self.clock,
                webhook_transport=self.webhook.transport(),
            )
            await scenario(rt)

        asyncio.run(main())
        assert self.transport.mutations == []
        assert self.webhook.calls == []
        assert self.sim.deletes == {}

    def observations(self) -> list[tuple[Any, ...]]:
        with self.store.db.transaction() as tx:
            rows = tx.scalars(select(ObservationRow).order_by(ObservationRow.session_id))
            return [
                tuple(getattr(row, c.key) for c in ObservationRow.__table__.columns) for row in rows
            ]

    def audit_count(self) -> int:
        with self.store.db.transaction() as tx:
            return int(tx.scalar(select(func.count(AuditRow.id))) or 0)

    def kinds(self) -> list[AuditKind]:
        return [e.kind for e in self.store.audit.events()]


@pytest.fixture
def world(db_url: str, store: Store, clock: FrozenClock) -> World:
    return World(db_url, store, clock)


def _warnings(store: Store) -> tuple[set[str], list[str]]:
    """(sessions with a "would warn" preview row, any warning row that is not a preview)."""
    previews, delivered = set(), []
    for event in store.audit.events(kinds=[AuditKind.WARN.value]):
        if event.outcome is Outcome.WOULD_ACT and event.dry_run:
            previews.add(event.session_name or "")
        else:
            delivered.append(f"{event.session_name}: {event.reason}")
    return previews, delivered


def _would_act(store: Store) -> set[str]:
    return {
        e.session_name or ""
        for e in store.audit.events()
        if e.kind is AuditKind.OUTCOME and e.outcome is Outcome.WOULD_ACT
    }


def test_sweep_dry_run_makes_no_request_and_writes_no_memory(world: World) -> None:
    # a normal sweep with dry-run policies first, so there is a memory to leave untouched
    world.apply("dry-run")
    world.run(lambda rt: _sweeps(rt, 1))
    remembered = world.observations()
    assert len(remembered) == 12
    world.apply("enforce")
    world.clock.advance(timedelta(hours=1))
    world.run(lambda rt: _sweeps(rt, 2, dry_run=True, record=False))
    assert world.observations() == remembered
    kinds = world.kinds()
    assert AuditKind.INTENT not in kinds
    previews, delivered = _warnings(world.store)
    assert delivered == []
    assert previews == {"grace-0.ipynb", "grace-1.ipynb", "grace-2.ipynb"}  # enforced: warn
    names = _would_act(world.store)
    assert {"idle-0.ipynb", "stuck.ipynb"} <= names
    assert "keep-me.ipynb" not in names
    assert "busy.ipynb" not in names


def test_sweep_dry_run_on_a_fresh_database_writes_no_observation(world: World) -> None:
    world.apply("enforce")
    world.run(lambda rt: _sweeps(rt, 1, dry_run=True, record=False))
    assert world.observations() == []
    assert _would_act(world.store)


def test_dry_run_policies_in_a_daemon_sweep(world: World) -> None:
    world.apply("dry-run")

    async def scenario(rt: Runtime) -> None:
        for _ in range(3):  # grace policies would warn, notify would send: none of it
            await run_sweep(rt)
            world.clock.advance(timedelta(hours=1))

    world.run(scenario)
    kinds = world.kinds()
    assert AuditKind.INTENT not in kinds
    assert AuditKind.WARN not in kinds  # dry-run policies never warn: they report would_act
    assert {"idle-0.ipynb", "stuck.ipynb", "grace-0.ipynb"} <= _would_act(world.store)
    assert all(h.mark is None for h in world.store.observations.load("nb").values())


def test_global_dry_run_setting_over_enforced_policies(
    db_url: str, store: Store, clock: FrozenClock
) -> None:
    world = World(db_url, store, clock, dry_run=True)
    world.apply("enforce")

    async def scenario(rt: Runtime) -> None:
        for _ in range(3):
            report = await run_sweep(rt)
            assert report.dry_run
            world.clock.advance(timedelta(hours=1))

    world.run(scenario)
    kinds = world.kinds()
    assert AuditKind.INTENT not in kinds
    previews, delivered = _warnings(store)
    assert delivered == []
    assert previews == {"grace-0.ipynb", "grace-1.ipynb", "grace-2.ipynb"}
    # enforced grace policies decide "warn": nothing is sent, so no grace ever starts
    assert {"idle-0.ipynb", "stuck.ipynb"} <= _would_act(store)
    marks = [h.mark for h in store.observations.load("nb").values() if h.mark is not None]
    assert all(mark.warned_at is None for mark in marks)


@pytest.mark.parametrize("mode", ["enforce", "dry-run"])
def test_explain_makes_no_request_and_writes_nothing(world: World, mode: str) -> None:
    world.apply(mode)
    before_rows, before_memory = world.audit_count(), world.observations()

    async def scenario(rt: Runtime) -> None:
        rows, failures = await explain_targets(rt)
        assert failures == []
        verdicts = {row["session"]: row["verdict"] for row in rows}
        # a dry-run policy's act is shown as would_act (the operator-experience issue)
        acts = "act" if mode == "enforce" else "would_act"
        assert verdicts["idle-0.ipynb"] == acts
        assert verdicts["grace-0.ipynb"] == ("warn" if mode == "enforce" else "would_act")
        assert verdicts["keep-me.ipynb"] == "skip"

    world.run(scenario)
    assert world.audit_count() == before_rows
    assert world.observations() == before_memory


async def _sweeps(rt: Runtime, count: int, **kw: Any) -> None:
    for _ in range(count):
        report = await run_sweep(rt, **kw)
        assert not report.failed, report.summary()


def test_the_read_only_transport_catches_a_mutation() -> None:
    """The guard itself: a DELETE fails the test, and is recorded even if swallowed."""
    transport = ReadOnlyTransport(JupyterSim(token=None))
    request = httpx.Request("DELETE", "http://jupyter.test/api/sessions/s-1")
    with pytest.raises(pytest.fail.Exception):
        asyncio.run(transport.handle_async_request(request))
    assert transport.mutations == [("DELETE", "/api/sessions/s-1")]
