"""What the benchmarks share: the result record, timing, the loopback server, configs, stores."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from janitor.policy.spec import PolicySpec, parse_specs
from janitor.providers import config_model
from janitor.settings import Config, Settings
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store

TOKEN = "bench-token"  # the loopback simulator's token, not a secret
TARGET = "bench"
POSTGRES_URL = os.environ.get(
    "JANITOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

Extra = dict[str, float | int | str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One measured case: the time, the lower bound it is compared with, and what was done.

    ``ratio`` is ``seconds / lower_bound``: 1.0 would mean janitor adds nothing to the floor.
    """

    benchmark: str
    case: str
    seconds: float
    lower_bound: float
    bound: str
    count: int
    unit: str
    extra: Extra = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Measured time over the lower bound (inf when the bound is zero)."""
        return self.seconds / self.lower_bound if self.lower_bound > 0 else math.inf

    @property
    def throughput(self) -> float:
        """Units per second."""
        return self.count / self.seconds if self.seconds > 0 else math.inf

    def as_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (infinities become null)."""
        return {
            "benchmark": self.benchmark,
            "case": self.case,
            "seconds": round(self.seconds, 6) if math.isfinite(self.seconds) else None,
            "lower_bound_seconds": round(self.lower_bound, 6),
            "lower_bound": self.bound,
            "ratio": _finite(self.ratio),
            "count": self.count,
            "unit": self.unit,
            "per_second": _finite(self.throughput),
            "extra": self.extra,
        }


def _finite(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn`` (the least disturbed run)."""
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


# --- the simulated Jupyter server -----------------------------------------------------------


@contextlib.contextmanager
def served(sim: JupyterSim) -> Iterator[str]:
    """Serve ``sim`` over HTTP on loopback; yield its base URL (ending in ``/``)."""
    server = sim.serve()
    try:
        yield server.url + "/"
    finally:
        server.stop()


def listing_time(sim: JupyterSim, repeats: int = 3) -> float:
    """The simulator's own time to build and serialize both listings (no HTTP)."""
    headers = {"authorization": f"token {TOKEN}"}
    query = {"no_track_activity": ["1"]}

    def serialize() -> None:
        for path in ("/api/kernels", "/api/sessions"):
            sim.handle("GET", path, query, headers).content()

    return best_of(repeats, serialize)


# --- configuration and policies -------------------------------------------------------------


def jupyter_config(db_url: str, base_url: str, **target: Any) -> Config:
    """A Config with one jupyter target, validated like a TOML file would be."""
    raw = {"name": TARGET, "provider": "jupyter", "base_url": base_url, "token": TOKEN, **target}
    settings = Settings(database_url=db_url, targets=[raw])
    return Config(settings, (config_model("jupyter").model_validate(raw),), "benchmark")


def specs(document: dict[str, Any]) -> list[PolicySpec]:
    """Validate a policy document the way ``policy apply`` does."""
    return parse_specs(document, where="benchmark")


# --- databases ------------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_store() -> Iterator[tuple[str, Store]]:
    """A migrated store on a fresh SQLite file; yields (url, store)."""
    with tempfile.TemporaryDirectory(prefix="janitor-bench-") as tmp:
        url = f"sqlite:///{tmp}/janitor.db"
        store = Store.open(url)
        try:
            store.db.upgrade()
            yield url, store
        finally:
            store.close()


def postgres_problem(url: str = POSTGRES_URL) -> str | None:
    """None when PostgreSQL answers at ``url``, else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:  # noqa: BLE001 (any failure means "not reachable")
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def postgres_store(base: str = POSTGRES_URL) -> Iterator[tuple[str, Store]]:
    """A migrated store in a temporary PostgreSQL schema, dropped afterwards."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    store = Store.open(url)
    try:
        store.db.upgrade()
        yield url, store
    finally:
        store.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def open_store(kind: str) -> contextlib.AbstractContextManager[tuple[str, Store]]:
    """A fresh store of ``kind`` (``sqlite`` or ``postgres``)."""
    return postgres_store() if kind == "postgres" else sqlite_store()
