"""Fault injection and observation on top of the in-process simulated Jupyter server.

:class:`FaultTransport` extends :class:`~tests.fakes.jupyter.SimTransport` (same ``Fault``
rules, checked first) with what the race, fault-matrix and audit-before-act tests need:

* every request is numbered and timed (``time.monotonic`` at arrival and at answer), so a
  test can say "activity landed before request #n" and check ordering and gaps;
* ``before_request(n, fn)`` runs ``fn`` just before request number ``n`` reaches the
  simulator (a user's activity landing at that moment);
* ``after(when, fn)`` runs ``fn`` right after the simulator answered a matching request;
* ``mutate(when, fn)`` rewrites the simulator's JSON answer (garbage records, wrong types);
* a ``Fault`` with ``after=True`` and a ``status`` lets the simulator process the request,
  then answers with that status instead (a DELETE that was carried out, then a 502).

:class:`World` bundles the simulator, the transport, a store and a frozen clock, and runs
sweeps the way the daemon does: one runtime built inside the running event loop, several
sweeps in a row, alerts captured through the Sentry channel.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from janitor.clock import FrozenClock
from janitor.model import AuditEvent
from janitor.policy.spec import parse_specs
from janitor.runtime import Runtime
from janitor.sim.jupyter import JupyterSim, NotebookSession
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import build_runtime, make_config
from tests.fakes.jupyter import Fault, SimTransport, on

#: The policy most tests use: delete kernels idle for 2h with no connection, enforced.
IDLE_POLICY: dict[str, Any] = {
    "name": "idle-notebooks",
    "match": {"state": ["idle"], "idle_for": "2h", "max_connections": 0},
    "action": "delete",
    "mode": "enforce",
}
TOKEN = "test-token"


@dataclass
class Request:
    """One request as the server saw it."""

    n: int
    method: str
    path: str
    arrived: float
    answered: float | None = None
    result: str = ""  # the status, or the name of the raised error


@dataclass
class Mutation:
    """Rewrites the JSON body of matching answers from the simulator."""

    when: Callable[[str, str], bool]
    fn: Callable[[Any], Any]
    times: int = 1_000_000
    hits: int = 0


@dataclass
class AfterHook:
    """Runs ``fn`` once the simulator answered a matching request."""

    when: Callable[[str, str], bool]
    fn: Callable[[], None]
    times: int = 1


class FaultTransport(SimTransport):
    """SimTransport with numbered, timed requests, hooks and response mutations."""

    def __init__(self, sim: JupyterSim, faults: list[Fault] | None = None) -> None:
        super().__init__(sim, faults)
        self.requests: list[Request] = []
        self.mutations: list[Mutation] = []
        self.after_hooks: list[AfterHook] = []
        self.before: dict[int, list[Callable[[], None]]] = {}

    # --- configuration -------------------------------------------------------------

    def mutate(
        self, when: Callable[[str, str], bool], fn: Callable[[Any], Any], times: int = 1_000_000
    ) -> Mutation:
        """Rewrite the simulator's JSON answer to matching requests with ``fn``."""
        mutation = Mutation(when=when, fn=fn, times=times)
        self.mutations.append(mutation)
        return mutation

    def after(
        self, when: Callable[[str, str], bool], fn: Callable[[], None], times: int = 1
    ) -> None:
        """Run ``fn`` right after the simulator answered a matching request."""
        self.after_hooks.append(AfterHook(when=when, fn=fn, times=times))

    def before_request(self, n: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` just before request number ``n`` (1-based, over the transport's life)."""
        self.before.setdefault(n, []).append(fn)

    def clear(self) -> None:
        """Remove every fault, mutation and hook: the server behaves again."""
        self.faults.clear()
        self.mutations.clear()
        self.after_hooks.clear()
        self.before.clear()

    # --- observation ---------------------------------------------------------------

    @property
    def count(self) -> int:
        """Requests seen so far."""
        return len(self.requests)

    def matching(self, method: str, fragment: str = "", since: int = 0) -> list[Request]:
        """Requests with this method and a path containing ``fragment``, after ``since``."""
        return [r for r in self.requests[since:] if r.method == method and fragment in r.path]

    def deletes(self, since: int = 0) -> list[Request]:
        """DELETE requests that reached the transport (retries included)."""
        return self.matching("DELETE", since=since)

    # --- serving -------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Number and time the request, run hooks, apply faults, mutations, after-hooks."""
        method, path = request.method, request.url.path
        record = Request(
            n=len(self.requests) + 1, method=method, path=path, arrived=time.monotonic()
        )
        self.requests.append(record)
        self.log.append((method, path))
        for fn in self.before.pop(record.n, []):
            fn()
        try:
            response = await self._respond(request)
        except httpx.HTTPError as exc:
            record.answered, record.result = time.monotonic(), type(exc).__name__
            raise
        for hook in self.after_hooks:
            if hook.times > 0 and hook.when(method, path):
                hook.times -= 1
                hook.fn()
        record.answered, record.result = time.monotonic(), str(response.status_code)
        return response

    def _served(self, request: httpx.Request) -> httpx.Response:
        """The simulator's answer, rewritten by the first matching mutation."""
        response = self._answer(request)
        method, path = request.method, request.url.path
        for mutation in self.mutations:
            if mutation.hits < mutation.times and mutation.when(method, path):
                mutation.hits += 1
                body = mutation.fn(json.loads(response.content))
                content = body if isinstance(body, bytes) else json.dumps(body).encode()
                headers = {k: v for k, v in response.headers.items() if k != "content-length"}
                return httpx.Response(
                    response.status_code, content=content, headers=headers, request=request
                )
        return response


_TEMPLATE: dict[str, bytes] = {}


@contextmanager
def memory_backed_store() -> Iterator[Store]:
    """A migrated SQLite store in a RAM-backed directory (``/dev/shm`` where there is one).

    For tests that are not about durability: a commit costs no fsync there, and the schema
    is migrated once per test process and copied, so the fault matrix stays fast. Everything
    else is the real SQLite store.
    """
    shm = "/dev/shm"
    base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base, prefix="janitor-test-") as directory:
        path = os.path.join(directory, "janitor.db")
        if "db" not in _TEMPLATE:
            migrated = Store.open(f"sqlite:///{path}")
            migrated.db.upgrade()
            migrated.close()  # the last connection checkpoints the WAL into the file
            with open(path, "rb") as file:
                _TEMPLATE["db"] = file.read()
        else:
            with open(path, "wb") as file:
                file.write(_TEMPLATE["db"])
        store = Store.open(f"sqlite:///{path}")
        try:
            yield store
        finally:
            store.close()


def list_sessions(method: str, path: str) -> bool:
    """Matches the listing of sessions (not one session)."""
    return method == "GET" and path.endswith("/api/sessions")


def list_kernels(method: str, path: str) -> bool:
    """Matches the listing of kernels (not one kernel)."""
    return method == "GET" and path.endswith("/api/kernels")


def one(method: str, kind: str, record_id: str) -> Callable[[str, str], bool]:
    """Matches a request on one session or kernel (``kind`` is sessions or kernels)."""
    return on(method, f"/api/{kind}/{record_id}")


@dataclass
class World:
    """A simulated Jupyter target, its transport, a store and a clock: sweeps as a daemon runs them."""

    store: Store
    clock: FrozenClock
    sim: JupyterSim
    transport: FaultTransport
    target: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, store: Store, clock: FrozenClock, **target: Any) -> World:
        """A world with an empty simulator on ``clock``."""
        sim = JupyterSim(token=TOKEN, clock=clock)
        return cls(store=store, clock=clock, sim=sim, transport=FaultTransport(sim), target=target)

    def apply(self, *policies: dict[str, Any]) -> None:
        """Store policies (the idle-delete policy by default)."""
        specs = parse_specs({"policies": list(policies) or [IDLE_POLICY]}, where="test")
        self.store.policies.apply(specs, actor="test", now=self.clock.now())

    def idle(self, path: str, hours: float = 3, **kw: Any) -> NotebookSession:
        """A session idle for ``hours`` (3 by default: the idle policy deletes it)."""
        return self.sim.add_session(path, idle_for=timedelta(hours=hours), **kw)

    def runtime(self) -> Runtime:
        """A runtime on this world; call inside the event loop that uses it."""
        target = {
            "name": "nb",
            "provider": "jupyter",
            "base_url": "http://jupyter.test/",
            "token": TOKEN,
            "requests_per_second": 1000.0,  # tests of the request budget set their own
            **self.target,
        }
        config = make_config("sqlite:///unused.db", [target], **self.settings)
        return build_runtime(
            config,
            self.store,
            {"nb": self.transport},
            self.clock,
            sentry=lambda kind, message, tags: self.alerts.append((kind, message)),
        )

    async def sweeps(
        self,
        count: int = 1,
        *,
        between: Callable[[int, SweepReport], None] | None = None,
        setup: Callable[[Runtime], Awaitable[None] | None] | None = None,
    ) -> list[SweepReport]:
        """Run ``count`` sweeps with one runtime (like a daemon); ``between`` runs after each."""
        rt = self.runtime()
        if setup is not None:
            result = setup(rt)
            if result is not None:
                await result
        reports = []
        try:
            for index in range(count):
                report = await run_sweep(rt)
                reports.append(report)
                if between is not None:
                    between(index, report)
        finally:
            for provider in rt.providers.values():
                await provider.aclose()
        return reports

    def events(self, after_id: int = 0) -> list[AuditEvent]:
        """Audit rows in id order."""
        return self.store.audit.events(after_id=after_id)
