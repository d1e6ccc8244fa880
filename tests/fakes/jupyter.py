"""The simulated Jupyter server wired into httpx in-process, with fault injection.

``SimTransport(sim)`` is an ``httpx.AsyncBaseTransport`` that answers from a
:class:`~janitor.sim.jupyter.JupyterSim`. ``faults`` is an ordered list of rules: the first
rule whose ``when(method, path)`` matches and that still has ``times`` left decides what
happens instead of (or before) the simulator: a status with a body, a raised httpx error,
a delay, or a callback run between the request and the answer (to land activity at a chosen
moment).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from janitor.clock import Clock, FrozenClock
from janitor.model import Action
from janitor.providers.base import Provider
from janitor.providers.jupyter import JupyterProvider
from janitor.sim.jupyter import JupyterSim
from janitor.targets import JupyterConfig


@dataclass
class Fault:
    """One injected behaviour."""

    when: Callable[[str, str], bool]
    status: int | None = None
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    error: type[httpx.HTTPError] | None = None
    delay: float = 0.0
    before: Callable[[], None] | None = None  # runs first, then the simulator answers
    after: bool = False  # the simulator processes the request, then the fault answers
    times: int = 1
    hits: int = 0


def on(method: str, fragment: str = "") -> Callable[[str, str], bool]:
    """A matcher: this method and a path containing ``fragment``."""
    return lambda m, p: m == method and fragment in p


class SimTransport(httpx.AsyncBaseTransport):
    """Answers requests from the simulator, applying faults first."""

    def __init__(self, sim: JupyterSim, faults: list[Fault] | None = None) -> None:
        self.sim = sim
        self.faults = faults or []
        self.log: list[tuple[str, str]] = []

    def add(self, fault: Fault) -> Fault:
        """Add a fault rule (checked after the existing ones)."""
        self.faults.append(fault)
        return fault

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Apply the first matching fault, else answer from the simulator."""
        self.log.append((request.method, request.url.path))
        return await self._respond(request)

    async def _respond(self, request: httpx.Request) -> httpx.Response:
        fault = self._match(request.method, request.url.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.before is not None:
                fault.before()
            if fault.after:
                self._answer(request)  # the simulator carries the request out first
            if fault.error is not None:
                raise fault.error("injected", request=request)
            if fault.status is not None:
                content = fault.raw if fault.raw is not None else json.dumps(fault.body).encode()
                return httpx.Response(
                    fault.status, content=content, headers=fault.headers, request=request
                )
        return self._served(request)

    def _served(self, request: httpx.Request) -> httpx.Response:
        """The simulator's answer when no fault replaced it (subclasses may rewrite it)."""
        return self._answer(request)

    def _match(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.hits < fault.times and fault.when(method, path):
                fault.hits += 1
                return fault
        return None

    def _answer(self, request: httpx.Request) -> httpx.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer = self.sim.handle_url(request.method, str(request.url), headers)
        return httpx.Response(
            answer.status, content=answer.content(), headers=answer.headers, request=request
        )


class JupyterContract:
    """The simulated Jupyter server as the provider contract suite drives it."""

    provider = "jupyter"
    action = Action.DELETE
    can: frozenset[str] = frozenset()  # one unpaged listing, no 409/412, no native warning
    page_size = 0

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.sim = JupyterSim(token="contract-token", clock=clock)
        self.transport = SimTransport(self.sim)

    def connect(self, clock: Clock) -> Provider:
        """A jupyter provider on the simulator."""
        config = JupyterConfig.model_validate(
            {
                "name": "contract",
                "provider": "jupyter",
                "base_url": "http://jupyter.test/",
                "token": "contract-token",
            }
        )
        return JupyterProvider.connect(config, clock, transport=self.transport)

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A notebook session idle for ``idle_for``."""
        return self.sim.add_session(f"work/{name}.ipynb", idle_for=idle_for).id

    def touch(self, session_id: str) -> None:
        """Code runs in the session's kernel now."""
        self.sim.touch(self.sim.kernel_of(session_id).id)

    def remove(self, session_id: str) -> None:
        """The session (and its kernel) vanish."""
        with self.sim.lock:
            session = self.sim.sessions.pop(session_id)
            self.sim.kernels.pop(session.kernel_id, None)

    def inject(
        self,
        op: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        error: type[httpx.HTTPError] | None = None,
        after: bool = False,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests of ``op`` with this instead."""
        self.transport.add(
            Fault(
                when=_OPS[op],
                status=status,
                body=body,
                headers=headers or {},
                error=error,
                after=after,
                times=times,
            )
        )

    def duplicate_across_pages(self, session_id: str) -> None:
        """Jupyter does not page."""
        raise NotImplementedError

    def short_listing(self) -> None:
        """Jupyter reports no total."""
        raise NotImplementedError

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the transport."""
        return sum(1 for method, path in self.transport.log if _OPS[op](method, path))

    def writes(self) -> int:
        """Requests that change state (Jupyter's only write janitor makes is DELETE)."""
        return sum(1 for method, _ in self.transport.log if method not in ("GET", "HEAD"))

    def effective(self, session_id: str) -> int:
        """DELETEs that removed the session."""
        with self.sim.lock:
            return 1 if self.sim.deletes[session_id] and session_id not in self.sim.sessions else 0

    def activity(self, session_id: str) -> datetime | None:
        """The kernel's last activity."""
        return self.sim.kernel_of(session_id).last_activity

    def finish(self, session_id: str) -> None:
        """Jupyter's delete is synchronous: nothing to finish."""

    def shown_name(self, session_id: str) -> str:
        """The session's name."""
        with self.sim.lock:
            return self.sim.sessions[session_id].name


def _is_list(method: str, path: str) -> bool:
    return method == "GET" and path.rstrip("/").endswith(("api/sessions", "api/kernels"))


_OPS: dict[str, Callable[[str, str], bool]] = {
    "list": _is_list,
    "list_next": lambda method, path: False,  # no second page
    "get": lambda method, path: method == "GET" and not _is_list(method, path),
    "act": lambda method, path: method == "DELETE",
}
