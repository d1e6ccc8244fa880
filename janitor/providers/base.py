"""The Provider protocol: what every provider implements on top of the kit's declarations.

A provider:
  * declares its actions (:class:`~janitor.providers.kit.ActionSpec`), its parent relation,
    whether its population is stable and whether it has a native warning channel;
  * lists every session of its target in one :class:`~janitor.model.Listing`, or raises a
    :class:`~janitor.errors.ProviderError` (never a partial listing, never an empty list for an
    auth failure), filling each record's ``actions`` with ``kit.allowed_actions``;
  * maps its states onto :class:`~janitor.model.State` in a table in its docstring (and in
    ``state_table``, which ``policy validate`` reads);
  * returns aware UTC timestamps and records an anomaly for naive, future or malformed values;
  * re-reads one session for the re-check (``None`` when it is gone);
  * performs an action and returns a :class:`Receipt` (``absent`` for 404, ``changed`` for
    409/412 and "not now", ``accepted`` for an asynchronous action), and raises
    ``ActionRejected`` for other refusals;
  * settles an earlier action from a fresh read (``ProviderBase.settle`` does it from the
    spec);
  * never sends anything that counts as user activity.

The contract every provider passes is tests/providers/contract.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from janitor.http import TargetHttp
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers.kit import ActionSpec, ParentRelation, Settlement, judge
from janitor.targets import TargetConfig

if TYPE_CHECKING:
    from janitor.clock import Clock


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """What the provider said about a call: its HTTP status and request id.

    ``absent``: the record was already gone (outcome ``already_absent``); ``changed``: a
    precondition failed or the provider said "not now" (409/412: ``skipped_changed``);
    ``accepted``: the provider took an asynchronous action that settles later (``accepted``;
    an action whose spec is asynchronous is accepted whatever the receipt says).
    ``original``: for a native warning, the value the call replaced (kept in janitor's
    memory for ``withdraw``).
    """

    status: int
    request_id: str | None = None
    absent: bool = False
    changed: bool = False
    accepted: bool = False
    detail: str = ""
    original: str | None = None


class Provider(Protocol):
    """A provider adapter bound to one target (see janitor.providers.kit for the declarations)."""

    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    specs: ClassVar[Mapping[Action, ActionSpec]]
    parents: ClassVar[ParentRelation]
    stable_population: ClassVar[bool]
    native_warning: ClassVar[bool]
    state_table: ClassVar[Mapping[str, State]]

    async def list_sessions(self) -> Listing:
        """Every session of the target, or raise ProviderError."""
        ...

    async def get_session(self, session: Session) -> Session | None:
        """The fresh record of ``session``, or None when it no longer exists."""
        ...

    async def act(self, action: Action, session: Session) -> Receipt:
        """Perform a destructive ``action`` on ``session`` (with its etag where supported)."""
        ...

    async def settle(
        self, action: Action, session: Session, *, accepted: bool, waited: timedelta
    ) -> Settlement:
        """Where an earlier ``action`` on ``session`` stands now (re-read, then judge)."""
        ...

    async def warn(self, session: Session, message: str, *, act_after: datetime | None) -> Receipt:
        """Show a warning on the record itself (only if ``native_warning``); idempotent.

        ``act_after`` is when janitor will act (None for a ``notify``); ``message`` is the
        whole warning, for providers that can show it.
        """
        ...

    async def withdraw(self, session: Session, original: str) -> Receipt:
        """Remove janitor's warning, restoring ``original`` exactly (only if ``native_warning``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class ProviderFactory(Protocol):
    """A provider class: its config model, its declarations, and how to connect it."""

    name: ClassVar[str]
    actions: ClassVar[frozenset[Action]]
    specs: ClassVar[Mapping[Action, ActionSpec]]
    state_table: ClassVar[Mapping[str, State]]
    config_model: ClassVar[type[TargetConfig]]

    def connect(self, config: TargetConfig, clock: Clock, **http_kw: Any) -> Provider:
        """Build the provider and its HTTP client; ``http_kw`` goes to ``make_target_http``."""
        ...


class ProviderBase:
    """Defaults shared by providers: settling from a fresh read, no native warning channel.

    Subclasses set the class-level declarations and implement ``list_sessions``,
    ``get_session`` and ``act``; they keep their target's config in ``self.config`` and the
    HTTP client in ``self.http``.
    """

    name: ClassVar[str]
    specs: ClassVar[Mapping[Action, ActionSpec]]
    parents: ClassVar[ParentRelation] = ParentRelation.NONE
    stable_population: ClassVar[bool] = True
    native_warning: ClassVar[bool] = False
    state_table: ClassVar[Mapping[str, State]] = {}

    config: TargetConfig
    http: TargetHttp

    actions: ClassVar[frozenset[Action]]  # derived from ``specs``, ``notify`` included

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.actions = frozenset({*cls.specs, Action.NOTIFY})

    def listing(self, results: Iterable[Session | InvalidRecord]) -> Listing:
        """The listing of ``results`` (records and records that could not be read, in listing
        order), with the server's clock skew seen by this target's HTTP client."""
        sessions: list[Session] = []
        invalid: list[InvalidRecord] = []
        for result in results:
            if isinstance(result, InvalidRecord):
                invalid.append(result)
            else:
                sessions.append(result)
        return Listing(
            sessions=tuple(sessions), invalid=tuple(invalid), server_skew=self.http.server_skew
        )

    async def get_session(self, session: Session) -> Session | None:
        """The fresh record (implemented by each provider)."""
        raise NotImplementedError

    async def settle(
        self, action: Action, session: Session, *, accepted: bool, waited: timedelta
    ) -> Settlement:
        """Re-read the record and judge it against the action's spec (kit.judge)."""
        fresh = await self.get_session(session)
        return judge(
            self.specs[action],
            fresh,
            accepted=accepted,
            waited=waited,
            timeout=self.config.settle_timeout,
        )

    async def warn(self, session: Session, message: str, *, act_after: datetime | None) -> Receipt:
        """No native warning channel: never called (``native_warning`` is False)."""
        raise NotImplementedError(f"{self.name} has no native warning channel")

    async def withdraw(self, session: Session, original: str) -> Receipt:
        """No native warning channel: never called (``native_warning`` is False)."""
        raise NotImplementedError(f"{self.name} has no native warning channel")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()
