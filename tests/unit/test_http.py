"""janitor.http: Retry-After, the request budget, the breaker, error classification, headers.

Requests go to ``httpx.MockTransport`` handlers (fakes of a server), never to the network.
Time: the breaker takes a fake monotonic clock; the rate limiter sleeps for real, so its
tests use small intervals and check order and lower bounds only (never that something was
fast).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncGenerator, Callable, Generator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor import http as http_module
from janitor.errors import (
    AuthFailed,
    CircuitOpen,
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
    Throttled,
)
from janitor.http import (
    RETRY_AFTER_CAP,
    TRACE_HEADERS,
    CircuitBreaker,
    RateLimiter,
    StripTraceHeaders,
    TargetHttp,
    jitter_margin,
    make_target_http,
    parse_retry_after,
    post_json,
)
from janitor.http_errors import (
    AWS_JSON,
    HUAWEI,
    OCI,
    PROBLEM_JSON,
    STATUS,
    ErrorInfo,
    ErrorKind,
    ErrorModel,
)
from janitor.metrics import REGISTRY

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

# --- parse_retry_after ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("60", 60.0),
        ("120", RETRY_AFTER_CAP),
        ("86400", RETRY_AFTER_CAP),
    ],
)
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value) == seconds


@pytest.mark.parametrize(
    ("offset", "seconds"),
    [
        (timedelta(seconds=30), 30.0),
        (timedelta(seconds=0), 0.0),
        (timedelta(seconds=-90), 0.0),  # a date in the past: no wait
        (timedelta(hours=1), RETRY_AFTER_CAP),
    ],
)
def test_retry_after_as_an_http_date(offset: timedelta, seconds: float) -> None:
    header = format_datetime(NOW + offset, usegmt=True)  # "Sun, 22 Nov 2026 12:00:30 GMT"
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "Sun, 99 Foo 2026 25:61:00 GMT",
        "Sun, 22 Nov 2026 12:00:30 -0000",  # a date with no known zone
        "2026-11-22T12:00:30Z",  # ISO is not an HTTP date
    ],
)
def test_junk_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@given(st.text())
def test_retry_after_is_never_negative_nor_over_the_cap(value: str) -> None:
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or 0.0 <= seconds <= RETRY_AFTER_CAP


# --- RateLimiter ---------------------------------------------------------------------


def _waits(target: str) -> float:
    return REGISTRY.get_sample_value("janitor_rate_limit_waits_total", {"target": target}) or 0.0


def test_the_bucket_serves_requests_in_order_at_the_rate() -> None:
    rate = 40.0

    async def scenario() -> list[tuple[int, float]]:
        limiter = RateLimiter("rl-order", rate, burst=1)
        done: list[tuple[int, float]] = []

        async def one(index: int) -> None:
            await limiter.acquire()
            done.append((index, time.monotonic()))

        await asyncio.gather(*(one(i) for i in range(6)))
        return done

    done = asyncio.run(scenario())
    assert [index for index, _ in done] == list(range(6))
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(done)]
    assert min(gaps) >= 1 / rate - 1e-3, "never more than one request per 1/rate"


def test_a_burst_goes_out_without_waiting() -> None:
    async def scenario() -> None:
        limiter = RateLimiter("rl-burst", 0.5, burst=3)
        for _ in range(3):
            await limiter.acquire()

    before = _waits("rl-burst")
    asyncio.run(scenario())
    assert _waits("rl-burst") == before


def test_a_hold_delays_every_request_until_it_passed() -> None:
    async def scenario() -> tuple[float, list[float]]:
        limiter = RateLimiter("rl-hold", 1000.0)
        limiter.hold(0.3)
        limiter.hold(0.1)  # a shorter hold never shortens a longer one
        until = limiter.held_until
        times: list[float] = []

        async def one(urgent: bool) -> None:
            await limiter.acquire(urgent=urgent)
            times.append(time.monotonic())

        await asyncio.gather(one(False), one(True), one(False))
        return until, times

    until, times = asyncio.run(scenario())
    assert len(times) == 3
    assert all(t >= until for t in times)


def test_an_urgent_request_does_not_queue_behind_waiting_reads() -> None:
    """A DELETE right after its re-check takes the next free token (T8: a short gap)."""

    async def scenario() -> list[str]:
        limiter = RateLimiter("rl-urgent", 20.0, burst=1)
        order: list[str] = []

        async def one(name: str, urgent: bool) -> None:
            await limiter.acquire(urgent=urgent)
            order.append(name)

        reads = [asyncio.create_task(one(f"read{i}", False)) for i in range(6)]
        await asyncio.sleep(0)  # the reads are queued
        await asyncio.gather(one("delete", True), *reads)
        return order

    order = asyncio.run(scenario())
    assert order.index("delete") <= 2, order


class Ticks:
    """Stands in for the ``time`` module in janitor.http: a clock that moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def _send_times(limiter: RateLimiter, ticks: Ticks, count: int) -> list[float]:
    """When ``limiter`` lets ``count`` back-to-back requests go (the clock jumps over waits)."""
    times = []
    for _ in range(count):
        while (delay := limiter._take()) > 0:
            ticks.now += max(delay, 1e-9)  # a float step too small to move the clock
        times.append(ticks.now)
    return times


def _provider_throttles(arrivals: list[float], rate: float, start: float) -> int:
    """How many ``arrivals`` a provider bucket of one second at ``rate`` (full at ``start``)
    answers with 429: the fake servers' and many real providers' rule."""
    tokens, last, refused = rate, start, 0
    for at in sorted(arrivals):
        tokens = min(rate, tokens + (at - last) * rate)
        last = at
        if tokens >= 1:
            tokens -= 1
        else:
            refused += 1
    return refused


@given(
    rate=st.sampled_from([2.0, 5.0, 10.0, 50.0, 100.0, 200.0]),
    jitter=st.lists(st.floats(0.0, 0.099), min_size=1, max_size=400),
)
def test_the_default_bucket_absorbs_arrival_jitter_of_a_tenth_of_a_second(
    rate: float, jitter: list[float]
) -> None:
    """A client that sends at the provider's own rate is never throttled for jitter < 0.1 s.

    Each request reaches the provider a different delay after the limiter let it go (the
    event loop, the network); the default bucket's margin (``jitter_margin``) keeps the
    provider's bucket that much fuller than janitor's, so no request arrives to an empty one.
    """
    ticks = Ticks()
    start = ticks.now
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http_module, "time", ticks)
        limiter = RateLimiter("rl-jitter", rate)
        sent = _send_times(limiter, ticks, 3 * len(jitter))
    arrivals = [at + jitter[i % len(jitter)] for i, at in enumerate(sent)]
    assert _provider_throttles(arrivals, rate, start) == 0


def test_a_bucket_as_large_as_the_providers_is_throttled_by_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the margin, ten milliseconds of jitter throttle a request.

    The first burst leaves a busy event loop 10 ms late, the requests after it on time: the
    provider's bucket sat full for those 10 ms, so half a token is missing from then on.
    """
    ticks = Ticks()
    monkeypatch.setattr(http_module, "time", ticks)
    start = ticks.now
    limiter = RateLimiter("rl-no-margin", 50.0, burst=50.0)
    sent = _send_times(limiter, ticks, 300)
    arrivals = [at + (0.010 if i < 50 else 0.0) for i, at in enumerate(sent)]
    assert _provider_throttles(arrivals, 50.0, start) > 0
    ticks.now = start
    margin = RateLimiter("rl-margin", 50.0)
    sent = _send_times(margin, ticks, 300)
    arrivals = [at + (0.010 if i < 45 else 0.0) for i, at in enumerate(sent)]
    assert _provider_throttles(arrivals, 50.0, start) == 0


def test_the_default_bucket_holds_a_second_less_the_margin() -> None:
    assert jitter_margin(50.0) == 5.0
    assert jitter_margin(5.0) == 1.0
    assert RateLimiter("rl-cap-50", 50.0)._capacity == 45.0
    assert RateLimiter("rl-cap-1", 1.0)._capacity == 1.0  # never less than one request
    assert RateLimiter("rl-cap-burst", 50.0, burst=50.0)._capacity == 50.0


# --- CircuitBreaker --------------------------------------------------------------------


class Ticker:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_at_the_fifth_failure_of_ten() -> None:
    breaker = CircuitBreaker("cb-open", monotonic=Ticker())
    for _ in range(4):
        breaker.record(False)
        breaker.check()
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match="circuit breaker of target cb-open is open"):
        breaker.check()


def test_old_failures_slide_out_of_the_window() -> None:
    breaker = CircuitBreaker("cb-window", monotonic=Ticker())
    for _ in range(4):
        breaker.record(False)
    for _ in range(6):
        breaker.record(True)
    breaker.record(False)  # the window is F F F S S S S S S F: 4 failures
    assert breaker.state == "closed"
    breaker.record(False)  # F F S S S S S S F F: still 4
    assert breaker.state == "closed"
    breaker.record(False)
    breaker.record(False)  # S S S S S S F F F F ... the 5th failure in the window
    assert breaker.state == "closed"
    breaker.record(False)
    assert breaker.state == "open"


def test_half_open_admits_one_trial_whose_success_closes_the_breaker() -> None:
    ticker = Ticker()
    breaker = CircuitBreaker("cb-half", cooldown=60, monotonic=ticker)
    for _ in range(5):
        breaker.record(False)
    ticker.now += 59
    with pytest.raises(CircuitOpen):
        breaker.check()
    ticker.now += 1
    assert breaker.state == "half-open"
    breaker.check()  # the trial call
    with pytest.raises(CircuitOpen):
        breaker.check()  # the others still fail fast while it runs
    breaker.record(True)
    assert breaker.state == "closed"
    for _ in range(4):  # a fresh window
        breaker.record(False)
    assert breaker.state == "closed"


def test_a_failed_trial_opens_the_breaker_again() -> None:
    ticker = Ticker()
    breaker = CircuitBreaker("cb-trial", cooldown=60, monotonic=ticker)
    for _ in range(5):
        breaker.record(False)
    ticker.now += 60
    breaker.check()
    breaker.record(False)
    assert breaker.state == "open"
    ticker.now += 59
    with pytest.raises(CircuitOpen):
        breaker.check()
    ticker.now += 1
    breaker.check()


def test_a_trial_that_never_reports_is_replaced_after_a_cooldown() -> None:
    ticker = Ticker()
    breaker = CircuitBreaker("cb-lost", cooldown=60, monotonic=ticker)
    for _ in range(5):
        breaker.record(False)
    ticker.now += 60
    breaker.check()  # the trial is cancelled and never records
    ticker.now += 30
    with pytest.raises(CircuitOpen):
        breaker.check()
    ticker.now += 30
    breaker.check()  # a new trial


def test_late_results_while_open_change_nothing() -> None:
    ticker = Ticker()
    breaker = CircuitBreaker("cb-late", cooldown=60, monotonic=ticker)
    for _ in range(5):
        breaker.record(False)
    breaker.record(True)  # a call that started before the breaker opened
    assert breaker.state == "open"


# --- TargetHttp: classification and retries ---------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """A fake server: answers from a list of behaviours, then 200; records every request."""

    def __init__(self, *answers: httpx.Response | type[httpx.HTTPError]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            return httpx.Response(200, json=[])
        answer = self.answers.pop(0)
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("injected", request=request)


def _http(server: Server, **kw: object) -> TargetHttp:
    http = make_target_http(
        target="t",
        base_url="http://provider.test/",
        auth=None,
        timeout=timedelta(seconds=30),
        concurrency=2,
        rate=1000.0,
        transport=httpx.MockTransport(server),
    )
    for key, value in kw.items():
        setattr(http, key, value)
    return http


def _call(http: TargetHttp, method: str, url: str, *, write: bool) -> httpx.Response:
    async def scenario() -> httpx.Response:
        try:
            if write:
                return await http.write(method, url)
            return await http.read(method, url)
        finally:
            await http.aclose()

    return asyncio.run(scenario())


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_never_retried(status: int, write: bool) -> None:
    server = Server(httpx.Response(status))
    with pytest.raises(AuthFailed, match=f"{status} credentials rejected") as caught:
        _call(_http(server), "DELETE" if write else "GET", "api/x", write=write)
    assert caught.value.status == status
    assert len(server.requests) == 1


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_429_is_throttled_and_retried(write: bool) -> None:
    server = Server(httpx.Response(429, headers={"Retry-After": "0"}))
    response = _call(_http(server), "DELETE" if write else "GET", "api/x", write=write)
    assert response.status_code == 200
    assert len(server.requests) == 2


def test_429_carries_retry_after_and_holds_the_target() -> None:
    server = Server(httpx.Response(429, headers={"Retry-After": "30", "x-request-id": "r-1"}))
    http = _http(server, _read_attempts=1)
    started = time.monotonic()
    with pytest.raises(Throttled) as caught:
        _call(http, "GET", "api/x", write=False)
    assert caught.value.retry_after == 30.0
    assert caught.value.request_id == "r-1"
    assert http.limiter.held_until >= started + 30.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_on_reads(status: int) -> None:
    server = Server(*[httpx.Response(status)] * 3)
    with pytest.raises(ProviderUnavailable, match=f"GET api/x: {status}"):
        _call(_http(server), "GET", "api/x", write=False)
    assert len(server.requests) == 3  # stamina's test mode: 3 attempts


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_on_a_write_is_an_unknown_outcome_and_not_retried(status: int) -> None:
    server = Server(httpx.Response(status, headers={"Retry-After": "0"}))
    with pytest.raises(OutcomeUnknown, match=f"DELETE api/x: {status}") as caught:
        _call(_http(server), "DELETE", "api/x", write=True)
    assert caught.value.status == status
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [200, 204, 404, 409, 410, 412])
def test_statuses_the_provider_maps_are_returned(status: int) -> None:
    server = Server(httpx.Response(status))
    response = _call(_http(server), "DELETE", "api/x", write=True)
    assert response.status_code == status


NOT_SENT = [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout]
MAYBE_SENT = [
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
]


@pytest.mark.parametrize("error", NOT_SENT + MAYBE_SENT)
def test_transport_errors_are_retried_on_reads(error: type[httpx.HTTPError]) -> None:
    server = Server(error, error)
    response = _call(_http(server), "GET", "api/x", write=False)
    assert response.status_code == 200
    assert len(server.requests) == 3


@pytest.mark.parametrize("error", NOT_SENT)
def test_a_write_that_was_not_sent_is_retried(error: type[httpx.HTTPError]) -> None:
    server = Server(error)
    response = _call(_http(server), "DELETE", "api/x", write=True)
    assert response.status_code == 200
    assert len(server.requests) == 2


@pytest.mark.parametrize("error", NOT_SENT)
def test_a_write_never_sent_fails_as_unavailable(error: type[httpx.HTTPError]) -> None:
    server = Server(error, error, error)
    with pytest.raises(ProviderUnavailable, match=r"\(not sent\)"):
        _call(_http(server), "DELETE", "api/x", write=True)
    assert len(server.requests) == 3


@pytest.mark.parametrize("error", MAYBE_SENT)
def test_a_write_lost_after_sending_is_unknown_and_not_retried(
    error: type[httpx.HTTPError],
) -> None:
    server = Server(error)
    with pytest.raises(OutcomeUnknown, match="after sending"):
        _call(_http(server), "DELETE", "api/x", write=True)
    assert len(server.requests) == 1


def test_an_open_breaker_fails_fast_without_retries() -> None:
    server = Server(*[httpx.Response(503)] * 5)
    http = _http(server)

    async def scenario() -> None:
        with pytest.raises(ProviderUnavailable):
            await http.read("GET", "api/x")  # 3 failures
        with pytest.raises(CircuitOpen):
            await http.read("GET", "api/x")  # 2 more open it; the 3rd attempt fails fast
        with pytest.raises(CircuitOpen):
            await http.write("DELETE", "api/x")
        await http.aclose()

    asyncio.run(scenario())
    assert len(server.requests) == 5


def test_429_storms_do_not_open_the_breaker() -> None:
    server = Server(*[httpx.Response(429, headers={"Retry-After": "0"})] * 9)
    http = _http(server)

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(Throttled):
                await http.read("GET", "api/x")
        assert http.breaker.state == "closed"
        await http.aclose()

    asyncio.run(scenario())


def test_errors_never_show_the_query_string() -> None:
    server = Server(httpx.Response(500))
    with pytest.raises(OutcomeUnknown) as caught:
        _call(_http(server), "DELETE", "api/x?token=s3cret", write=True)
    assert "s3cret" not in str(caught.value)
    assert "DELETE api/x: 500" in str(caught.value)


def test_the_server_clock_skew_is_taken_from_the_date_header() -> None:
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    server = Server(httpx.Response(200, headers={"Date": format_datetime(ahead, usegmt=True)}))
    http = _http(server)
    _call(http, "GET", "api/x", write=False)
    assert http.server_skew is not None
    assert timedelta(minutes=9) < http.server_skew <= timedelta(minutes=10)


def test_a_retry_after_makes_requests_queued_for_a_slot_wait_too() -> None:
    """With one connection slot, a request waiting for it must honour a hold set meanwhile."""
    arrivals: list[float] = []
    throttled_at: list[float] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            await asyncio.sleep(0.05)  # in flight while the second request queues
            throttled_at.append(time.monotonic())
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200, json=[])

    class SlowTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await handler(request)
            response.request = request
            return response

    async def scenario() -> float:
        http = make_target_http(
            target="t-slot",
            base_url="http://provider.test/",
            auth=None,
            timeout=timedelta(seconds=30),
            concurrency=1,
            rate=1000.0,
            transport=SlowTransport(),
        )
        http._read_attempts = 1
        first = asyncio.create_task(http.read("GET", "api/a"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(http.read("GET", "api/b"))
        with pytest.raises(Throttled):
            await first
        await second
        held_until = http.limiter.held_until
        await http.aclose()
        return held_until

    held_until = asyncio.run(scenario())
    assert len(arrivals) == 2
    assert held_until >= throttled_at[0] + 1.0
    assert arrivals[1] >= held_until


# --- error models through the shared client (DESIGN 6 "Errors") ------------------------------

THROTTLING = {"__type": "ThrottlingException", "message": "Rate exceeded"}
DENIED = {
    "__type": "AccessDeniedException",
    "Message": "User: arn:aws:sts::123456789012:assumed-role/janitor/i-0abc is not authorized "
    "to perform: glue:GetSession",
}
SIGNED = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE, Signature=s3cretsig"}


def _errors(target: str, kind: str) -> float:
    labels = {"target": target, "kind": kind}
    return REGISTRY.get_sample_value("janitor_provider_errors_total", labels) or 0.0


def _requests(target: str, status: str) -> float:
    labels = {"target": target, "method": "POST", "status": status}
    return REGISTRY.get_sample_value("janitor_provider_requests_total", labels) or 0.0


def _client(
    handler: Callable[[httpx.Request], httpx.Response], target: str, errors: ErrorModel = AWS_JSON
) -> TargetHttp:
    return make_target_http(
        target=target,
        base_url="http://glue.test/",
        auth=None,
        timeout=timedelta(seconds=30),
        concurrency=2,
        rate=1000.0,
        transport=httpx.MockTransport(handler),
        errors=errors,
    )


def test_a_glue_400_throttling_on_a_read_is_retried_until_it_succeeds() -> None:
    server = Server(httpx.Response(400, json=THROTTLING), httpx.Response(400, json=THROTTLING))
    response = _call(_client(server, "g-read"), "POST", "/", write=False)
    assert response.status_code == 200
    assert len(server.requests) == 3
    assert _errors("g-read", "throttled") == 2
    assert _requests("g-read", "400") == 2


def test_a_glue_400_throttling_honours_retry_after() -> None:
    arrivals: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        arrivals.append(time.monotonic())
        if len(arrivals) == 1:
            return httpx.Response(400, json=THROTTLING, headers={"Retry-After": "0.2"})
        return httpx.Response(200, json={"Sessions": []})

    http = _client(handler, "g-retry-after")
    assert _call(http, "POST", "/", write=False).status_code == 200
    assert len(arrivals) == 2
    assert arrivals[1] >= http.limiter.held_until >= arrivals[0] + 0.2


def test_a_glue_400_throttling_on_a_write_is_retried_as_it_was_not_processed() -> None:
    server = Server(httpx.Response(400, json=THROTTLING))
    response = _call(_client(server, "g-write"), "POST", "/", write=True)
    assert response.status_code == 200
    assert len(server.requests) == 2


def test_persistent_glue_throttling_raises_throttled_and_does_not_open_the_breaker() -> None:
    server = Server(*[httpx.Response(400, json=THROTTLING)] * 9)
    http = _client(server, "g-storm")
    caught: list[Throttled] = []

    async def scenario() -> int:
        for write in (False, True, False):
            with pytest.raises(Throttled) as raised:
                await (http.write if write else http.read)("POST", "/", headers=SIGNED)
            caught.append(raised.value)
        response = await http.read("POST", "/")  # the breaker lets it through
        await http.aclose()
        return response.status_code

    assert asyncio.run(scenario()) == 200
    assert len(server.requests) == 10  # three attempts each, then the call that succeeds
    assert http.breaker.state == "closed"
    assert str(caught[-1]) == "POST /: 400 throttled (400 ThrottlingException: Rate exceeded)"
    assert caught[-1].info == ErrorInfo(
        status=400, kind=ErrorKind.THROTTLED, code="ThrottlingException", message="Rate exceeded"
    )
    assert caught[-1].status == 400
    assert _errors("g-storm", "throttled") == 9


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_a_glue_400_access_denied_is_an_auth_failure_and_not_retried(write: bool) -> None:
    target = f"g-denied-{write}"
    server = Server(httpx.Response(400, json=DENIED, headers={"x-amzn-RequestId": "req-1"}))
    http = _client(server, target)

    async def scenario() -> None:
        try:
            await (http.write if write else http.read)("POST", "/?token=s3cret", headers=SIGNED)
        finally:
            await http.aclose()

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(scenario())
    assert len(server.requests) == 1
    error = caught.value
    assert str(error) == (
        "POST /: 400 credentials rejected by http://glue.test/ (400 AccessDeniedException: User: "
        "arn:aws:sts::123456789012:assumed-role/janitor/i-0abc is not authorized to perform: "
        "glue:GetSession)"
    )
    assert "s3cret" not in str(error)
    assert (error.status, error.request_id) == (400, "req-1")
    assert error.info is not None
    assert error.info.kind is ErrorKind.AUTH
    assert http.breaker.state == "closed"
    assert _errors(target, "auth") == 1


def test_an_auth_failure_storm_does_not_open_the_breaker() -> None:
    server = Server(*[httpx.Response(400, json=DENIED)] * 6)
    http = _client(server, "g-auth-storm")

    async def scenario() -> int:
        for _ in range(6):
            with pytest.raises(AuthFailed):
                await http.read("POST", "/")
        response = await http.read("POST", "/")  # a fixed credential goes through at once
        await http.aclose()
        return response.status_code

    assert asyncio.run(scenario()) == 200
    assert http.breaker.state == "closed"
    assert len(server.requests) == 7


def test_an_oci_409_incorrect_state_comes_back_to_the_provider_as_not_now() -> None:
    body = {"code": "IncorrectState", "message": "The session is being updated"}
    server = Server(httpx.Response(409, json=body))
    http = _client(server, "o-409", OCI)

    async def scenario() -> httpx.Response:
        response = await http.write("DELETE", "sessions/s-1")
        await http.aclose()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 409
    assert len(server.requests) == 1
    assert http.error_info(response) == ErrorInfo(
        status=409,
        kind=ErrorKind.NOT_NOW,
        code="IncorrectState",
        message="The session is being updated",
    )
    assert _errors("o-409", "not_now") == 1


def test_a_glue_400_entity_not_found_comes_back_to_the_provider() -> None:
    body = {"__type": "EntityNotFoundException", "message": "Session s-1 not found."}
    server = Server(httpx.Response(400, json=body))
    http = _client(server, "g-gone")
    response = _call(http, "POST", "/", write=True)
    assert http.error_info(response).kind is ErrorKind.NOT_FOUND
    assert len(server.requests) == 1
    assert _errors("g-gone", "not_found") == 1


def test_a_glue_operation_timeout_is_unknown_on_a_write_and_retried_on_a_read() -> None:
    timeout = {"__type": "OperationTimeoutException", "message": "The operation timed out."}
    server = Server(httpx.Response(400, json=timeout))
    with pytest.raises(OutcomeUnknown, match=r"POST /: 400 OperationTimeoutException") as caught:
        _call(_client(server, "g-timeout"), "POST", "/", write=True)
    assert caught.value.info is not None
    assert caught.value.info.kind is ErrorKind.SERVER
    assert len(server.requests) == 1

    server = Server(httpx.Response(400, json=timeout))
    assert _call(_client(server, "g-timeout"), "POST", "/", write=False).status_code == 200
    assert len(server.requests) == 2
    assert _errors("g-timeout", "server") == 2


@pytest.mark.parametrize(
    ("model", "status", "body"),
    [
        (AWS_JSON, 400, THROTTLING),
        (OCI, 429, {"code": "TooManyRequests", "message": "Too many requests"}),
        (HUAWEI, 429, {"error_code": "APIG.0308", "error_msg": "over ratelimit"}),
        (PROBLEM_JSON, 429, {"type": "about:blank", "title": "Too Many Requests"}),
        (STATUS, 429, None),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_every_models_throttling_is_retried(
    model: ErrorModel, status: int, body: dict[str, str] | None
) -> None:
    target = f"throttled-{model.name}"
    server = Server(httpx.Response(status, json=body))
    assert _call(_client(server, target, model), "POST", "/", write=True).status_code == 200
    assert len(server.requests) == 2
    assert _errors(target, "throttled") == 1


def test_the_status_model_returns_a_400_whatever_its_body_says() -> None:
    server = Server(httpx.Response(400, json=THROTTLING))
    http = _client(server, "s-400", STATUS)
    response = _call(http, "POST", "/", write=False)
    assert response.status_code == 400
    assert len(server.requests) == 1
    assert http.error_info(response) == ErrorInfo(
        status=400, kind=ErrorKind.OTHER, message="Rate exceeded"
    )


def test_a_2xx_is_no_error_and_is_not_counted_as_one() -> None:
    http = _client(Server(), "g-ok")
    response = _call(http, "POST", "/", write=False)
    assert http.error_info(response) == ErrorInfo(status=200, kind=None)
    assert _requests("g-ok", "200") == 1
    assert all(_errors("g-ok", kind) == 0 for kind in ErrorKind)


# --- headers, auth and client settings -----------------------------------------------------


class RecordingAuth(httpx.Auth):
    """An auth that 'signs' the headers it sees (as OCI or SigV4 would)."""

    requires_request_body = True

    def __init__(self) -> None:
        self.signed: list[set[str]] = []

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Record the header names at signing time, then sign."""
        self.signed.append({name.lower() for name in request.headers})
        request.headers["authorization"] = "signed"
        yield request


class AsyncOnlyAuth(httpx.Auth):
    """An auth whose async flow fetches a token first (like an OAuth2 client)."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Not used by the async client."""
        raise AssertionError("the async flow must be used")
        yield request  # pragma: no cover

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Fetch a token (asynchronously), sign, and retry once on 401."""
        await asyncio.sleep(0)
        self.seen.append({name.lower() for name in request.headers})
        request.headers["authorization"] = "Bearer t1"
        response = yield request
        if response.status_code == 401:
            request.headers["authorization"] = "Bearer t2"
            yield request


TRACE = {
    "sentry-trace": "abc-def-1",
    "baggage": "sentry-release=1",
    "traceparent": "00-abc-def-01",
    "tracestate": "x=y",
}


def test_trace_headers_are_removed_before_the_inner_auth_signs() -> None:
    seen: list[httpx.Headers] = []
    auth = RecordingAuth()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=[])

    async def scenario() -> None:
        http = make_target_http(
            target="t-trace",
            base_url="http://provider.test/",
            auth=auth,
            timeout=timedelta(seconds=30),
            concurrency=1,
            rate=1000.0,
            transport=httpx.MockTransport(handler),
        )
        await http.read("GET", "api/x", headers=TRACE)
        await http.aclose()

    asyncio.run(scenario())
    assert auth.signed
    assert not auth.signed[0] & set(TRACE_HEADERS)
    assert not set(seen[0]) & set(TRACE_HEADERS)
    assert seen[0]["authorization"] == "signed"


def test_an_async_inner_auth_keeps_its_own_flow() -> None:
    auth = AsyncOnlyAuth()
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["authorization"])
        return httpx.Response(401 if len(sent) == 1 else 200, json=[])

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(
            auth=StripTraceHeaders(auth), transport=httpx.MockTransport(handler)
        ) as client:
            return await client.get("http://provider.test/api/x", headers=TRACE)

    response = asyncio.run(scenario())
    assert response.status_code == 200
    assert sent == ["Bearer t1", "Bearer t2"]
    assert not auth.seen[0] & set(TRACE_HEADERS)


def test_strip_forwards_the_inner_auths_body_needs() -> None:
    assert StripTraceHeaders(RecordingAuth()).requires_request_body
    assert not StripTraceHeaders(None).requires_request_body


def test_strip_without_inner_auth_in_a_sync_client() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(204)

    with httpx.Client(auth=StripTraceHeaders(None), transport=httpx.MockTransport(handler)) as c:
        c.get("http://provider.test/", headers=TRACE)
    assert not set(seen[0]) & set(TRACE_HEADERS)


@pytest.mark.parametrize(("configured", "connect"), [(30.0, 5.0), (2.0, 2.0)])
def test_every_timeout_is_set_explicitly(configured: float, connect: float) -> None:
    http = make_target_http(
        target="t-timeouts",
        base_url="http://provider.test/",
        auth=None,
        timeout=timedelta(seconds=configured),
        concurrency=3,
        rate=1.0,
    )
    timeout = http.client.timeout
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (
        connect,
        configured,
        configured,
        configured,
    )
    assert not http.client.follow_redirects
    assert http.client.headers["user-agent"].startswith("janitor/")
    asyncio.run(http.aclose())


# --- post_json (the webhook) ----------------------------------------------------------------


def _post(server: Server, url: str = "http://hooks.test/x?key=s3cret") -> int:
    return asyncio.run(
        post_json(
            url,
            {"event": "alert"},
            headers={"x-token": "s3cret"},
            timeout=timedelta(seconds=5),
            attempts=3,
            transport=httpx.MockTransport(server),
        )
    )


def test_the_webhook_is_retried_on_5xx_and_429() -> None:
    server = Server(httpx.Response(503), httpx.Response(429))
    assert _post(server) == 200
    assert len(server.requests) == 3


def test_a_refused_webhook_is_not_retried_and_leaks_no_secret() -> None:
    server = Server(httpx.Response(400))
    with pytest.raises(ProviderError) as caught:
        _post(server)
    assert len(server.requests) == 1
    assert "s3cret" not in str(caught.value)


def test_an_unreachable_webhook_leaks_no_secret() -> None:
    server = Server(httpx.ConnectError, httpx.ConnectError, httpx.ConnectError)
    with pytest.raises(ProviderUnavailable) as caught:
        _post(server)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_nan_is_not_a_number_of_seconds() -> None:
    assert parse_retry_after(str(math.nan)) is None
