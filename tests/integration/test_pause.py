"""T17: the kill switch stops destructive calls within one pre-call check, on both databases.

A sweep with many enforced deletions runs against the simulated Jupyter server. At a random
point of it (the listing, the k-th re-check GET, or the k-th DELETE) a fault callback commits
``janitor pause`` (``PauseStore.set``) the way the CLI would, in the middle of the sweep.
The transport's request log then shows which DELETEs started after the pause was committed.

Reliability T17 allows exactly one thing there: an action that had already passed its last
pause check when the pause was committed may still make its call ("no destructive call starts
later than one pre-call check"). janitor checks the kill switch before each intent and again
right before the re-check GET (``janitor.actions.execute``), so:

* a pause landing on a DELETE, or before the actions: no DELETE after it;
* a pause landing on a re-check GET: only the DELETE of that very action may follow, and
  not even that one when the GET took longer than ``SLOW_RECHECK`` (0.5 s), after which the
  switch is read once more;
* with several actions in flight: at most one DELETE per action in flight.

Every intent written gets an outcome (``executed`` or ``blocked``: none is left dangling), no
intent is written after the pause except by actions already in flight, and after
``janitor resume`` the next sweep deletes the rest, each session exactly once.

Sizes: CI runs a few pause points per database on a 30-session sweep; under
``JANITOR_TEST_FULL=1`` the sweep has 1,000 deletions (reliability T17).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import FULL, build_runtime, make_config
from tests.fakes.jupyter import Fault, SimTransport, on

SESSIONS = 1000 if FULL else 30
POINTS = ("listing", "recheck", "delete")


@dataclass
class Trigger:
    """Pauses janitor when the ``nth`` matching request arrives."""

    store: Store
    clock: FrozenClock
    transport: SimTransport
    nth: int
    seen: int = 0
    mark: int | None = None  # requests logged up to the pause (they started before it)
    notes: list[str] = field(default_factory=list)

    def __call__(self) -> None:
        self.seen += 1
        if self.seen != self.nth:
            return
        self.store.pause.set(True, reason="incident 42", actor="oncall", now=self.clock.now())
        self.mark = len(self.transport.log)


def _matcher(point: str) -> Fault:
    if point == "listing":
        return Fault(when=on("GET", "api/kernels"), times=1)
    if point == "recheck":
        return Fault(when=lambda m, p: m == "GET" and "api/sessions/" in p, times=10**9)
    return Fault(when=on("DELETE", "api/sessions/"), times=10**9)


@dataclass
class Result:
    first: SweepReport
    second: SweepReport
    deletes_after_pause: int
    deleted_in_first: int


def _run(
    db_url: str, store: Store, clock: FrozenClock, *, point: str, nth: int, concurrency: int
) -> tuple[Result, JupyterSim]:
    sim = JupyterSim(token="test-token", clock=clock)
    for i in range(SESSIONS):
        sim.add_session(f"work/nb-{i}.ipynb", idle_for=timedelta(hours=3))
    transport = SimTransport(sim)
    trigger = Trigger(store=store, clock=clock, transport=transport, nth=nth)
    fault = _matcher(point)
    fault.before = trigger
    transport.add(fault)
    config = make_config(
        db_url,
        targets=[
            {
                "name": "nb",
                "provider": "jupyter",
                "base_url": "http://jupyter.test/",
                "token": "test-token",
                "requests_per_second": 1_000_000,
                "max_concurrency": concurrency,
            }
        ],
    )
    store.policies.apply(
        [
            PolicySpec.model_validate(
                {
                    "name": "idle",
                    "match": {"state": ["idle"], "idle_for": "2h"},
                    "action": "delete",
                    "mode": "enforce",
                }
            )
        ],
        actor="test",
        now=clock.now(),
    )

    async def main() -> Result:
        rt = build_runtime(config, store, {"nb": transport}, clock)
        first = await run_sweep(rt)
        assert trigger.mark is not None, "the pause point was never reached"
        after = transport.log[trigger.mark :]
        deletes_after = sum(1 for method, _ in after if method == "DELETE")
        deleted = sum(sim.deletes.values())
        # janitor resume, then the next sweep carries on
        store.pause.set(False, reason="", actor="oncall", now=clock.now())
        second = await run_sweep(rt)
        return Result(first, second, deletes_after, deleted)

    return asyncio.run(main()), sim


def _cases() -> list[tuple[str, int]]:
    rnd = random.Random(17)
    cases = [("listing", 1), ("recheck", 1), ("delete", 1), ("delete", SESSIONS)]
    extra = 3 if FULL else 2
    for _ in range(extra):
        point = rnd.choice(POINTS[1:])
        cases.append((point, rnd.randint(2, SESSIONS)))
    return cases


@pytest.mark.parametrize(("point", "nth"), _cases())
def test_no_delete_starts_after_the_pause_one_action_at_a_time(
    db_url: str, store: Store, clock: FrozenClock, point: str, nth: int
) -> None:
    result, sim = _run(db_url, store, clock, point=point, nth=nth, concurrency=1)
    report = result.first.targets[0]
    if not (point == "delete" and nth == SESSIONS):  # else nothing was left to stop
        assert report.halted is not None
        assert "paused by oncall: incident 42" in report.halted
    _check_trail(store, sim, result)
    blocked = report.outcomes.get(Outcome.BLOCKED, 0)
    if point == "listing":
        assert result.deletes_after_pause == 0
        assert result.deleted_in_first == 0
        assert report.outcomes == {}  # not even an intent
    elif point == "delete":
        assert result.deletes_after_pause == 0
        assert result.deleted_in_first == nth  # the nth DELETE was already on its way
        assert blocked == 0
    else:
        # the action whose re-check GET was in flight had passed its last pause check: it
        # may finish (one DELETE) or, with a later check, be blocked; nothing else starts
        assert result.deletes_after_pause <= 1
        assert result.deleted_in_first == nth - 1 + result.deletes_after_pause
        assert blocked == 1 - result.deletes_after_pause


@pytest.mark.parametrize("concurrency", [4, 8])
def test_no_delete_starts_later_than_one_pre_call_check_with_concurrent_actions(
    db_url: str, store: Store, clock: FrozenClock, concurrency: int
) -> None:
    rnd = random.Random(concurrency)
    point, nth = rnd.choice(POINTS[1:]), rnd.randint(1, SESSIONS // 2)
    result, sim = _run(db_url, store, clock, point=point, nth=nth, concurrency=concurrency)
    # each action in flight may have passed its last pause check before the commit
    assert result.deletes_after_pause <= concurrency
    assert result.first.targets[0].halted is not None
    _check_trail(store, sim, result, in_flight=concurrency)


def _check_trail(store: Store, sim: JupyterSim, result: Result, in_flight: int = 1) -> None:
    """No dangling intent; executed == deleted; resume finishes the job exactly once."""
    events = store.audit.events()
    intents = {e.id: e for e in events if e.kind is AuditKind.INTENT}
    outcomes = [e for e in events if e.kind is AuditKind.OUTCOME and e.intent_id is not None]
    per_intent = Counter(e.intent_id for e in outcomes)
    assert set(per_intent) == set(intents), "every intent has an outcome"
    assert all(n == 1 for n in per_intent.values())
    first_sweep = {e.intent_id: e.outcome for e in outcomes if e.sweep_id == result.first.sweep_id}
    assert set(first_sweep.values()) <= {Outcome.EXECUTED, Outcome.BLOCKED}
    executed_first = sum(1 for o in first_sweep.values() if o is Outcome.EXECUTED)
    assert executed_first == result.deleted_in_first
    # after the pause, only actions already in flight wrote an intent
    pause_id = next(e.id for e in events if e.kind is AuditKind.PAUSE)
    assert pause_id is not None
    late = [
        i
        for i in intents.values()
        if i.sweep_id == result.first.sweep_id and (i.id or 0) > pause_id
    ]
    assert len(late) <= in_flight - 1
    for event in outcomes:
        if event.outcome is Outcome.BLOCKED:
            assert "paused" in event.reason
    # the pause and the resume are in the trail, in order
    kinds = [e.kind for e in events if e.kind in (AuditKind.PAUSE, AuditKind.RESUME)]
    assert kinds == [AuditKind.PAUSE, AuditKind.RESUME]
    # after resume: everything deleted, each session exactly once
    assert result.second.targets[0].halted is None
    assert sim.sessions == {}
    assert set(sim.deletes.values()) == {1}
    assert len(sim.deletes) == SESSIONS
    assert store.audit.pending_intents("nb") == []
    assert store.audit.verify().ok


def test_a_pause_during_a_slow_recheck_stops_that_delete(
    store: Store, sim: JupyterSim, clock: FrozenClock
) -> None:
    """A re-check slower than SLOW_RECHECK is followed by another look at the kill switch."""
    session = sim.add_session("a.ipynb", idle_for=timedelta(hours=3))
    transport = SimTransport(sim)

    def pause_now() -> None:
        store.pause.set(True, reason="during the GET", actor="t", now=clock.now())

    transport.add(Fault(when=on("GET", "/api/sessions/"), delay=0.6, before=pause_now))
    store.policies.apply(
        [
            PolicySpec.model_validate(
                {
                    "name": "idle",
                    "action": "delete",
                    "mode": "enforce",
                    "match": {"state": ["idle"], "idle_for": "2h"},
                }
            )
        ],
        actor="t",
        now=clock.now(),
    )

    async def main() -> SweepReport:
        rt = build_runtime(make_config(str(store.db.url)), store, {"nb": transport}, clock)
        return await run_sweep(rt)

    asyncio.run(main())
    assert not any(method == "DELETE" for method, _ in transport.log)
    assert session.id in sim.sessions
    (outcome,) = store.audit.events(kinds=[AuditKind.OUTCOME])
    assert outcome.outcome == Outcome.BLOCKED
    assert "during the GET" in outcome.reason
