"""Fleet scenarios: ``janitor sweep`` run as an operator runs it, against fake servers in
their own processes.

* **S1** (``fleet``, SQLite) and **S2** (``fleet``, PostgreSQL): T Jupyter targets × N
  sessions, every tenth idle past an enforce policy, each fake answering after a latency and
  allowing R requests/s (429 with ``Retry-After`` above it), ``requests_per_second = R`` on
  every target. One ``janitor sweep`` (the real CLI in a subprocess, with a generated config);
  afterwards every fake says how many DELETEs it served per id: each idle session must have
  been deleted exactly once, and nothing else.
* **Sequential baseline** (``fleet_sequential``): the same job done by a plain httpx script,
  one request at a time, no janitor: list each target, then for each idle session GET it and
  DELETE it, never faster than R requests/s per server.
* **S4** (``fleet_listing``): one target with N sessions (half idle past a dry-run policy),
  one recorded first sweep (every decision, audit row, memory and history row is new), on
  SQLite; the janitor process's CPU time comes from ``wait4``, its peak RSS from its
  ``VmHWM``.

Lower bounds:

* S1/S2: per target, the requests janitor must make (2 listings + a re-check GET and a DELETE
  per idle session) at R requests/s, less the token bucket's initial burst (R tokens), plus
  the latency of the last request: ``(2 + 2I - R) / R + latency``. Targets run in parallel,
  so the fleet's bound is the largest target's.
* Sequential baseline: the same requests one after another, each no shorter than the
  latency, nor starting sooner than ``1/R`` after the previous one: ``requests × max(latency,
  1/R)`` summed over the targets.
* S4: the fake's own time to build and send both listings (reported by the fake).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks import enforce, list_sweep
from benchmarks.common import TOKEN, Measurement, now, open_store, specs
from janitor.model import Outcome

ROOT = Path(__file__).resolve().parent.parent
FLEET = "fleet"
SEQUENTIAL = "fleet_sequential"
LISTING = "fleet_listing"
FLEET_BOUND = "max over targets of (2 + 2*idle - rate) / rate + latency"
SEQUENTIAL_BOUND = "sum over targets of (2 + 2*idle) * max(latency, 1/rate)"
LISTING_BOUND = "fake server's own time to build and send both listings"

#: S1/S2's policy: the enforce sweep benchmark's (idle 1h, no connections, delete).
ENFORCE = enforce.POLICIES
#: S4's policy: the listing benchmark's dry-run preview.
DRY_RUN = list_sweep.POLICIES


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetCase:
    """T targets of N sessions (every ``idle_every``-th idle), latency, rate, concurrency."""

    targets: int
    sessions: int
    idle_every: int = 10
    latency: float = 0.020
    rate: float = 50.0
    concurrency: int = 8
    database: str = "sqlite"
    sequential: bool = True

    @property
    def label(self) -> str:
        """How the case is shown in the table."""
        return (
            f"{self.database} {self.targets}x{self.sessions} idle=1/{self.idle_every} "
            f"rate={self.rate:g}/s latency={self.latency * 1000:g}ms"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingCase:
    """One target of N sessions, half of them idle past a dry-run policy."""

    sessions: int

    @property
    def label(self) -> str:
        """How the case is shown in the table."""
        return f"sqlite n={self.sessions} first dry-run sweep"


DEFAULT_FLEET = (FleetCase(targets=10, sessions=10_000),)
QUICK_FLEET = (FleetCase(targets=2, sessions=400, latency=0.005),)
DEFAULT_LISTING = (
    ListingCase(sessions=1_000),
    ListingCase(sessions=10_000),
    ListingCase(sessions=100_000),
)
QUICK_LISTING = (ListingCase(sessions=100), ListingCase(sessions=1_000))


# --- the fakes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fake:
    """A running fake server process."""

    process: subprocess.Popen[str]
    url: str
    idle: int

    def stats(self) -> dict[str, Any]:
        """The fake's counters (DELETEs per id, throttled requests, listing time)."""
        body: dict[str, Any] = httpx.get(self.url + "_bench/stats", trust_env=False).json()
        return body


@contextlib.contextmanager
def fakes(count: int, *args: str) -> Iterator[list[Fake]]:
    """``count`` fake server processes started with ``args``; stopped on exit."""
    command = [sys.executable, "-m", "benchmarks.fakeserver", "--token", TOKEN, *args]
    processes = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(count)
    ]
    try:
        running = []
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"fake server exited with {process.wait()}")
            hello = json.loads(line)
            running.append(Fake(process, hello["url"], hello["idle"]))
        yield running
    finally:
        for process in processes:
            if process.stdin:
                process.stdin.close()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout:
                process.stdout.close()


def fake_args(
    sessions: int, *, idle_every: int = 10, latency: float = 0.0, rate: float = 0.0
) -> list[str]:
    """The command line of a fake server."""
    return [
        "--sessions",
        str(sessions),
        "--idle-every",
        str(idle_every),
        "--latency",
        str(latency),
        "--rate",
        str(rate),
    ]


# --- janitor, run as an operator runs it ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    """One ``janitor sweep`` process: its summary, wall time, CPU time and peak RSS."""

    summary: dict[str, Any]
    wall: float
    cpu: float
    max_rss_mb: float


def write_config(folder: Path, db_url: str, urls: Sequence[str], **target: Any) -> Path:
    """A janitor.toml with one jupyter target per URL (``t00``, ``t01``, ...)."""
    lines = [f"database_url = {json.dumps(db_url)}", ""]
    for i, url in enumerate(urls):
        lines += [
            "[[targets]]",
            f'name = "t{i:02d}"',
            'provider = "jupyter"',
            f"base_url = {json.dumps(url)}",
            f"token = {json.dumps(TOKEN)}",
            *(f"{key} = {json.dumps(value)}" for key, value in target.items()),
            "",
        ]
    path = folder / "janitor.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def janitor_sweep(config: Path) -> Run:
    """Run ``janitor sweep -o json`` in its own process; measure its time, CPU and peak RSS."""
    command = [sys.executable, "-m", "janitor", "-c", str(config), "sweep", "-o", "json"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        status, usage, peak_kb = _wait_measuring(process.pid)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    try:
        summary = json.loads(stdout)
    except ValueError:
        raise RuntimeError(
            f"janitor sweep exited {process.returncode}: {stderr.strip()[-2000:]}"
        ) from None
    return Run(
        summary=summary,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_mb=peak_kb / 1024,
    )


def _wait_measuring(pid: int) -> tuple[int, Any, int]:
    """Wait for ``pid``; return its wait status, its rusage and its peak RSS in kB.

    The peak is the process's own ``VmHWM`` (read from ``/proc`` every 20 ms: it only
    grows, so the last read is the peak up to then). ``ru_maxrss`` from ``wait4`` is not
    used: a child started with vfork and exec carries the parent's RSS into it on Linux.
    """
    peak_kb = 0
    status_file = Path(f"/proc/{pid}/status")
    while True:
        with contextlib.suppress(OSError):
            for line in status_file.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak_kb
        time.sleep(0.02)


# --- S1 / S2 --------------------------------------------------------------------------------


def fleet_bound(case: FleetCase, idle: Sequence[int]) -> float:
    """The largest target's floor: its requests at the rate, less the burst, plus latency."""
    return max(max(0.0, 2 + 2 * n - case.rate) / case.rate + case.latency for n in idle)


def sequential_bound(case: FleetCase, idle: Sequence[int]) -> float:
    """One request at a time: each at least the latency and at least 1/rate apart."""
    return sum((2 + 2 * n) * max(case.latency, 1 / case.rate) for n in idle)


def check_deleted_once(label: str, fleet: Sequence[Fake], idle_ids: Sequence[set[str]]) -> int:
    """Every idle session deleted exactly once, nothing else deleted; return the deletions."""
    total = 0
    for fake, expected in zip(fleet, idle_ids, strict=True):
        deletes: dict[str, int] = fake.stats()["deletes"]
        if set(deletes) != expected or any(count != 1 for count in deletes.values()):
            twice = sum(1 for count in deletes.values() if count != 1)
            raise RuntimeError(
                f"{label}: {fake.url} served DELETEs for {len(deletes)} ids "
                f"({twice} more than once), expected {len(expected)} idle sessions once each"
            )
        total += len(deletes)
    return total


def idle_ids(fake: Fake) -> set[str]:
    """The ids of the fake's sessions idle past the policy, read from its listing."""
    listing = httpx.get(
        fake.url + "api/sessions",
        headers={"authorization": f"token {TOKEN}"},
        params={"no_track_activity": "1"},
        trust_env=False,
        timeout=60,
    ).json()
    return {s["id"] for s in listing if s["path"].startswith("work/idle-")}


def measure_fleet(case: FleetCase) -> Measurement:
    """S1/S2: one enforce ``janitor sweep`` over the fleet, checked and measured."""
    args = fake_args(
        case.sessions, idle_every=case.idle_every, latency=case.latency, rate=case.rate
    )
    with fakes(case.targets, *args) as fleet, open_store(case.database) as (db_url, store):
        expected = [idle_ids(f) for f in fleet]
        # reading the listings above spent tokens of each fake's bucket: let them refill
        time.sleep(1.0 + 2 * case.latency)
        store.policies.apply(specs(ENFORCE), actor="benchmark", now=now())
        with tempfile.TemporaryDirectory(prefix="janitor-fleet-") as tmp:
            config = write_config(
                Path(tmp),
                db_url,
                [f.url for f in fleet],
                requests_per_second=case.rate,
                max_concurrency=case.concurrency,
            )
            run = janitor_sweep(config)
        rows, _ = store.audit.head()
        failed = [t for t in run.summary["targets"] if t["error"] or t["halted"]]
        if failed:
            raise RuntimeError(f"{FLEET} {case.label}: targets failed: {failed}")
        deleted = check_deleted_once(case.label, fleet, expected)
        throttled = sum(f.stats()["throttled"] for f in fleet)
    executed = sum(t["outcomes"].get(str(Outcome.EXECUTED), 0) for t in run.summary["targets"])
    idle = [len(ids) for ids in expected]
    if run.summary["failed"] or executed != sum(idle):
        raise RuntimeError(
            f"{FLEET} {case.label}: {executed} executed of {sum(idle)}: {run.summary}"
        )
    seconds = float(run.summary["seconds"])
    return Measurement(
        benchmark=FLEET,
        case=case.label,
        seconds=seconds,
        lower_bound=fleet_bound(case, idle),
        bound=FLEET_BOUND,
        count=deleted,
        unit="deletes",
        extra={
            "database": case.database,
            "targets": case.targets,
            "sessions_per_target": case.sessions,
            "requests": sum(2 + 2 * n for n in idle),
            "deleted_exactly_once": deleted,
            "throttled_429": throttled,
            "max_concurrency": case.concurrency,
            "process_wall_s": round(run.wall, 3),
            "janitor_cpu_s": round(run.cpu, 3),
            "janitor_cpu_ms_per_delete": round(1000 * run.cpu / max(1, deleted), 3),
            "janitor_max_rss_mb": round(run.max_rss_mb, 1),
            "audit_rows": rows,
        },
    )


def failed(case: FleetCase, error: str) -> Measurement:
    """The record of a case whose sweep failed (its time is infinite: no ratio)."""
    return Measurement(
        benchmark=FLEET,
        case=case.label,
        seconds=math.inf,
        lower_bound=0.0,
        bound=FLEET_BOUND,
        count=0,
        unit="deletes",
        extra={"database": case.database, "error": error[:2000]},
    )


def sequential_job(fake: Fake, rate: float) -> int:
    """List the fake, then GET and DELETE each idle session, one request at a time, paced
    to ``rate`` requests/s; return the deletions."""
    interval = 1.0 / rate
    headers = {"authorization": f"token {TOKEN}"}
    params = {"no_track_activity": "1"}
    last = 0.0
    with httpx.Client(base_url=fake.url, headers=headers, params=params, trust_env=False) as client:

        def request(method: str, path: str) -> httpx.Response:
            nonlocal last
            delay = last + interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last = time.monotonic()
            response = client.request(method, path, timeout=60)
            if response.status_code == 429:
                raise RuntimeError(f"{SEQUENTIAL}: throttled by {fake.url}")
            return response

        kernels = {k["id"]: k for k in request("GET", "api/kernels").json()}
        sessions = request("GET", "api/sessions").json()
        deleted = 0
        for session in sessions:
            if not _idle_past_policy(session, kernels):
                continue
            fresh = request("GET", f"api/sessions/{session['id']}")
            if fresh.status_code != 200 or not _idle_past_policy(fresh.json(), kernels):
                continue
            if request("DELETE", f"api/sessions/{session['id']}").status_code == 204:
                deleted += 1
    return deleted


def _idle_past_policy(session: dict[str, Any], kernels: dict[str, Any]) -> bool:
    kernel = session.get("kernel") or kernels.get(session.get("kernel_id", ""), {})
    if kernel.get("execution_state") != "idle" or kernel.get("connections"):
        return False
    last = datetime.fromisoformat(kernel["last_activity"])
    return (now() - last).total_seconds() > 3600


def measure_sequential(case: FleetCase) -> Measurement:
    """The sequential baseline over a fresh fleet of fakes."""
    args = fake_args(
        case.sessions, idle_every=case.idle_every, latency=case.latency, rate=case.rate
    )
    with fakes(case.targets, *args) as fleet:
        expected = [idle_ids(f) for f in fleet]
        time.sleep(1.0 + 2 * case.latency)
        started = time.perf_counter()
        for fake in fleet:
            sequential_job(fake, case.rate)
        seconds = time.perf_counter() - started
        deleted = check_deleted_once(f"{SEQUENTIAL} {case.label}", fleet, expected)
    idle = [len(ids) for ids in expected]
    return Measurement(
        benchmark=SEQUENTIAL,
        case=case.label,
        seconds=seconds,
        lower_bound=sequential_bound(case, idle),
        bound=SEQUENTIAL_BOUND,
        count=deleted,
        unit="deletes",
        extra={"requests": sum(2 + 2 * n for n in idle)},
    )


def run_fleet(cases: Sequence[FleetCase] = DEFAULT_FLEET) -> list[Measurement]:
    """Every fleet case, then its sequential baseline (once per shape) and the speedup."""
    results: list[Measurement] = []
    baselines: dict[tuple[int, int, int, float, float], Measurement] = {}
    for case in cases:
        try:
            result = measure_fleet(case)
        except RuntimeError as exc:  # a failed sweep is a result too: say it, go on
            print(f"FAILED: {exc}", file=sys.stderr, flush=True)
            result = failed(case, str(exc))
        if case.sequential:
            shape = (case.targets, case.sessions, case.idle_every, case.latency, case.rate)
            if shape not in baselines:
                baselines[shape] = measure_sequential(case)
                results.append(baselines[shape])
            baseline = baselines[shape]
            speedup = baseline.seconds / result.seconds if 0 < result.seconds < math.inf else 0.0
            result.extra["sequential_s"] = round(baseline.seconds, 3)
            result.extra["speedup_vs_sequential"] = round(speedup, 2)
        results.append(result)
    return results


# --- S4 -------------------------------------------------------------------------------------


def measure_listing(case: ListingCase) -> Measurement:
    """S4: one recorded first sweep over N sessions with a dry-run policy, on SQLite."""
    with (
        fakes(1, "--sessions", str(case.sessions), "--half-idle") as (fake,),
        open_store("sqlite") as (db_url, store),
    ):
        store.policies.apply(specs(DRY_RUN), actor="benchmark", now=now())
        with tempfile.TemporaryDirectory(prefix="janitor-listing-") as tmp:
            config = write_config(Path(tmp), db_url, [fake.url], requests_per_second=1000.0)
            run = janitor_sweep(config)
        listing_seconds = float(fake.stats()["listing_seconds"])
        rows, _ = store.audit.head()
    (target,) = run.summary["targets"]
    listed = sum(target["sessions"].values())
    would = target["outcomes"].get(str(Outcome.WOULD_ACT), 0)
    if run.summary["failed"] or listed != case.sessions or would != fake.idle:
        raise RuntimeError(f"{LISTING} {case.label}: listed {listed}, {would} would_act")
    seconds = float(run.summary["seconds"])
    return Measurement(
        benchmark=LISTING,
        case=case.label,
        seconds=seconds,
        lower_bound=listing_seconds,
        bound=LISTING_BOUND,
        count=case.sessions,
        unit="sessions",
        extra={
            "us_per_session": round(1e6 * seconds / case.sessions, 1),
            "janitor_cpu_s": round(run.cpu, 3),
            "janitor_max_rss_mb": round(run.max_rss_mb, 1),
            "process_wall_s": round(run.wall, 3),
            "audit_rows": rows,
            "would_act": would,
        },
    )


def run_listing(cases: Sequence[ListingCase] = DEFAULT_LISTING) -> list[Measurement]:
    """Every size, smallest first (the per-session figures show whether time is linear)."""
    return [measure_listing(case) for case in cases]
