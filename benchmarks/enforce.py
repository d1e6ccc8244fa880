"""(b) An enforce sweep deleting N idle sessions at a request rate and concurrency cap.

Every delete goes the whole safe path: intent row committed under the lease's fencing token,
re-check GET, a fresh decision, the kill-switch check, DELETE, outcome row (SQLite). The run
checks afterwards that the simulator saw exactly one DELETE per session.

Lower bound: the requests the sweep must send (2 listing GETs + N re-check GETs + N DELETEs)
at the target's ``requests_per_second``. The token bucket starts full (``burst`` = the rate,
at least 1 token), so the bound is ``(requests - burst) / rate``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from benchmarks.common import TOKEN, Measurement, jupyter_config, now, served, specs, sqlite_store
from janitor.model import Outcome
from janitor.runtime import Runtime
from janitor.settings import Config
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep

NAME = "enforce_sweep"
BOUND = "(2 + 2N requests - burst) / requests_per_second"

POLICIES = {
    "policies": [
        {
            "name": "idle-notebooks",
            "match": {"state": ["idle"], "idle_for": "1h", "max_connections": 0},
            "action": "delete",
            "mode": "enforce",
        }
    ]
}


@dataclass(frozen=True, slots=True)
class Case:
    """N sessions to delete, the target's request rate and its concurrency cap."""

    n: int
    rate: float
    concurrency: int

    @property
    def label(self) -> str:
        """How the case is shown in the table."""
        return f"n={self.n} rate={self.rate:g}/s conc={self.concurrency}"

    @property
    def requests(self) -> int:
        """Requests the sweep needs: two listings, then a re-check and a DELETE per session."""
        return 2 + 2 * self.n

    @property
    def lower_bound(self) -> float:
        """Seconds the request budget allows at best."""
        burst = max(1.0, self.rate)
        return max(0.0, self.requests - burst) / self.rate


DEFAULT_CASES = (Case(1_000, 200.0, 8), Case(200, 50.0, 2))
QUICK_CASES = (Case(20, 40.0, 4),)


async def _sweep(cfg: Config, store: Store) -> SweepReport:
    rt = Runtime.build(cfg, store=store)
    try:
        return await run_sweep(rt)
    finally:
        await rt.aclose()


def measure(case: Case) -> Measurement:
    """Delete ``case.n`` sessions in one sweep and check every one was deleted once."""
    sim = JupyterSim(token=TOKEN)
    for i in range(case.n):
        sim.add_session(f"work/nb-{i}.ipynb", idle_for=timedelta(hours=3))
    with served(sim) as base_url, sqlite_store() as (db_url, store):
        store.policies.apply(specs(POLICIES), actor="benchmark", now=now())
        cfg = jupyter_config(
            db_url,
            base_url,
            requests_per_second=case.rate,
            max_concurrency=case.concurrency,
        )
        report = asyncio.run(_sweep(cfg, store))
        rows, _ = store.audit.head()
    executed = report.targets[0].outcomes.get(Outcome.EXECUTED, 0)
    once = all(count == 1 for count in sim.deletes.values())
    if report.failed or executed != case.n or len(sim.deletes) != case.n or not once:
        raise RuntimeError(
            f"{NAME} {case.label}: {executed} executed, {len(sim.deletes)} sessions deleted, "
            f"each once: {once}"
        )
    return Measurement(
        benchmark=NAME,
        case=case.label,
        seconds=report.seconds,
        lower_bound=case.lower_bound,
        bound=BOUND,
        count=case.n,
        unit="deletes",
        extra={
            "requests": case.requests,
            "requests_per_s": round(case.requests / report.seconds, 1),
            "audit_rows": rows,
        },
    )


def run(cases: Sequence[Case] = DEFAULT_CASES) -> list[Measurement]:
    """Every case."""
    return [measure(case) for case in cases]
