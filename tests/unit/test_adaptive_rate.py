"""requests_per_second = "auto": the AIMD controller, the limiter that runs it, the client that
feeds it, and the configuration that turns it on.

The controller (:class:`janitor.http.AimdRate`) is pure: answers in, rate out. Its dynamics are
checked in a simulation with a virtual clock (a provider with a capacity, answers that take a
round trip), so nothing here depends on how fast the machine is. The limiter and the client
use real time only for short waits, and their tests check order and counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.errors import AuthFailed, ConfigError, ProviderUnavailable, Throttled
from janitor.http import AimdRate, RateLimiter, TargetHttp, Ticket
from janitor.http_errors import AWS_JSON, HUAWEI, STATUS, ErrorModel
from janitor.metrics import REGISTRY
from janitor.settings import Config
from janitor.targets import AdaptiveRate, JupyterConfig, adaptive_rate
from tests.conftest import write_config

BUDGET = AdaptiveRate(start=10.0, floor=1.0, ceiling=100.0)


def ok(window: int = 0) -> Ticket:
    """A request that waited for the budget (the budget was what limited it)."""
    return Ticket(window, waited=True)


def gauge(target: str) -> float | None:
    return REGISTRY.get_sample_value("janitor_request_budget_per_second", {"target": target})


def waits(target: str) -> float:
    return REGISTRY.get_sample_value("janitor_rate_limit_waits_total", {"target": target}) or 0.0


# --- AimdRate: the rules ---------------------------------------------------------------------


def test_a_processed_answer_to_a_waiting_request_adds_increase_over_rate() -> None:
    aimd = AimdRate(BUDGET)
    assert aimd.rate == 10.0
    assert aimd.answered(ok(), throttled=False) == pytest.approx(10.1)


def test_the_rate_grows_by_about_one_per_rate_answers() -> None:
    """Additive in time: at rate r, r answers (one second of full use) add about 1 req/s."""
    aimd = AimdRate(BUDGET)
    answers = 0
    while aimd.rate < 20.0:
        aimd.answered(ok(), throttled=False)
        answers += 1
    assert 140 <= answers <= 160, "10 + 11 + ... + 19 answers, not 10 and not 1000"


def test_an_answer_to_a_request_that_did_not_wait_changes_nothing() -> None:
    """An idle or concurrency-bound target never earns a rate it has not tried."""
    aimd = AimdRate(BUDGET)
    for _ in range(1000):
        aimd.answered(Ticket(0, waited=False), throttled=False)
    assert aimd.rate == 10.0


def test_a_throttling_answer_halves_the_rate_and_begins_a_window() -> None:
    aimd = AimdRate(BUDGET)
    assert aimd.answered(ok(), throttled=True) == 5.0
    assert aimd.window == 1


def test_throttled_answers_already_in_flight_halve_the_rate_once() -> None:
    aimd = AimdRate(AdaptiveRate(start=64.0, floor=1.0, ceiling=100.0))
    in_flight = [ok(aimd.window) for _ in range(8)]  # sent at 64 req/s
    for ticket in in_flight:
        aimd.answered(ticket, throttled=True)
    assert aimd.rate == 32.0, "one decrease for the whole burst"
    aimd.answered(ok(aimd.window), throttled=True)  # sent at 32 req/s, and still too fast
    assert aimd.rate == 16.0


def test_answers_from_an_earlier_window_do_not_grow_the_rate() -> None:
    aimd = AimdRate(BUDGET)
    aimd.answered(ok(0), throttled=True)
    for _ in range(100):
        aimd.answered(ok(0), throttled=False)
    assert aimd.rate == 5.0


def test_the_rate_never_goes_below_the_floor() -> None:
    aimd = AimdRate(AdaptiveRate(start=10.0, floor=3.0, ceiling=100.0))
    for _ in range(10):
        aimd.answered(ok(aimd.window), throttled=True)
    assert aimd.rate == 3.0


def test_the_rate_never_goes_above_the_ceiling() -> None:
    aimd = AimdRate(AdaptiveRate(start=10.0, floor=1.0, ceiling=12.0))
    for _ in range(1000):
        aimd.answered(ok(), throttled=False)
    assert aimd.rate == 12.0


@given(
    st.lists(
        st.tuples(st.integers(min_value=-2, max_value=0), st.booleans(), st.booleans()),
        max_size=300,
    )
)
def test_the_rate_stays_within_its_bounds_and_halves_once_per_window(
    answers: list[tuple[int, bool, bool]],
) -> None:
    budget = AdaptiveRate(start=10.0, floor=2.0, ceiling=40.0)
    aimd = AimdRate(budget)
    decreases = 0
    for age, throttled, waited in answers:
        before = aimd.rate
        aimd.answered(Ticket(aimd.window + age, waited), throttled=throttled)
        assert budget.floor <= aimd.rate <= budget.ceiling
        decreases += aimd.rate < before
        if aimd.rate < before:
            assert aimd.rate == max(budget.floor, before / 2)
    assert decreases <= aimd.window, "at most one decrease per window"


# --- AimdRate against a simulated provider (virtual clock) -----------------------------------


@dataclass
class Provider:
    """A provider's token bucket: ``capacity`` requests per second, ``burst`` at once."""

    capacity: float
    burst: float
    now: float = 0.0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def admit(self, at: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (at - self.now) * self.capacity)
        self.now = at
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def simulate(budget: AdaptiveRate, provider: Provider, sends: int, rtt: float) -> list[float]:
    """A sender that always has work, paced by the budget; each answer arrives ``rtt`` later.

    Returns the rate at each send. Time is virtual: the loop advances it.
    """
    aimd = AimdRate(budget)
    in_flight: deque[tuple[float, Ticket, bool]] = deque()
    rates: list[float] = []
    now = 0.0
    for _ in range(sends):
        while in_flight and in_flight[0][0] <= now:
            _, ticket, throttled = in_flight.popleft()
            aimd.answered(ticket, throttled=throttled)
        rates.append(aimd.rate)
        in_flight.append((now + rtt, Ticket(aimd.window, waited=True), not provider.admit(now)))
        now += 1 / aimd.rate
    return rates


@pytest.mark.parametrize("start", [5.0, 400.0], ids=["from-below", "from-above"])
@pytest.mark.parametrize("rtt", [0.01, 0.3])
def test_the_simulated_rate_converges_near_the_capacity(start: float, rtt: float) -> None:
    """Rate and round trip vary; the sawtooth stays around the capacity (50 req/s)."""
    budget = AdaptiveRate(start=start, floor=1.0, ceiling=500.0, increase=5.0)
    rates = simulate(budget, Provider(capacity=50.0, burst=10.0), sends=6000, rtt=rtt)
    late = rates[len(rates) // 2 :]
    assert 30.0 <= sum(late) / len(late) <= 60.0
    assert min(late) >= 20.0, "never more than one halving below the capacity"
    assert max(late) <= 80.0


def test_the_simulated_rate_stops_at_the_ceiling_below_the_capacity() -> None:
    budget = AdaptiveRate(start=5.0, floor=1.0, ceiling=20.0, increase=5.0)
    rates = simulate(budget, Provider(capacity=50.0, burst=10.0), sends=2000, rtt=0.05)
    assert max(rates) == 20.0
    assert rates[-1] == 20.0


# --- RateLimiter -----------------------------------------------------------------------------


def test_a_fixed_limiter_ignores_every_answer_and_reports_its_rate() -> None:
    limiter = RateLimiter("aimd-unit-fixed", 7.0)
    for throttled in (True, False, True):
        limiter.answered(ok(), throttled=throttled)
    assert limiter.rate == 7.0
    assert not limiter.adaptive
    assert gauge("aimd-unit-fixed") == 7.0


def test_an_adaptive_limiter_reports_the_rate_in_force() -> None:
    limiter = RateLimiter("aimd-unit-gauge", BUDGET)
    assert limiter.adaptive
    assert gauge("aimd-unit-gauge") == 10.0
    limiter.answered(ok(), throttled=True)
    assert limiter.rate == gauge("aimd-unit-gauge") == 5.0
    limiter.answered(ok(1), throttled=False)
    assert limiter.rate == gauge("aimd-unit-gauge") == pytest.approx(5.2)


def test_a_decrease_shrinks_the_burst_too() -> None:
    """After a halving from 10 to 5, at most 4 requests go out at once (a second at 5/s less
    the jitter margin), not 9."""
    target = "aimd-unit-burst"

    async def scenario() -> list[Ticket]:
        limiter = RateLimiter(target, AdaptiveRate(start=10.0, floor=1.0, ceiling=10.0))
        limiter.answered(ok(), throttled=True)
        return [await limiter.acquire() for _ in range(6)]

    before = waits(target)
    tickets = asyncio.run(scenario())
    assert [t.waited for t in tickets] == [False] * 4 + [True] * 2
    assert {t.window for t in tickets} == {1}
    assert waits(target) == before + 2


def test_an_urgent_request_still_goes_ahead_with_an_adaptive_budget() -> None:
    async def scenario() -> list[str]:
        limiter = RateLimiter("aimd-unit-urgent", AdaptiveRate(start=20, floor=1, ceiling=20), 1)
        order: list[str] = []

        async def one(name: str, urgent: bool) -> None:
            await limiter.acquire(urgent=urgent)
            order.append(name)

        reads = [asyncio.create_task(one(f"read{i}", False)) for i in range(6)]
        await asyncio.sleep(0)
        await asyncio.gather(one("delete", True), *reads)
        return order

    order = asyncio.run(scenario())
    assert order.index("delete") <= 2, order


# --- TargetHttp: which answers reach the budget ----------------------------------------------


def answer(
    status: int, body: dict[str, Any] | None = None, *, retry_after: str | None = None
) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return httpx.Response(status, json=body or {}, headers=headers)


def http_of(
    target: str,
    replies: list[httpx.Response],
    rate: float | AdaptiveRate,
    errors: ErrorModel = STATUS,
) -> TargetHttp:
    """A target whose server answers ``replies`` in turn; one attempt per request."""
    queue = deque(replies)
    http = TargetHttp(
        target=target,
        client=httpx.AsyncClient(
            base_url="http://provider.test/",
            transport=httpx.MockTransport(lambda _: queue.popleft()),
        ),
        concurrency=1,
        rate=rate,
        read_attempts=1,
        write_attempts=1,
        errors=errors,
    )
    http.limiter = RateLimiter(target, rate, burst=1)  # every request after the first waits
    return http


def send(http: TargetHttp, times: int) -> list[str]:
    """Send ``times`` reads; the name of each one's error, or "ok"."""

    async def scenario() -> list[str]:
        results = []
        for _ in range(times):
            try:
                await http.read("GET", "x")
                results.append("ok")
            except Exception as exc:  # noqa: BLE001 - the test reads the error's name
                results.append(type(exc).__name__)
        await http.aclose()
        return results

    return asyncio.run(scenario())


START = AdaptiveRate(start=50.0, floor=1.0, ceiling=100.0)


@pytest.mark.parametrize(
    ("throttling", "errors"),
    [
        (answer(429), STATUS),
        (answer(400, {"__type": "ThrottlingException", "message": "Rate exceeded"}), AWS_JSON),
        (answer(400, {"error_code": "APIG.0308", "error_msg": "throttled"}), HUAWEI),
    ],
    ids=["429", "glue-400", "huawei-400"],
)
def test_a_throttling_answer_of_any_error_model_halves_the_rate(
    throttling: httpx.Response, errors: ErrorModel
) -> None:
    http = http_of(f"aimd-unit-{errors.name}", [throttling], START, errors)
    assert send(http, 1) == [Throttled.__name__]
    assert http.limiter.rate == 25.0


def test_a_retry_after_still_holds_the_target_and_the_rate_halves() -> None:
    http = http_of("aimd-unit-hold", [answer(429, retry_after="30")], START)
    assert send(http, 1) == [Throttled.__name__]
    assert http.limiter.rate == 25.0
    assert http.limiter.held_until >= time.monotonic() + 20, "held for the 30 s it asked"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (answer(503, retry_after="1"), ProviderUnavailable),
        (answer(500), ProviderUnavailable),
        (answer(401), AuthFailed),
    ],
    ids=["503-retry-after", "500", "401"],
)
def test_server_and_auth_errors_leave_the_rate_alone(
    reply: httpx.Response, error: type[Exception]
) -> None:
    http = http_of(f"aimd-unit-{reply.status_code}", [answer(200), reply, reply], START)
    assert send(http, 3) == ["ok", error.__name__, error.__name__]
    assert http.limiter.rate == 50.0, "the first answer did not wait; the errors count not"


def test_answers_the_provider_processed_grow_the_rate() -> None:
    """A 404 returned to the provider is an answer too: the provider was not throttling."""
    http = http_of("aimd-unit-grow", [answer(200), answer(404), answer(200)], START)
    assert send(http, 3) == ["ok", "ok", "ok"]
    assert http.limiter.rate == pytest.approx(50.0 + 1 / 50.0 + 1 / (50.0 + 1 / 50.0))


def test_a_fixed_rate_is_never_changed_by_throttling() -> None:
    http = http_of("aimd-unit-fixed-http", [answer(429)] * 3 + [answer(200)] * 3, 50.0)
    send(http, 6)
    assert http.limiter.rate == 50.0
    assert gauge("aimd-unit-fixed-http") == 50.0


# --- configuration ---------------------------------------------------------------------------


def load(tmp_path: Path, **keys: Any) -> Config:
    lines = [
        "[[targets]]",
        'name = "nb"',
        'provider = "jupyter"',
        'base_url = "http://127.0.0.1:8888/"',
    ]
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in keys.items()]
    return write_config(tmp_path / "janitor.toml", "\n".join(lines) + "\n")


def error(tmp_path: Path, **keys: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, **keys)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'janitor.toml'}: key targets[0] (name='nb')."), (
        "the file and the target are named"
    )
    return message


def test_the_default_is_the_fixed_rate_of_before(tmp_path: Path) -> None:
    assert load(tmp_path).targets[0].requests_per_second == 10.0
    assert load(tmp_path, requests_per_second=2.5).targets[0].requests_per_second == 2.5


@pytest.mark.parametrize(
    ("keys", "budget"),
    [
        ({}, AdaptiveRate(start=10.0, floor=1.0, ceiling=100.0)),
        ({"max_requests_per_second": 40}, AdaptiveRate(start=10.0, floor=1.0, ceiling=40.0)),
        ({"max_requests_per_second": 4}, AdaptiveRate(start=4.0, floor=1.0, ceiling=4.0)),
        ({"max_requests_per_second": 0.5}, AdaptiveRate(start=0.5, floor=0.5, ceiling=0.5)),
        ({"min_requests_per_second": 25}, AdaptiveRate(start=25.0, floor=25.0, ceiling=100.0)),
        (
            {"min_requests_per_second": 2, "max_requests_per_second": 300},
            AdaptiveRate(start=10.0, floor=2.0, ceiling=300.0),
        ),
    ],
)
def test_auto_starts_at_ten_within_its_bounds(
    tmp_path: Path, keys: dict[str, Any], budget: AdaptiveRate
) -> None:
    target = load(tmp_path, requests_per_second="auto", **keys).targets[0]
    assert target.requests_per_second == budget


def test_auto_survives_a_round_trip_through_json(tmp_path: Path) -> None:
    target = load(tmp_path, requests_per_second="auto", max_requests_per_second=40).targets[0]
    dumped = target.model_dump(mode="json")
    assert dumped["requests_per_second"] == "auto"
    assert JupyterConfig.model_validate(dumped) == target


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"requests_per_second": "Auto"},
            (
                """requests_per_second: 'Auto' is not a rate: write a number of requests per """
                """second or "auto" (did you mean "auto"?)"""
            ),
        ),
        ({"requests_per_second": "atuo"}, """(did you mean "auto"?)"""),
        ({"requests_per_second": "fast"}, """'fast' is not a rate"""),
        ({"requests_per_second": -3}, "requests_per_second: must be more than 0"),
        ({"requests_per_second": 0}, "requests_per_second: must be more than 0"),
        (
            {"requests_per_second": "auto", "max_requests_per_second": -5},
            "max_requests_per_second: Input should be greater than 0",
        ),
        (
            {"requests_per_second": "auto", "min_requests_per_second": 0},
            "min_requests_per_second: Input should be greater than 0",
        ),
        (
            {
                "requests_per_second": "auto",
                "min_requests_per_second": 50,
                "max_requests_per_second": 20,
            },
            "max_requests_per_second: is below min_requests_per_second (50)",
        ),
        (
            {"requests_per_second": "auto", "min_requests_per_second": 500},
            "min_requests_per_second: is above the default max_requests_per_second (100)",
        ),
        (
            {"requests_per_second": 5, "max_requests_per_second": 50},
            (
                'max_requests_per_second: applies only with requests_per_second = "auto" '
                "(here the rate is a fixed 5)"
            ),
        ),
        (
            {"min_requests_per_second": 2},
            (
                'min_requests_per_second: applies only with requests_per_second = "auto" '
                "(here the rate is the default 10)"
            ),
        ),
        (
            {"requests_per_second": "auto", "max_request_per_second": 50},
            "max_request_per_second: unknown key (did you mean 'max_requests_per_second'?)",
        ),
    ],
)
def test_bad_rates_are_named_with_the_file_and_the_key(
    tmp_path: Path, keys: dict[str, Any], expected: str
) -> None:
    assert expected in error(tmp_path, **keys)


def test_adaptive_rate_refuses_inconsistent_bounds() -> None:
    with pytest.raises(ValueError, match="floor"):
        adaptive_rate(50.0, 20.0)
    with pytest.raises(ValueError, match="inconsistent"):
        AdaptiveRate(start=200.0, floor=1.0, ceiling=100.0)
