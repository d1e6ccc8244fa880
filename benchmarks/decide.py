"""(c) The pure decision engine: ``decide()`` over N sessions x P policies, no I/O.

P - 1 policies pass their ``state`` and ``idle_for`` conditions but miss on ``kind``, so every
session is evaluated against every policy; the last policy (idle 2h, no connections, names
``keep-*`` exempt) decides. The measured loop builds a readable reason for every decision.

Lower bound: a trivial loop over the same sessions making the same comparisons for each
(session, policy) pair (state in set, idle time, kind, connections, the exemption), building
nothing. Both loops must agree on how many sessions are acted on.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from benchmarks.common import Measurement, best_of, now, specs
from janitor.model import Session, State, Verdict
from janitor.policy.engine import decide
from janitor.policy.spec import Policy, compile_policy

NAME = "decide"
BOUND = "trivial loop: same comparisons per (session, policy), no reasons"
REPEATS = 3

DEFAULT_CASES = ((10_000, 1), (10_000, 10), (10_000, 50))
QUICK_CASES = ((200, 1), (200, 5))

STATES = (State.IDLE, State.IDLE, State.IDLE, State.BUSY, State.PENDING, State.DEAD)
KINDS = ("notebook", "notebook", "console", "kernel")


def sessions(n: int, at: datetime) -> list[Session]:
    """``n`` sessions with varied states, idle times, kinds, connections and names."""
    rng = random.Random(20261122)  # reproducible test data
    result = []
    for i in range(n):
        state = rng.choice(STATES)
        result.append(
            Session(
                target="bench",
                provider="jupyter",
                id=f"s-{i}",
                name=f"keep-{i}.ipynb" if i % 10 == 0 else f"nb-{i}.ipynb",
                kind=rng.choice(KINDS),
                state=state,
                provider_state=str(state),
                last_activity=at - timedelta(seconds=rng.randrange(0, 10 * 3600)),
                connections=rng.choice((0, 0, 0, 1)),
            )
        )
    return result


def policies(p: int) -> list[Policy]:
    """``p`` compiled policies: ``p - 1`` that miss on kind, then the deciding one."""
    documents: list[dict[str, object]] = [
        {
            "name": f"miss-{i:03d}",
            "priority": i,
            "match": {"state": ["idle"], "idle_for": "1h", "kind": [f"kind-{i}"]},
            "action": "delete",
        }
        for i in range(p - 1)
    ]
    documents.append(
        {
            "name": "idle-notebooks",
            "priority": p,
            "match": {"state": ["idle"], "idle_for": "2h", "max_connections": 0},
            "exempt": {"name": ["keep-*"]},
            "action": "delete",
            "mode": "enforce",
        }
    )
    return [compile_policy(spec, version=1) for spec in specs({"policies": documents})]


@dataclass(frozen=True, slots=True)
class Rule:
    """The baseline's view of one policy: plain values, no condition objects."""

    states: frozenset[State]
    idle: timedelta
    kinds: frozenset[str] | None
    max_connections: int | None
    exempt_prefix: str | None


def rules(p: int) -> list[Rule]:
    """The same policies as :func:`policies`, as plain values."""
    misses = [
        Rule(frozenset({State.IDLE}), timedelta(hours=1), frozenset({f"kind-{i}"}), None, None)
        for i in range(p - 1)
    ]
    return [*misses, Rule(frozenset({State.IDLE}), timedelta(hours=2), None, 0, "keep-")]


def baseline(items: Sequence[Session], plain: Sequence[Rule], at: datetime) -> int:
    """Count the sessions acted on with the cheapest possible loop."""
    acted = 0
    for s in items:
        for rule in plain:
            if s.state not in rule.states or s.last_activity is None:
                continue
            if at - s.last_activity < rule.idle:
                continue
            if rule.kinds is not None and s.kind not in rule.kinds:
                continue
            if rule.max_connections is not None and (s.connections or 0) > rule.max_connections:
                continue
            if rule.exempt_prefix is None or not s.name.startswith(rule.exempt_prefix):
                acted += 1
            break
    return acted


def engine(items: Sequence[Session], compiled: Sequence[Policy], at: datetime) -> int:
    """Count the sessions acted on by ``decide()``."""
    return sum(1 for s in items if decide(s, compiled, at, None).verdict is Verdict.ACT)


def timed_engine(items: Sequence[Session], compiled: Sequence[Policy], at: datetime) -> float:
    """The best of up to REPEATS engine runs; runs longer than a second are not repeated."""
    best = math.inf
    for _ in range(REPEATS):
        started = time.perf_counter()
        engine(items, compiled, at)
        best = min(best, time.perf_counter() - started)
        if best > 1.0:
            break
    return best


def measure(n: int, p: int) -> Measurement:
    """Time both loops over the same sessions and check that they agree."""
    at = now()
    items, compiled, plain = sessions(n, at), policies(p), rules(p)
    expected, acted = baseline(items, plain, at), engine(items, compiled, at)
    if expected != acted:
        raise RuntimeError(f"{NAME}: engine acted on {acted} sessions, baseline on {expected}")
    floor = best_of(REPEATS, lambda: baseline(items, plain, at))
    seconds = timed_engine(items, compiled, at)
    return Measurement(
        benchmark=NAME,
        case=f"n={n} x p={p}",
        seconds=seconds,
        lower_bound=floor,
        bound=BOUND,
        count=n,
        unit="decisions",
        extra={
            "us_per_decision": round(seconds / n * 1e6, 2),
            "us_per_session_policy": round(seconds / (n * p) * 1e6, 3),
            "acted": acted,
        },
    )


def run(cases: Sequence[tuple[int, int]] = DEFAULT_CASES) -> list[Measurement]:
    """Every (N, P) case."""
    return [measure(n, p) for n, p in cases]
