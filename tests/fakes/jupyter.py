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
from typing import Any

import httpx

from janitor.sim.jupyter import JupyterSim


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
