"""(a) A daemon sweep over N sessions with a dry-run policy, against the loopback simulator.

The sweep lists over real HTTP, decides every session, writes the ``would_act`` and skip rows
and saves janitor's memory of each session on SQLite. Two cases per N: the first sweep (every
row is new) and a repeat sweep (rows are written only where a reason changed, so it is mostly
listing, deciding and saving the memory).

Lower bound: the simulator's own time to build and serialize the two listings
(``GET api/kernels`` and ``GET api/sessions``), measured separately without HTTP. The plain
HTTP fetch of the same listings with httpx is reported as ``http_fetch_s`` for context.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import httpx

from benchmarks.common import (
    TOKEN,
    Extra,
    Measurement,
    best_of,
    jupyter_config,
    listing_time,
    now,
    served,
    specs,
    sqlite_store,
)
from janitor.model import Outcome
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep

NAME = "list_sweep"
BOUND = "simulator's own time to serialize both listings"
DEFAULT_SIZES = (1_000, 10_000)
QUICK_SIZES = (50,)

POLICIES = {
    "policies": [
        {
            "name": "idle-preview",
            "match": {"state": ["idle"], "idle_for": "1h", "max_connections": 0},
            "exempt": {"name": ["keep-*"]},
            "action": "delete",
            "mode": "dry-run",
        }
    ]
}


@dataclass(frozen=True, slots=True)
class Population:
    """What the simulator holds: half idle 3h (matched), a quarter idle 10m, a quarter busy."""

    total: int
    matched: int


def populate(sim: JupyterSim, n: int) -> Population:
    """Add ``n`` sessions to ``sim``."""
    matched = 0
    for i in range(n):
        slot = i % 4
        if slot in (0, 1):
            sim.add_session(f"work/nb-{i}.ipynb", idle_for=timedelta(hours=3))
            matched += 1
        elif slot == 2:
            sim.add_session(f"work/recent-{i}.ipynb", idle_for=timedelta(minutes=10))
        else:
            sim.add_session(f"work/train-{i}.ipynb", state="busy", idle_for=timedelta(hours=5))
    return Population(total=n, matched=matched)


def http_fetch_time(base_url: str, repeats: int = 3) -> float:
    """Plain httpx GETs of both listings, with JSON decoding: the HTTP floor, for context."""
    headers = {"authorization": f"token {TOKEN}"}
    with httpx.Client(base_url=base_url, headers=headers, trust_env=False) as client:

        def fetch() -> None:
            for path in ("api/kernels", "api/sessions"):
                client.get(path, params={"no_track_activity": "1"}).json()

        return best_of(repeats, fetch)


async def _two_sweeps(cfg: Config, store: Store) -> tuple[SweepReport, SweepReport]:
    rt = Runtime.build(cfg, store=store)
    try:
        first = await run_sweep(rt)
        repeat = await run_sweep(rt)
    finally:
        await rt.aclose()
    return first, repeat


def _check(report: SweepReport, population: Population, *, first: bool) -> None:
    target = report.targets[0]
    listed = sum(target.sessions.values())
    if report.failed or listed != population.total:
        raise RuntimeError(f"{NAME}: sweep failed or listed {listed} of {population.total}")
    would = target.outcomes.get(Outcome.WOULD_ACT, 0)
    expected = population.matched if first else 0
    if would != expected:
        raise RuntimeError(f"{NAME}: {would} would_act rows, expected {expected}")


def measure(n: int) -> list[Measurement]:
    """Both cases for one N."""
    sim = JupyterSim(token=TOKEN)
    population = populate(sim, n)
    floor = listing_time(sim)
    with served(sim) as base_url, sqlite_store() as (db_url, store):
        store.policies.apply(specs(POLICIES), actor="benchmark", now=now())
        fetch = http_fetch_time(base_url)
        cfg = jupyter_config(db_url, base_url, requests_per_second=1000.0)
        first, repeat = asyncio.run(_two_sweeps(cfg, store))
        rows, _ = store.audit.head()
    _check(first, population, first=True)
    _check(repeat, population, first=False)
    extra: Extra = {
        "http_fetch_s": round(fetch, 6),
        "audit_rows": rows,
        "matched": population.matched,
    }
    return [
        Measurement(
            benchmark=NAME,
            case=f"n={n} first sweep",
            seconds=first.seconds,
            lower_bound=floor,
            bound=BOUND,
            count=n,
            unit="sessions",
            extra=extra,
        ),
        Measurement(
            benchmark=NAME,
            case=f"n={n} repeat sweep",
            seconds=repeat.seconds,
            lower_bound=floor,
            bound=BOUND,
            count=n,
            unit="sessions",
            extra={"http_fetch_s": round(fetch, 6)},
        ),
    ]


def run(sizes: Sequence[int] = DEFAULT_SIZES) -> list[Measurement]:
    """Every size."""
    return [m for n in sizes for m in measure(n)]
