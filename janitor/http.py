"""One HTTP client per target: timeouts, request budget, concurrency cap, retries, breaker.

The only module (with ``janitor.auth``) that sends requests with httpx. Providers call
:meth:`TargetHttp.read` for reads and :meth:`TargetHttp.write` for destructive calls; both
return the response for 2xx and for the errors the provider maps itself (404, 409, 412, a Glue
400 ``EntityNotFoundException`` ...), and raise a :class:`~janitor.errors.ProviderError` for the
rest. :meth:`TargetHttp.error_info` tells the provider what a returned error response said.

Each target reads its error responses with its provider family's error model
(:mod:`janitor.http_errors`; ``STATUS`` by default), so what counts as throttling or an auth
failure does not depend on the status alone:

- ``THROTTLED`` (429, or e.g. a Glue 400 ``ThrottlingException``): ``Retry-After`` is honoured
  (it holds every request of the target), reads and writes are retried (a throttled request was
  not processed), and :class:`~janitor.errors.Throttled` is raised when the attempts run out.
- ``AUTH`` (401/403, or e.g. a Glue 400 ``AccessDeniedException``):
  :class:`~janitor.errors.AuthFailed`, never retried.
- ``SERVER`` (5xx, 408, Glue's ``OperationTimeoutException``): reads are retried; a write raises
  :class:`~janitor.errors.OutcomeUnknown` (it may have been processed).
- Anything else is returned to the provider.

Retry rules otherwise (DESIGN 5): reads also retry timeouts and connection errors; writes retry
only where the request surely was not processed (throttled, connection refused or timed out, no
pool slot). A write that timed out or lost its connection after sending raises
:class:`~janitor.errors.OutcomeUnknown`. The exceptions carry the :class:`ErrorInfo` and say it
in their message; never a request header or a query string.

The circuit breaker counts server errors and transport failures. Throttling is not a failure
(backoff handles it), and neither is an auth failure: an auth failure is never retried, so it
makes no storm of requests to stop; it says nothing about the provider's health; and DESIGN 5
wants the next call after a credential fix (token files are re-read when they change) to go
through at once, not to wait out a breaker's cooldown. Repeated auth failures are reported by
the failed listing or action itself (``list_failed``, an alert), not by the breaker.

Metrics: ``janitor_provider_requests_total{target,method,status}`` counts every request (an
error class name for transport errors); ``janitor_provider_errors_total{target,kind}`` counts
every error response by its model's kind.

Every request of a target, in this order: the circuit breaker (fail fast while open), a
concurrency slot, the request budget and any ``Retry-After`` hold (checked inside the slot,
so requests queued for a slot honour a hold set meanwhile), then the send. Destructive calls
take the budget ahead of waiting reads, which keeps the gap between a session's re-check and
its DELETE to one token interval at most (the race window of reliability target T8).

The request budget is fixed (``requests_per_second = 10``, the default) or adaptive
(``"auto"``, :class:`AimdRate`): then every answer is reported back to the budget, a
``THROTTLED`` one halves the rate, and answers the provider processed make it grow. Server
errors (a 503 included, with or without ``Retry-After``), auth failures and transport errors
leave it as it is: they say nothing about the rate. ``janitor_request_budget_per_second{target}``
is the rate in force, fixed or adaptive.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import stamina

from janitor import __version__, metrics
from janitor.errors import (
    AuthFailed,
    CircuitOpen,
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
    Throttled,
)
from janitor.http_errors import STATUS, ErrorInfo, ErrorKind, ErrorModel
from janitor.targets import AdaptiveRate

log = logging.getLogger(__name__)

#: Headers that tracing libraries add and that must never reach a provider (they would
#: alter signed requests and leak trace metadata).
TRACE_HEADERS = ("sentry-trace", "baggage", "traceparent", "tracestate")
RETRY_AFTER_CAP = 60.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when there is no usable value.

    Accepts delay-seconds (``"120"``) and an HTTP date (``"Wed, 21 Oct 2026 07:28:00 GMT"``,
    compared with ``now``). A date in the past or a negative delay means "no wait" (0.0);
    anything else (junk, NaN, infinity, a date without a zone) is ignored. The result is capped at
    :data:`RETRY_AFTER_CAP` so a server asking for an hour cannot stall a sweep.
    """
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, min(seconds, RETRY_AFTER_CAP))


class StripTraceHeaders(httpx.Auth):
    """Removes tracing headers, then hands the request to the wrapped auth (which signs it).

    The inner auth's own sync and async flows are used as they are (an auth that fetches a
    token asynchronously keeps working), and its body requirements are forwarded.
    """

    def __init__(self, inner: httpx.Auth | None) -> None:
        self._inner = inner
        self.requires_request_body = bool(inner is not None and inner.requires_request_body)
        self.requires_response_body = bool(inner is not None and inner.requires_response_body)

    @staticmethod
    def strip(request: httpx.Request) -> None:
        """Drop every header in :data:`TRACE_HEADERS` from ``request``."""
        for name in TRACE_HEADERS:
            request.headers.pop(name, None)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Strip, then run the inner auth flow."""
        self.strip(request)
        if self._inner is None:
            yield request
            return
        yield from self._inner.auth_flow(request)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Strip, then run the inner auth's sync flow (which reads bodies as it needs)."""
        self.strip(request)
        if self._inner is None:
            yield request
            return
        yield from self._inner.sync_auth_flow(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Strip, then run the inner auth's async flow."""
        self.strip(request)
        if self._inner is None:
            yield request
            return
        flow = self._inner.async_auth_flow(request)
        outgoing = await flow.__anext__()
        while True:
            response = yield outgoing
            try:
                outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return


@dataclass(frozen=True, slots=True)
class Ticket:
    """What the budget knew when it let one request go: its rate window, and whether it waited.

    Handed back with the answer (:meth:`RateLimiter.answered`), so an adaptive budget can tell
    an answer to a request sent at the current rate from one already in flight at an older one.
    """

    window: int
    waited: bool


class AimdRate:
    """Additive increase, multiplicative decrease of a request rate (pure: no clock, no I/O).

    The rate starts at ``budget.start``, and each answer moves it by these rules, in order:

    1. An answer to a request sent in an earlier *window* changes nothing. A window begins at
       each decrease, so the throttled answers to a burst already in flight at the old rate
       halve the rate once, not once each (TCP's one decrease per round trip).
    2. A throttling answer halves the rate, never below ``budget.floor``, and begins a window.
    3. Another answer the provider processed, to a request that waited for the budget, adds
       ``budget.increase / rate``, never above ``budget.ceiling``: about ``increase``
       requests/s more per second while the budget is used fully, whatever the rate (TCP's
       congestion avoidance: +1 per round trip, not +1 per answer, which would grow
       exponentially).
    4. An answer to a request that did not wait changes nothing: the budget was not what held
       the target back (it was idle or bound by its concurrency), so a rate it never tried is
       not earned (RFC 7661's rule for an application-limited sender).

    Server errors, auth failures and transport errors are not answers here: the caller does not
    report them.
    """

    def __init__(self, budget: AdaptiveRate) -> None:
        self._budget = budget
        self.rate = budget.start
        self.window = 0

    def answered(self, ticket: Ticket, *, throttled: bool) -> float:
        """Apply one answer's rules and return the rate now in force."""
        if ticket.window != self.window:
            return self.rate
        if throttled:
            self.rate = max(self._budget.floor, self.rate / 2)
            self.window += 1
        elif ticket.waited:
            self.rate = min(self._budget.ceiling, self.rate + self._budget.increase / self.rate)
        return self.rate


def jitter_margin(rate: float) -> float:
    """The tokens a default bucket holds fewer than one second of ``rate``: a tenth of it,
    at least one request (see :class:`RateLimiter`)."""
    return max(1.0, rate / 10)


class RateLimiter:
    """A token bucket of ``rate`` requests per second (``burst`` at once), plus a hold.

    ``rate`` is fixed (a number) or adaptive (an :class:`~janitor.targets.AdaptiveRate`, run by
    :class:`AimdRate` from the answers reported to :meth:`answered`); without a ``burst``, the
    bucket holds one second of the rate in force less :func:`jitter_margin` (at least one
    request).

    Why the margin: a provider that allows R requests/s usually throttles with a bucket of
    about one second (R requests). With a bucket exactly the provider's, once both are
    drained janitor sends each request just as the provider earns the token for it. If a
    burst reaches the provider late (a busy event loop, the network) while the provider's
    bucket sits full, the provider earns nothing in that delay, and a request sent on time
    after it meets an empty bucket: a 429 whose ``Retry-After`` (a whole second at least)
    stops the target. Holding ``k`` tokens fewer than the provider keeps its bucket at least
    ``k`` requests fuller than janitor's, which absorbs delays of up to ``k / R`` seconds (a
    tenth of a second from 10 requests/s up), for the price of ``k`` requests of the first
    burst. S1 (docs/benchmarks.md) went from 17-51 throttled requests per sweep to none.

    ``hold(seconds)`` (a Retry-After) makes every request wait until it has passed. Ordinary
    requests take tokens in arrival order. ``urgent`` requests (a destructive call right
    after its re-check) take tokens in their own arrival order, ahead of every ordinary
    request still waiting: the gap between a re-check and its call stays short (T8), and
    the rate still holds for all requests together.
    """

    def __init__(self, target: str, rate: float | AdaptiveRate, burst: float | None = None) -> None:
        self._target = target
        self._aimd = AimdRate(rate) if isinstance(rate, AdaptiveRate) else None
        self._burst = burst
        self._rate = rate.start if isinstance(rate, AdaptiveRate) else rate
        self._capacity = self._capacity_at(self._rate)
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._hold_until = 0.0
        self._lock = asyncio.Lock()
        self._urgent_lock = asyncio.Lock()
        self._urgent = 0
        self._gauge = metrics.REQUEST_BUDGET.labels(target)
        self._gauge.set(self._rate)

    @property
    def rate(self) -> float:
        """Requests per second allowed now: the fixed rate, or the adaptive one in force."""
        return self._rate

    @property
    def adaptive(self) -> bool:
        """True for ``requests_per_second = "auto"``."""
        return self._aimd is not None

    def _capacity_at(self, rate: float) -> float:
        if self._burst is not None:
            return self._burst
        return max(1.0, rate - jitter_margin(rate))

    def answered(self, ticket: Ticket, *, throttled: bool) -> None:
        """Report the provider's answer to a request let go with ``ticket``.

        ``throttled``: the answer said "slow down" (429, a throttling code). Report only
        answers that say something about the rate: not server errors, auth failures or
        transport errors. A fixed budget ignores every report.
        """
        if self._aimd is None:
            return
        rate = self._aimd.answered(ticket, throttled=throttled)
        if rate != self._rate:
            self._refill(time.monotonic())  # the tokens earned so far, at the old rate
            self._rate = rate
            self._capacity = self._capacity_at(rate)  # the next refill trims the tokens to it
            self._gauge.set(rate)

    @property
    def held_until(self) -> float:
        """The ``time.monotonic()`` instant before which no request may go out."""
        return self._hold_until

    def hold(self, seconds: float) -> None:
        """Make every request wait at least ``seconds`` from now (a Retry-After)."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)

    async def acquire(self, *, urgent: bool = False) -> Ticket:
        """Wait for a token and for any hold; ``urgent`` goes ahead of ordinary requests.

        Returns the request's :class:`Ticket`, to report its answer with (:meth:`answered`).
        """
        if urgent:
            self._urgent += 1
            try:
                async with self._urgent_lock:
                    waited = await self._wait(defer=False)
            finally:
                self._urgent -= 1
        else:
            async with self._lock:
                waited = await self._wait(defer=True)
        if waited:
            metrics.RATE_LIMIT_WAITS.labels(self._target).inc()
            metrics.RATE_LIMIT_WAIT_SECONDS.labels(self._target).inc(waited)
        return Ticket(self._aimd.window if self._aimd is not None else 0, waited > 0)

    async def _wait(self, *, defer: bool) -> float:
        waited = 0.0
        while True:
            if defer and self._urgent:
                # leave the next token to the urgent request, then look again
                delay = max(self._take(dry=True), 0.001)
            else:
                delay = self._take()
                if delay <= 0:
                    return waited
            waited += delay
            await asyncio.sleep(delay)

    def _take(self, *, dry: bool = False) -> float:
        """Take a token and return 0.0, or return how long until one is free.

        With ``dry``, only say how long (0.0: one is free now) and take nothing.
        """
        now = time.monotonic()
        self._refill(now)
        if self._hold_until > now:
            return self._hold_until - now
        if self._tokens >= 1:
            if not dry:
                self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now


class CircuitBreaker:
    """Opens after ``threshold`` failures among the last ``window`` calls; half-opens later.

    States: *closed* (calls go through), *open* (every call fails fast with
    :class:`CircuitOpen`), *half-open* (``cooldown`` seconds after opening: one trial call
    goes through while the others still fail fast; its success closes the breaker, its
    failure opens it again). A trial that never reports back (cancelled) is replaced by a new
    one after another ``cooldown``. Throttling (429) is not a failure: backoff handles it.

    With the defaults, a storm in which every call fails opens the breaker at the 5th call,
    and any 10 consecutive calls of which half fail open it within those 10 calls (T14).
    """

    def __init__(
        self,
        target: str,
        *,
        threshold: int = 5,
        window: int = 10,
        cooldown: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._target = target
        self._threshold = threshold
        self._results: deque[bool] = deque(maxlen=window)
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._opened_at: float | None = None
        self._trial_at: float | None = None

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self._opened_at is None:
            return "closed"
        if self._monotonic() - self._opened_at < self._cooldown:
            return "open"
        return "half-open"

    @property
    def is_open(self) -> bool:
        """True while calls are refused (open, or half-open with its trial call under way)."""
        state = self.state
        if state == "half-open":
            return self._trial_busy()
        return state == "open"

    def _trial_busy(self) -> bool:
        return self._trial_at is not None and self._monotonic() - self._trial_at < self._cooldown

    def check(self) -> None:
        """Raise CircuitOpen if calls are refused now; in half-open, admit one trial call."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial_busy():
            self._trial_at = self._monotonic()
            log.warning("circuit breaker of target %s half-open: one trial call", self._target)
            return
        raise CircuitOpen(
            f"circuit breaker of target {self._target} is open after an error storm",
            target=self._target,
        )

    def record(self, ok: bool) -> None:
        """Record one call's result; open the breaker on a storm."""
        self._results.append(ok)
        if self._opened_at is not None:
            if self.state == "open":
                return  # a call that started before the breaker opened
            self._trial_at = None
            self._results.clear()
            if ok:
                self._opened_at = None
                metrics.CIRCUIT_OPEN.labels(self._target).set(0)
                log.warning("circuit breaker of target %s closed again", self._target)
            else:
                self._opened_at = self._monotonic()
                log.error(
                    "circuit breaker of target %s: trial call failed, open again", self._target
                )
            return
        failures = self._results.count(False)
        if not ok and failures >= self._threshold:
            self._opened_at = self._monotonic()
            metrics.CIRCUIT_OPEN.labels(self._target).set(1)
            log.error(
                "circuit breaker of target %s opened: %d of the last %d calls failed",
                self._target,
                failures,
                len(self._results),
            )


class TargetHttp:
    """The HTTP client of one target. Create with :func:`make_target_http`."""

    def __init__(
        self,
        *,
        target: str,
        client: httpx.AsyncClient,
        concurrency: int,
        rate: float | AdaptiveRate,
        read_attempts: int = 4,
        write_attempts: int = 3,
        retry_timeout: float = 60.0,
        errors: ErrorModel = STATUS,
    ) -> None:
        self.target = target
        self.client = client
        self.errors = errors
        self.limiter = RateLimiter(target, rate)
        self.breaker = CircuitBreaker(target)
        self._slots = asyncio.Semaphore(concurrency)
        self._read_attempts = read_attempts
        self._write_attempts = write_attempts
        self._retry_timeout = retry_timeout
        self.server_skew: timedelta | None = None
        #: where the credentials come from, for auth errors ("token from token_file /x")
        self.credential = ""

    def error_info(self, response: httpx.Response) -> ErrorInfo:
        """What ``response`` said, read with this target's error model (``kind`` None: no error).

        For the error responses :meth:`read` and :meth:`write` return to the provider, e.g. a
        Glue 400 ``EntityNotFoundException`` (``NOT_FOUND``: already absent) or an OCI 409
        ``IncorrectState`` (``NOT_NOW``: skipped, decided again next sweep).
        """
        return self.errors.read(response)

    async def read(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """A request without side effects; retried when throttled, on server errors and timeouts."""
        return await self._retried(method, url, write=False, **kw)

    async def write(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """A destructive request; retried only when it surely was not processed."""
        return await self._retried(method, url, write=True, **kw)

    async def _retried(self, method: str, url: str, *, write: bool, **kw: Any) -> httpx.Response:
        attempts = self._write_attempts if write else self._read_attempts
        previous: Exception | None = None
        async for attempt in stamina.retry_context(
            on=_retry_write if write else _retry_read,
            attempts=attempts,
            timeout=self._retry_timeout,
            wait_initial=0.5,
            wait_max=10.0,
        ):
            if previous is not None:
                log.warning(
                    "retrying %s %s (%d/%d) after %s",
                    method,
                    self.url_of(url),
                    attempt.num - 1,
                    attempts - 1,
                    _cause(previous),
                )
            with attempt:
                try:
                    return await self._send(method, url, write=write, **kw)
                except Exception as exc:
                    previous = exc
                    raise
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def url_of(self, url: str) -> str:
        """The full URL of a request path, without its query (which may carry tokens)."""
        return _redact(str(self.client.base_url.join(url)))

    async def _send(self, method: str, url: str, *, write: bool, **kw: Any) -> httpx.Response:
        where = f"{method} {_redact(url)}"
        if self.breaker.is_open:
            self.breaker.check()  # fail fast, without waiting for a slot or the budget
        # The budget and any Retry-After hold are checked right before sending, inside the
        # concurrency slot, so a request queued behind a 429 waits for the hold too.
        async with self._slots:
            ticket = await self.limiter.acquire(urgent=write)
            self.breaker.check()
            try:
                response = await self.client.request(method, url, **kw)
            except httpx.HTTPError as exc:
                self._count(method, type(exc).__name__)
                self.breaker.record(False)
                raise self._transport_error(exc, where, write) from exc
        self._count(method, str(response.status_code))
        self._note_date(response)
        return self._classify(response, where, write, ticket)

    def _transport_error(self, exc: httpx.HTTPError, where: str, write: bool) -> ProviderError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return ProviderUnavailable(f"{where}: {kind} (not sent)", target=self.target)
        if write:
            return OutcomeUnknown(f"{where}: {kind} after sending", target=self.target)
        return ProviderUnavailable(f"{where}: {kind}", target=self.target)

    def _classify(
        self, response: httpx.Response, where: str, write: bool, ticket: Ticket
    ) -> httpx.Response:
        info = self.errors.read(response)
        if info.kind not in (ErrorKind.SERVER, ErrorKind.AUTH):
            self.limiter.answered(ticket, throttled=info.kind is ErrorKind.THROTTLED)
        if info.kind is None:
            self.breaker.record(True)
            return response
        metrics.PROVIDER_ERRORS.labels(self.target, info.kind).inc()
        fields: dict[str, Any] = {
            "target": self.target,
            "status": info.status,
            "request_id": _request_id(response.headers),
            "info": info,
        }
        if info.kind is ErrorKind.SERVER:
            self.breaker.record(False)
            error = OutcomeUnknown if write else ProviderUnavailable
            raise error(f"{where}: {info}", **fields)
        self.breaker.record(True)  # throttling and auth failures are not a failing provider
        if info.kind is ErrorKind.THROTTLED:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after:
                self.limiter.hold(retry_after)
            raise Throttled(
                f"{where}: {info.status} throttled{_said(info)}", retry_after=retry_after, **fields
            )
        if info.kind is ErrorKind.AUTH:
            by = f" by {_redact(str(self.client.base_url))}"
            source = f" ({self.credential})" if self.credential else ""
            raise AuthFailed(
                f"{where}: {info.status} credentials rejected{by}{source}{_said(info)}", **fields
            )
        return response

    def _count(self, method: str, status: str) -> None:
        metrics.PROVIDER_REQUESTS.labels(self.target, method, status).inc()

    def _note_date(self, response: httpx.Response) -> None:
        date = response.headers.get("date")
        if not date:
            return
        try:
            server = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return
        if server.tzinfo is not None:
            self.server_skew = server - datetime.now(UTC)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _retry_read(exc: Exception) -> bool | float:
    if isinstance(exc, Throttled):
        return exc.retry_after if exc.retry_after else True
    return isinstance(exc, ProviderUnavailable)


def _retry_write(exc: Exception) -> bool | float:
    if isinstance(exc, Throttled):
        return exc.retry_after if exc.retry_after else True
    # Only errors raised before anything was sent are ProviderUnavailable on the write path.
    return isinstance(exc, ProviderUnavailable) and exc.status is None


def _said(info: ErrorInfo) -> str:
    """`` (400 ThrottlingException: Rate exceeded)``, or nothing when only the status is known."""
    return f" ({info})" if info.code or info.message else ""


def _cause(exc: Exception) -> str:
    """A retry's cause for the log: the error class, and janitor's message when it is ours."""
    if isinstance(exc, ProviderError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def _request_id(headers: Mapping[str, str]) -> str | None:
    for name in (
        "opc-request-id",  # OCI
        "x-request-id",  # Huawei, generic
        "x-amzn-requestid",  # AWS
        "x-oracle-dms-ecid",  # ESS
        "x-jupyter-request-id",
    ):
        if name in headers:
            return headers[name]
    return None


def _redact(url: str) -> str:
    """Drop the query string: it may carry tokens."""
    return url.split("?", 1)[0]


def make_target_http(
    *,
    target: str,
    base_url: str,
    auth: httpx.Auth | None,
    timeout: timedelta,
    concurrency: int,
    rate: float | AdaptiveRate,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
    event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
    errors: ErrorModel = STATUS,
) -> TargetHttp:
    """Build a target's client: explicit timeouts everywhere, bounded pool, no redirects.

    ``errors`` is the provider family's error model (:mod:`janitor.http_errors`); ``rate`` is
    the target's ``requests_per_second``: a fixed number or an adaptive budget.
    """
    seconds = timeout.total_seconds()
    client = httpx.AsyncClient(
        base_url=base_url,
        auth=StripTraceHeaders(auth),
        timeout=httpx.Timeout(seconds, connect=min(seconds, 5.0), pool=seconds),
        limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency),
        transport=transport,
        headers={"user-agent": f"janitor/{__version__}", **(headers or {})},
        follow_redirects=False,
        trust_env=True,
        event_hooks=dict(event_hooks or {}),
    )
    http = TargetHttp(
        target=target, client=client, concurrency=concurrency, rate=rate, errors=errors
    )
    http.credential = str(getattr(auth, "source", "") or "")
    return http


async def post_json(
    url: str,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: timedelta,
    attempts: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> int:
    """POST JSON to a webhook, retried with backoff on 429, 5xx and transport errors.

    Returns the final status; raises ProviderUnavailable when every attempt failed. The URL
    and headers may hold secrets: neither appears in the error.
    """
    seconds = timeout.total_seconds()
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(seconds, connect=min(seconds, 5.0)),
        transport=transport,
        headers={"user-agent": f"janitor/{__version__}"},
        follow_redirects=False,
        auth=StripTraceHeaders(None),
    ) as client:
        async for attempt in stamina.retry_context(
            on=_retry_read,
            attempts=attempts,
            timeout=seconds * attempts,
            wait_initial=0.5,
            wait_max=5.0,
        ):
            with attempt:
                try:
                    response = await client.post(url, json=dict(body), headers=dict(headers))
                except httpx.HTTPError as exc:
                    raise ProviderUnavailable(f"webhook: {type(exc).__name__}") from None
                if response.status_code == 429 or response.status_code >= 500:
                    raise ProviderUnavailable(
                        f"webhook: {response.status_code}", status=response.status_code
                    )
                if response.status_code >= 400:
                    raise ProviderError(
                        f"webhook: {response.status_code}", status=response.status_code
                    )
                return response.status_code
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover
