"""(c) The pure decision engine: ``decide()`` over N sessions x P policies, no I/O.

P - 1 policies pass their ``state`` and ``idle_for`` conditions but miss on ``kind``, so every
session is evaluated against every policy; the last policy (idle 2h, no connections, names
``keep-*`` exempt) decides. The measured loop is ``decide()`` over policies compiled once (as
a sweep compiles them once per listing), building the readable reason of every decision.

S3 (issue 11): the same mix at 20 policies over 1,000,000 sessions on one core, with 10 and
50 policies for the scaling picture; the sessions are built first and only ``decide()`` is
timed. The target is 200,000 sessions/s (``extra["s3_target_per_second"]``); no test asserts it.

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
from janitor.policy.engine import CompiledPolicies, decide
from janitor.policy.spec import Policy, compile_policy

NAME = "decide"
BOUND = "trivial loop: same comparisons per (session, policy), no reasons"
REPEATS = 3

#: The S3 cases: 1,000,000 sessions at 10, 20 (the target) and 50 policies.
S3_SESSIONS = 1_000_000
S3_CASES = ((S3_SESSIONS, 10), (S3_SESSIONS, 20), (S3_SESSIONS, 50))
#: S3's target at 20 policies, in sessions per second on one core.
S3_TARGET = 200_000

DEFAULT_CASES = ((10_000, 1), (10_000, 10), (10_000, 50), *S3_CASES)
#: ``--quick``: tiny sizes, with the S3 shape (20 policies) kept.
QUICK_CASES = ((200, 1), (200, 5), (2_000, 20))

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
    """Count the sessions acted on by ``decide()``, the policies compiled once for all."""
    once = CompiledPolicies(compiled)
    return sum(1 for s in items if decide(s, once, at, None).verdict is Verdict.ACT)


def timed_engine(items: Sequence[Session], compiled: Sequence[Policy], at: datetime) -> float:
    """The best of up to REPEATS engine runs; runs longer than a second are not repeated.

    Each run compiles the policies afresh (as each sweep does), so no run inherits another's
    routes.
    """
    best = math.inf
    for _ in range(REPEATS):
        started = time.perf_counter()
        engine(items, compiled, at)
        best = min(best, time.perf_counter() - started)
        if best > 1.0:
            break
    return best


def measure(
    n: int, p: int, *, at: datetime | None = None, items: Sequence[Session] = ()
) -> Measurement:
    """Time both loops over the same sessions and check that they agree.

    ``at`` and ``items`` reuse sessions built for an earlier case of the same size.
    """
    at = at or now()
    items = items or sessions(n, at)
    compiled, plain = policies(p), rules(p)
    expected, acted = baseline(items, plain, at), engine(items, compiled, at)
    if expected != acted:
        raise RuntimeError(f"{NAME}: engine acted on {acted} sessions, baseline on {expected}")
    floor = best_of(REPEATS if n * p <= 10**6 else 1, lambda: baseline(items, plain, at))
    seconds = timed_engine(items, compiled, at)
    extra: dict[str, float | int | str] = {
        "us_per_decision": round(seconds / n * 1e6, 2),
        "us_per_session_policy": round(seconds / (n * p) * 1e6, 3),
        "acted": acted,
    }
    if n >= S3_SESSIONS:
        extra["s3_target_per_second"] = S3_TARGET
    return Measurement(
        benchmark=NAME,
        case=f"n={n} x p={p}",
        seconds=seconds,
        lower_bound=floor,
        bound=BOUND,
        count=n,
        unit="decisions",
        extra=extra,
    )


def run(cases: Sequence[tuple[int, int]] = DEFAULT_CASES) -> list[Measurement]:
    """Every (N, P) case; cases of one size share their sessions (built once, not timed)."""
    at = now()
    built: dict[int, list[Session]] = {}
    results = []
    for n, p in cases:
        if n not in built:
            built.clear()  # one size in memory at a time (a million sessions is ~0.5 GB)
            built[n] = sessions(n, at)
        results.append(measure(n, p, at=at, items=built[n]))
    return results
