"""``python -m benchmarks [--quick] [--only NAME ...] [--no-postgres] [--no-sequential]``
(``make bench``).

Runs the benchmarks, prints a table of measured time, lower bound and their ratio, and writes
the results as JSON to ``benchmarks/results/<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import audit, decide, enforce, fleet, http_client, list_sweep
from benchmarks.common import Measurement, now, postgres_problem
from janitor import __version__

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What to run."""

    quick: bool
    postgres: bool
    sequential: bool = True


def _list(plan: Plan) -> list[Measurement]:
    return list_sweep.run(list_sweep.QUICK_SIZES if plan.quick else list_sweep.DEFAULT_SIZES)


def _enforce(plan: Plan) -> list[Measurement]:
    return enforce.run(enforce.QUICK_CASES if plan.quick else enforce.DEFAULT_CASES)


def _decide(plan: Plan) -> list[Measurement]:
    return decide.run(decide.QUICK_CASES if plan.quick else decide.DEFAULT_CASES)


def _audit(plan: Plan) -> list[Measurement]:
    cases = list(audit.QUICK_CASES if plan.quick else audit.DEFAULT_CASES)
    if plan.postgres:
        cases += [replace(case, database="postgres") for case in cases]
    return audit.run(cases)


def _http_client(plan: Plan) -> list[Measurement]:
    return http_client.run(http_client.QUICK_CASES if plan.quick else http_client.DEFAULT_CASES)


def _fleet_enforce(plan: Plan) -> list[Measurement]:
    cases = [
        replace(case, sequential=plan.sequential)
        for case in (fleet.QUICK_FLEET if plan.quick else fleet.DEFAULT_FLEET)
    ]
    if plan.postgres:  # S2: the same fleet on PostgreSQL (its sequential baseline is shared)
        cases += [replace(case, database="postgres") for case in cases]
    return fleet.run_fleet(cases)


def _fleet_listing(plan: Plan) -> list[Measurement]:
    return fleet.run_listing(fleet.QUICK_LISTING if plan.quick else fleet.DEFAULT_LISTING)


def _fleet(plan: Plan) -> list[Measurement]:
    return _fleet_enforce(plan) + _fleet_listing(plan)


BENCHMARKS: dict[str, Callable[[Plan], list[Measurement]]] = {
    "list": _list,
    "enforce": _enforce,
    "decide": _decide,
    "audit": _audit,
    "fleet": _fleet,
    "http_client": _http_client,
}
#: Parts of a benchmark, run only when named: ``fleet`` is both.
PARTS: dict[str, Callable[[Plan], list[Measurement]]] = {
    "fleet-enforce": _fleet_enforce,
    "fleet-listing": _fleet_listing,
}

#: Benchmarks that use PostgreSQL when it answers.
USES_POSTGRES = ("audit", "fleet", "fleet-enforce")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="janitor benchmarks against loopback fakes"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted({**BENCHMARKS, **PARTS}),
        metavar="NAME",
        help="run only these",
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="skip PostgreSQL even when it is reachable"
    )
    parser.add_argument(
        "--no-sequential",
        action="store_true",
        help="skip the fleet's sequential baseline (minutes at the default sizes)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the JSON")
    return parser.parse_args(argv)


def format_table(results: Sequence[Measurement]) -> str:
    """The results as an aligned text table."""
    header = ("benchmark", "case", "count", "seconds", "lower bound", "ratio", "per second")
    rows = [
        (
            m.benchmark,
            m.case,
            f"{m.count} {m.unit}",
            f"{m.seconds:.4f}",
            f"{m.lower_bound:.4f}",
            f"{m.ratio:.2f}",
            f"{m.throughput:,.0f}",
        )
        for m in results
    ]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    bounds = dict.fromkeys(f"  {m.benchmark}: {m.bound}" for m in results)
    return "\n".join([*lines, "", "lower bounds:", *bounds])


def write_json(results: Sequence[Measurement], plan: Plan, seconds: float, folder: Path) -> Path:
    """Write the run's results; return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    started = now()
    path = folder / f"{started:%Y%m%dT%H%M%SZ}.json"
    body = {
        "written_at": started.isoformat(),
        "janitor": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": plan.quick,
        "postgres": plan.postgres,
        "seconds": round(seconds, 3),
        "results": [m.as_json() for m in results],
    }
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print, write."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    names = args.only or list(BENCHMARKS)
    postgres = False
    if any(name in USES_POSTGRES for name in names) and not args.no_postgres:
        problem = postgres_problem()
        postgres = problem is None
        if problem:
            print(f"PostgreSQL not reachable, audit and fleet run on SQLite only: {problem}")
    plan = Plan(quick=args.quick, postgres=postgres, sequential=not args.no_sequential)
    started = time.perf_counter()
    results: list[Measurement] = []
    for name in names:
        print(f"running {name} ...", flush=True)
        results += {**BENCHMARKS, **PARTS}[name](plan)
    seconds = time.perf_counter() - started
    print()
    print(format_table(results))
    path = write_json(results, plan, seconds, args.output)
    print(f"\n{len(results)} results in {seconds:.1f}s, written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
