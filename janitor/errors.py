"""janitor's exceptions. Nothing above ``janitor.providers`` and ``janitor.http`` sees httpx errors.

The tree::

    JanitorError
    ├── ConfigError                 bad settings or config file              -> exit 2
    ├── PolicyError                 invalid policy document (names file, policy, field) -> exit 2
    ├── UnknownProvider             a target names a provider that is not registered -> exit 2
    ├── DatabaseMissing             a read-only command found no database where it looked -> exit 2
    ├── PolicyConflict              a policy changed while an apply ran: nothing applied -> exit 1
    ├── NotFound                    no such session, keep or policy version             -> exit 1
    ├── StoreError                  the database failed or is unreachable (retryable)
    │   ├── SchemaOutdated          the schema is behind the code: run `janitor db upgrade`
    │   └── LeaseLost               our lease (fencing token) is no longer current: stop acting
    └── ProviderError               a provider call failed; ``retryable`` says whether to retry
        ├── ProviderUnavailable     timeout, connection error, 5xx (retryable for reads)
        ├── Throttled               429 or the provider's throttling code (``retry_after``)
        ├── AuthFailed              401/403: never treated as an empty listing
        ├── CircuitOpen             the target's breaker is open after an error storm
        ├── MalformedResponse       the body is not what the API documents
        ├── ActionRejected          the provider refused the action (4xx): permanent
        └── OutcomeUnknown          a destructive call whose result is not known (timeout, 5xx)

Exceptions build their message from structured fields and never contain secrets: the
HTTP layer redacts query strings and never includes request headers; what a provider's error
body said comes through :class:`janitor.http_errors.ErrorInfo`, which is bounded and redacted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from janitor.http_errors import ErrorInfo


class JanitorError(Exception):
    """Base of every error janitor raises on purpose."""


class ConfigError(JanitorError):
    """The configuration is invalid. The message names the file and the key."""


class PolicyError(JanitorError):
    """A policy document is invalid. The message names the file, the policy and the field."""


class UnknownProvider(JanitorError):
    """A target names a provider that is not in the registry."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown provider {name!r}; known providers: {', '.join(known)}")
        self.name = name
        self.known = known


class DatabaseMissing(JanitorError):
    """A command that only reads found no database file: it says where it looked."""


class PolicyConflict(JanitorError):
    """A policy changed between reading it and writing it: the apply wrote nothing.

    ``planned`` is the version the apply was based on (None: the policy did not exist),
    ``found`` the version stored now (None: it does not exist any more).
    """

    def __init__(self, name: str, planned: int | None, found: int | None, by: str = "") -> None:
        was = f"v{planned}" if planned is not None else "absent"
        now = f"v{found}" if found is not None else "absent"
        who = f" (changed by {by})" if by else ""
        super().__init__(
            f"policy {name} changed while this apply ran: it was {was} when read and is {now} "
            f"now{who}; nothing was applied. Run it again (with --plan) to see the change first"
        )
        self.name = name
        self.planned = planned
        self.found = found


class NotFound(JanitorError):
    """The session, keep or policy version asked for does not exist (the message says where
    janitor looked)."""


class StoreError(JanitorError):
    """The database could not do what was asked (unreachable, locked, failed)."""


class SchemaOutdated(StoreError):
    """The database schema is older than this version of janitor."""


class LeaseLost(StoreError):
    """The target's lease is held by someone else now; no further action may be taken."""


class ProviderError(JanitorError):
    """A provider call failed.

    Attributes:
        target: the target name.
        status: the HTTP status, when there was a response.
        request_id: the provider's request id, when it sent one.
        info: what the provider's error response said (code, message), when there was one.
        retryable: whether repeating a read could succeed.
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        status: int | None = None,
        request_id: str | None = None,
        info: ErrorInfo | None = None,
    ) -> None:
        super().__init__(message)
        self.target = target
        self.status = status
        self.request_id = request_id
        self.info = info


class ProviderUnavailable(ProviderError):
    """Timeout, connection failure or server error."""

    retryable = True


class Throttled(ProviderError):
    """The provider asked us to slow down (429 or its throttling code)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class AuthFailed(ProviderError):
    """The provider rejected our credentials (401/403)."""


class CircuitOpen(ProviderError):
    """The target's circuit breaker is open: no calls until it cools down."""


class MalformedResponse(ProviderError):
    """The provider answered with something the API does not document."""


class ActionRejected(ProviderError):
    """The provider refused the action; repeating it will not help."""


class OutcomeUnknown(ProviderError):
    """A destructive call was sent but its result is not known."""
