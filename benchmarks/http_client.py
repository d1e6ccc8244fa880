"""The CPU one request costs the client: what S1's floor is made of.

A fleet sweep makes two requests per deletion (the re-check GET and the DELETE), so the
client's own CPU per request, times two, is spent per deletion before janitor does anything
else. Three clients GET the same session N times, ``concurrency`` at a time, from a fake
Jupyter server in its own process (answering after a latency, no throttling):

* ``janitor``: the target's client as a sweep uses it (``make_target_http``, ``read``: the
  rate limiter, the concurrency slot, the circuit breaker, stamina's retry context and the
  error model), at a budget far above what is sent;
* ``httpx``: a bare ``httpx.AsyncClient``, the library janitor's client is built on;
* ``aiohttp``: a bare ``aiohttp.ClientSession``, when it is installed (it is no dependency of
  janitor; it shows what another asyncio client costs on the same machine).

The time reported is the wall time of the N requests; the lower bound is the time the latency
allows (``N × latency / concurrency``): a ratio above 1 means the client's own CPU, not the
server, set the pace. ``cpu_ms_per_request`` is the client process's CPU time (``getrusage``)
over the requests, divided by N: the figure to compare.
"""

from __future__ import annotations

import asyncio
import importlib.util
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from benchmarks.common import TOKEN, Measurement
from benchmarks.fleet import fakes

NAME = "http_client"
BOUND = "requests x latency / concurrency (the wall time the latency allows)"
AUTH = {"authorization": f"token {TOKEN}"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCase:
    """N GETs of one session by one client, ``concurrency`` at a time."""

    client: str
    requests: int
    concurrency: int = 8
    latency: float = 0.005


CLIENTS = ("janitor", "httpx", "aiohttp")
DEFAULT_CASES = tuple(ClientCase(client=c, requests=3000) for c in CLIENTS)
QUICK_CASES = tuple(ClientCase(client=c, requests=100) for c in CLIENTS)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _many(
    count: int, concurrency: int, one: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """Run ``one`` ``count`` times, ``concurrency`` at a time; the (wall, CPU) time it took."""
    slots = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with slots:
            await one()

    await one()  # connect first: the connection's setup is not a request's cost
    started, cpu = time.perf_counter(), _cpu()
    await asyncio.gather(*(bounded() for _ in range(count)))
    return time.perf_counter() - started, _cpu() - cpu


async def _janitor(url: str, path: str, case: ClientCase) -> tuple[float, float]:
    from janitor.http import make_target_http

    http = make_target_http(
        target="bench",
        base_url=url,
        auth=None,
        timeout=timedelta(seconds=30),
        concurrency=case.concurrency,
        rate=1e6,
        headers=AUTH,
    )

    async def one() -> None:
        (await http.read("GET", path)).json()

    try:
        return await _many(case.requests, case.concurrency, one)
    finally:
        await http.aclose()


async def _httpx(url: str, path: str, case: ClientCase) -> tuple[float, float]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, trust_env=False) as client:

        async def one() -> None:
            response = await client.get(path)
            response.raise_for_status()
            response.json()

        return await _many(case.requests, case.concurrency, one)


async def _aiohttp(url: str, path: str, case: ClientCase) -> tuple[float, float]:
    import aiohttp

    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def one() -> None:
            async with session.get(url + path) as response:
                response.raise_for_status()
                await response.json()

        return await _many(case.requests, case.concurrency, one)


RUNNERS: dict[str, Callable[[str, str, ClientCase], Awaitable[tuple[float, float]]]] = {
    "janitor": _janitor,
    "httpx": _httpx,
    "aiohttp": _aiohttp,
}


def available(client: str) -> bool:
    """Whether the client can run here (aiohttp is optional)."""
    return client != "aiohttp" or importlib.util.find_spec("aiohttp") is not None


def measure(case: ClientCase, url: str, path: str) -> Measurement:
    """One client's CPU per request against the running fake."""
    wall, cpu = asyncio.run(RUNNERS[case.client](url, path, case))
    extra: dict[str, Any] = {
        "cpu_ms_per_request": round(1000 * cpu / case.requests, 3),
        "cpu_s": round(cpu, 3),
        "concurrency": case.concurrency,
        "latency_ms": case.latency * 1000,
    }
    return Measurement(
        benchmark=NAME,
        case=f"{case.client} GET x{case.requests} concurrency={case.concurrency}",
        seconds=wall,
        lower_bound=case.requests * case.latency / case.concurrency,
        bound=BOUND,
        count=case.requests,
        unit="requests",
        extra=extra,
    )


def run(cases: Sequence[ClientCase] = DEFAULT_CASES) -> list[Measurement]:
    """Every available client against one fake server process (one per latency)."""
    results = []
    for latency in sorted({c.latency for c in cases}):
        args = ["--sessions", "10", "--latency", str(latency)]
        with fakes(1, *args) as (fake,):
            listing = httpx.get(fake.url + "api/sessions", headers=AUTH, trust_env=False).json()
            path = f"api/sessions/{listing[0]['id']}"
            results.extend(
                measure(case, fake.url, path)
                for case in cases
                if case.latency == latency and available(case.client)
            )
    return results
