"""The provider contract (DESIGN 6): what every provider must do, stated once.

A provider is done when ``tests/providers/test_contract.py`` passes against its fake. The
suite drives each provider through a :class:`ContractFake`: a small adapter over the
provider's own fake server that can add sessions, inject answers and count what reached the
server. The cases, each run only where the provider's API can produce it (``can``):

* listing: complete (every page), each record with its allowed actions filled in and the
  server's clock skew read; an auth failure (401/403) is an error, never an empty list; a
  failing later page fails the listing; duplicates across pages are tolerated (the later
  copy wins); a listing shorter than a reported total is an error;
* get: fresh (activity since the listing shows), ``None`` for a record that is gone;
* the action: 2xx (``accepted`` exactly for asynchronous actions), 404 (already absent),
  409 and 412 (changed), 429 with and without ``Retry-After`` (retried: it surely was not
  processed), 5xx and a timeout after sending (``OutcomeUnknown``, never retried);
* settle: the action's end state means ``executed``; an untouched record after a crash
  means "did not take effect";
* warn/withdraw (native warning channels): shown once, never stacked, withdrawn exactly;
* reading never writes and never counts as activity.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from janitor.clock import Clock
from janitor.model import Action
from janitor.providers.base import Provider

#: What a fake's ``can`` may contain: the cases its provider's API can produce.
CAPABILITIES = frozenset(
    {
        "pages",  # the listing is paged (and a later page can fail)
        "total",  # the listing reports a total (a short listing is detectable)
        "409",  # the action can answer 409 ("not now" / conflict)
        "412",  # the action takes a precondition (etag) and can answer 412
        "warn",  # a native warning channel (warn/withdraw)
    }
)


class ContractFake(Protocol):
    """A provider's fake server as the contract suite drives it."""

    #: the provider's registry name, the destructive action exercised, and the cases its API
    #: can produce (a subset of CAPABILITIES)
    provider: str
    action: Action
    can: frozenset[str]
    page_size: int

    def connect(self, clock: Clock) -> Provider:
        """A provider bound to this fake (through an httpx transport), with retries on."""
        ...

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A session the action applies to, idle for ``idle_for``; returns its id."""
        ...

    def touch(self, session_id: str) -> None:
        """The user works in the session now (its activity, and etag where it has one)."""
        ...

    def remove(self, session_id: str) -> None:
        """The session vanishes (ended by its user or the platform)."""
        ...

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
        """The next ``times`` requests of ``op`` get this answer instead of the server's.

        ``op``: ``list`` (every listing request), ``list_next`` (listing requests after the
        first page), ``get`` or ``act``. ``error`` raises that httpx error; with ``after``
        the server carries the request out first (a timeout after sending).
        """
        ...

    def duplicate_across_pages(self, session_id: str) -> None:
        """The next listing shows ``session_id`` on two consecutive pages."""
        ...

    def short_listing(self) -> None:
        """The next listing reports a total one larger than what it delivers."""
        ...

    def requests(self, op: str) -> int:
        """How many requests of ``op`` (as for :meth:`inject`) reached the server."""
        ...

    def writes(self) -> int:
        """How many requests that change state reached the server."""
        ...

    def effective(self, session_id: str) -> int:
        """How many times the action took effect on ``session_id``."""
        ...

    def activity(self, session_id: str) -> datetime | None:
        """The session's last activity as the server keeps it."""
        ...

    def finish(self, session_id: str) -> None:
        """An accepted asynchronous action completes (reaches its end state)."""
        ...

    def shown_name(self, session_id: str) -> str:
        """The name as users see it on the platform (native warnings change it)."""
        ...


ContractFactory = Callable[[Clock], ContractFake]
