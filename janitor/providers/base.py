"""The Provider protocol: what every provider file implements, and the shared HTTP target keys.

A provider:
  * lists every session of its target in one :class:`~janitor.model.Listing`, or raises a
    :class:`~janitor.errors.ProviderError` (never a partial listing, never an empty list for an
    auth failure);
  * maps its states onto :class:`~janitor.model.State` in a table in its docstring;
  * returns aware UTC timestamps and records an anomaly for naive, future or malformed values;
  * re-reads one session for the re-check (``None`` when it is gone);
  * performs an action and returns a :class:`Receipt`, mapping 404 to :class:`Absent`,
    409/412 to :class:`Changed` and other refusals to ``ActionRejected``;
  * never sends anything that counts as user activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from janitor.model import Action, Listing, Session
from janitor.targets import TargetConfig

if TYPE_CHECKING:
    from janitor.clock import Clock


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """What the provider said about an action: its HTTP status and request id."""

    status: int
    request_id: str | None = None
    absent: bool = False  # the session was already gone (404): outcome already_absent
    changed: bool = False  # a precondition failed (409/412): outcome skipped_changed
    detail: str = ""


class Provider(Protocol):
    """A provider adapter bound to one target."""

    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    native_warning: ClassVar[bool]

    async def list_sessions(self) -> Listing:
        """Every session of the target, or raise ProviderError."""
        ...

    async def get_session(self, session: Session) -> Session | None:
        """The fresh record of ``session``, or None when it no longer exists."""
        ...

    async def act(self, action: Action, session: Session) -> Receipt:
        """Perform a destructive ``action`` on ``session`` (with its etag where supported)."""
        ...

    async def warn(self, session: Session, message: str) -> None:
        """Warn through the provider's own channel (only if ``native_warning``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class ProviderFactory(Protocol):
    """A provider class: its config model, its actions, and how to connect it to a target."""

    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    config_model: ClassVar[type[TargetConfig]]

    def connect(self, config: TargetConfig, clock: Clock, **http_kw: Any) -> Provider:
        """Build the provider and its HTTP client; ``http_kw`` goes to ``make_target_http``."""
        ...
