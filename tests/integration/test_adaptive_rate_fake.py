"""The adaptive request budget against a provider that throttles beyond its capacity.

A :class:`~tests.fakes.throttling.ThrottlingServer` on loopback serves ``CAPACITY`` requests per
second and throttles the rest (a 429, or a throttling code in a 400). janitor's own client
(:class:`janitor.http.TargetHttp`, the one every provider uses) sends reads to it from
``max_concurrency`` workers, as fast as its request budget lets it, and the test follows the
budget's rate after every answer.

The budgets here add ``INCREASE`` requests/s per second instead of the default 1, so that a
test takes seconds: the rules are the same, only time is compressed. The assertions are about
request counts and the rate's trajectory, never about how long something took; the bounds are
generous because the fake shares the machine with everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from janitor.errors import Throttled
from janitor.http import TargetHttp
from janitor.http_errors import AWS_JSON, HUAWEI, STATUS, ErrorModel
from janitor.metrics import REGISTRY
from janitor.sim.jupyter import Response
from janitor.targets import AdaptiveRate
from tests.conftest import invoke
from tests.fakes.served import Hook, HookedSim
from tests.fakes.throttling import Style, ThrottlingServer

CAPACITY = 30.0  # requests per second the fake provider serves (a loaded CI machine can send ~3x)
INCREASE = 10.0  # requests/s added per second of fully used budget (the default is 1)
ANSWERS = 200  # answers per run
WORKERS = 4

MODELS: dict[Style, ErrorModel] = {"429": STATUS, "glue": AWS_JSON, "huawei": HUAWEI}


@dataclass
class Run:
    """What the client saw: the budget's rate after each answer, and which were throttled."""

    rates: list[float] = field(default_factory=list)
    throttled: list[bool] = field(default_factory=list)

    def tail(self, share: float = 0.5) -> Run:
        """The last ``share`` of the answers (after the budget had time to settle)."""
        start = int(len(self.rates) * (1 - share))
        return Run(self.rates[start:], self.throttled[start:])


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[ThrottlingServer]:
    style: Style = getattr(request, "param", "429")
    with ThrottlingServer(CAPACITY, burst=CAPACITY / 4, style=style) as served:
        yield served


def client(server: ThrottlingServer, rate: float | AdaptiveRate, target: str) -> TargetHttp:
    """janitor's client of one target, one attempt per read (each answer is one request)."""
    return TargetHttp(
        target=target,
        client=httpx.AsyncClient(base_url=server.url, timeout=10.0),
        concurrency=WORKERS,
        rate=rate,
        read_attempts=1,
        errors=MODELS[server.style],
    )


def drive(
    http: TargetHttp, answers: int = ANSWERS, *, at: tuple[int, Callable[[], None]] | None = None
) -> Run:
    """Read from ``WORKERS`` workers until ``answers`` answers came back; ``at`` = ``(n, f)``
    calls ``f`` once after the ``n``-th answer."""
    run = Run()

    async def worker() -> None:
        while len(run.rates) < answers:
            try:
                await http.read("GET", "ping")
                run.throttled.append(False)
            except Throttled:
                run.throttled.append(True)
            run.rates.append(http.limiter.rate)
            if at is not None and len(run.rates) == at[0]:
                at[1]()

    async def main() -> None:
        try:
            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), 120)
        finally:
            await http.aclose()

    asyncio.run(main())
    return run


def gauge(target: str) -> float | None:
    return REGISTRY.get_sample_value("janitor_request_budget_per_second", {"target": target})


def auto(start: float, ceiling: float = 8 * CAPACITY) -> AdaptiveRate:
    return AdaptiveRate(start=start, floor=1.0, ceiling=ceiling, increase=INCREASE)


def share(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def mean(rates: list[float]) -> float:
    return sum(rates) / len(rates)


def assert_near(run: Run, capacity: float) -> None:
    """The AIMD sawtooth around ``capacity``: halved at most a little above it, and back."""
    assert 0.4 * capacity <= mean(run.rates) <= 1.3 * capacity, "on average near the capacity"
    assert max(run.rates) <= 1.6 * capacity, "never far above it"
    assert share(run.throttled) <= 0.2, "few requests beyond it"


@pytest.mark.parametrize("server", ["429", "glue"], indirect=True)
def test_from_below_the_rate_climbs_to_the_capacity_and_stays_near_it(
    server: ThrottlingServer,
) -> None:
    target = f"aimd-below-{server.style}"
    run = drive(client(server, auto(start=CAPACITY / 6), target))
    assert max(run.rates) >= 0.8 * CAPACITY, "it climbed to the capacity"
    assert server.throttled >= 1, "and found it"
    assert_near(run.tail(), CAPACITY)
    assert gauge(target) == run.rates[-1]


def test_from_above_the_rate_comes_down_to_the_capacity(server: ThrottlingServer) -> None:
    target = "aimd-above"
    run = drive(client(server, auto(start=5 * CAPACITY), target))
    assert min(run.rates[:100]) <= CAPACITY, "it came down within a hundred answers"
    assert_near(run.tail(), CAPACITY)
    assert gauge(target) == run.rates[-1]


def test_the_rate_never_goes_above_max_requests_per_second(server: ThrottlingServer) -> None:
    ceiling = CAPACITY / 2
    target = "aimd-ceiling"
    run = drive(client(server, auto(start=CAPACITY / 6, ceiling=ceiling), target), answers=80)
    assert max(run.rates) <= ceiling
    assert run.rates[-1] == ceiling, "it grew to the ceiling"
    assert server.throttled == 0, "and the provider never had to throttle"
    assert gauge(target) == ceiling


def test_a_fixed_rate_never_changes_even_when_throttled(server: ThrottlingServer) -> None:
    fixed = 3 * CAPACITY
    target = "aimd-fixed"
    run = drive(client(server, fixed, target), answers=100)
    assert set(run.rates) == {fixed}
    assert server.throttled >= 10, "it was throttled, and kept its rate"
    assert gauge(target) == fixed


def test_a_provider_whose_capacity_drops_is_followed_down(server: ThrottlingServer) -> None:
    target = "aimd-drop"
    lower = CAPACITY / 2
    run = drive(
        client(server, auto(start=CAPACITY / 2), target),
        answers=220,
        at=(120, lambda: server.set_capacity(lower, burst=lower / 4)),
    )
    assert max(run.rates[:120]) >= 0.8 * CAPACITY, "near the first capacity"
    assert_near(run.tail(0.3), lower)


def test_a_sweep_halves_an_auto_target_and_leaves_a_fixed_one(tmp_path: Path) -> None:
    """End to end: the TOML keys reach the provider's client, and the gauge follows."""
    sims = {name: HookedSim(token="t") for name in ("aimd-e2e-auto", "aimd-e2e-fixed")}
    servers = {name: sim.serve() for name, sim in sims.items()}
    try:
        for sim in sims.values():
            sim.hook(  # the gateway throttles the first request of the sweep
                Hook(when=lambda method, _: method == "GET", answer=lambda _: Response(429))
            )
        config = tmp_path / "janitor.toml"
        config.write_text(
            f'database_url = "sqlite:///{tmp_path / "j.db"}"\n'
            + "".join(
                f'[[targets]]\nname = "{name}"\nprovider = "jupyter"\n'
                f'base_url = "{servers[name].url}/"\ntoken = "t"\n{rate}\n'
                for name, rate in (
                    ("aimd-e2e-auto", 'requests_per_second = "auto"\nmax_requests_per_second = 50'),
                    ("aimd-e2e-fixed", "requests_per_second = 10"),
                )
            ),
            encoding="utf-8",
        )
        result = invoke("-c", str(config), "sweep", "--dry-run")
    finally:
        for server in servers.values():
            server.stop()
    assert result.exit_code == 0, result.output
    assert all(hook.hits == 1 for sim in sims.values() for hook in sim.hooks), "both throttled"
    assert gauge("aimd-e2e-auto") == 5.0, "10, halved once; a sweep's few requests never waited"
    assert gauge("aimd-e2e-fixed") == 10.0
