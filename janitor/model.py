"""The records janitor reasons about: sessions, decisions, outcomes. Frozen, no I/O.

Every timestamp here is timezone-aware UTC. Providers build :class:`Session` records,
the policy engine turns them into :class:`Decision` records, the sweep turns decisions
into audit rows.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from janitor.frozen import slot_init


class State(enum.StrEnum):
    """Normalized session state (DESIGN 2.4). Each provider maps its own states onto these."""

    IDLE = "idle"
    BUSY = "busy"
    PENDING = "pending"  # starting or provisioning
    QUEUED = "queued"  # waiting its turn (ESS WAIT/READY/BLOCKED, Fabric WAITING)
    HELD = "held"  # held on purpose or waiting for a person (ESS HOLD, ERROR_MANUAL_RECOVERY)
    STOPPING = "stopping"
    DEAD = "dead"
    ENDED = "ended"
    UNKNOWN = "unknown"


#: States a policy matches without naming them. Any other state must be listed in
#: ``match.state`` (or its provider state in ``match.provider_state``: naming is consent);
#: ``unknown`` can never be matched at all.
QUIET_STATES: frozenset[State] = frozenset({State.IDLE, State.DEAD, State.ENDED})


class Action(enum.StrEnum):
    """What a policy does to a matching session, and the warning writes janitor makes itself.

    ``warn`` and ``withdraw`` are not policy actions: they are the provider calls of a native
    warning (AIDP renames the session), audited like actions (intent, then outcome).
    """

    DELETE = "delete"
    STOP = "stop"
    CANCEL = "cancel"
    FORCE_CANCEL = "force_cancel"
    NOTIFY = "notify"
    WARN = "warn"
    WITHDRAW = "withdraw"

    @property
    def destructive(self) -> bool:
        """True for policy actions that end or change the session's work on the provider."""
        return self in DESTRUCTIVE_ACTIONS

    @property
    def in_policies(self) -> bool:
        """True for the actions a policy may name."""
        return self not in (Action.WARN, Action.WITHDRAW)


DESTRUCTIVE_ACTIONS: frozenset[Action] = frozenset(
    {Action.DELETE, Action.STOP, Action.CANCEL, Action.FORCE_CANCEL}
)


class Verdict(enum.StrEnum):
    """What the engine concluded for one session in one sweep."""

    SKIP = "skip"  # no policy acts on it (no match, exempt, unknown, malformed)
    WAIT = "wait"  # a policy matches but must wait (observations, grace)
    WARN = "warn"  # a policy with grace matches: warn and start the grace period
    ACT = "act"  # act now (or report would_act in dry-run)


class Outcome(enum.StrEnum):
    """The result of an intended action (DESIGN 2.5 and 5)."""

    EXECUTED = "executed"
    ACCEPTED = "accepted"  # not final: the provider took an asynchronous action; settled later
    ALREADY_ABSENT = "already_absent"
    SKIPPED_CHANGED = "skipped_changed"
    WOULD_ACT = "would_act"
    BLOCKED = "blocked"
    FAILED = "failed"
    UNKNOWN = "unknown"


#: Outcomes that leave their intent open: it is reconciled (unknown) or settled (accepted).
OPEN_OUTCOMES: frozenset[Outcome] = frozenset({Outcome.UNKNOWN, Outcome.ACCEPTED})


class AuditKind(enum.StrEnum):
    """The kinds of audit rows."""

    INTENT = "intent"
    OUTCOME = "outcome"
    WARN = "warn"
    UNMARK = "unmark"
    SKIP = "skip"
    WAIT = "wait"
    LIST_FAILED = "list_failed"
    INVALID_RECORD = "invalid_record"
    BLOCKED = "blocked"
    POLICY_CHANGE = "policy_change"
    PAUSE = "pause"
    RESUME = "resume"
    SWEEP_ABORTED = "sweep_aborted"
    KEEP = "keep"  # a session protected from every policy for a while (``janitor keep``)
    UNKEEP = "unkeep"  # a keep removed before it expired
    CHECKPOINT = "checkpoint"  # ``audit prune``: rows removed, the chain continues from here


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One provider session, normalized (DESIGN 2.4).

    ``anomalies`` lists why a field could not be trusted (a naive or future timestamp, an
    unparseable value). A session with anomalies is never acted on.

    ``labels`` is None when the provider could not read them (tags unknown): a label
    exemption then exempts and a label match never matches (fail closed). ``actions`` is
    what this record allows (its provider states and flags, DESIGN 6 "Per-record actions");
    providers always fill it, None (a record built by hand) allows every action.
    ``warning`` is the native warning janitor left visible on the record (AIDP: the name
    prefix, stripped from ``name``), None when there is none.

    ``activity`` is a fingerprint of work the provider shows but does not date (Fabric's
    statement records carry only a creation time): while it is set, the session counts as
    active until the first sweep that saw this fingerprint, and ``last_activity`` is only a
    lower bound. None: ``last_activity`` is the whole truth.
    """

    target: str
    provider: str
    id: str
    name: str
    kind: str
    state: State
    provider_state: str
    last_activity: datetime | None = None
    created_at: datetime | None = None
    state_since: datetime | None = None
    connections: int | None = None
    owner: str | None = None
    labels: Mapping[str, str] | None = None
    etag: str | None = None
    parent_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    anomalies: tuple[str, ...] = ()
    actions: frozenset[Action] | None = None
    warning: str | None = None
    activity: str | None = None

    def allows(self, action: Action) -> bool:
        """True when this record allows ``action`` (see ``actions``)."""
        return self.actions is None or action in self.actions


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidRecord:
    """A listed record that could not be turned into a Session at all."""

    target: str
    id: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing:
    """A complete listing of one target. Providers raise instead of returning partial data."""

    sessions: tuple[Session, ...]
    invalid: tuple[InvalidRecord, ...] = ()
    server_skew: timedelta | None = None  # provider clock minus ours, from its Date header


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """A session a grace policy has marked: warned at ``warned_at`` (None: not yet delivered).

    ``action`` is what the warning announced: a warning about a notification is no warning
    about a deletion, so a mark counts only for a policy with the same action (None: a mark
    written before janitor recorded the action).
    """

    policy: str
    marked_at: datetime
    warned_at: datetime | None = None
    action: Action | None = None

    def counts_for(self, policy: str, action: Action) -> bool:
        """True when this mark is a warning for ``policy`` doing ``action``."""
        return self.policy == policy and self.action in (None, action)


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """What janitor remembers about a session from earlier daemon sweeps.

    ``state_since`` is when the session entered its current state *and* provider state
    (``in_state_for`` restarts when ESS WAIT becomes BLOCKED). ``original`` is the value a
    native warning replaced (the session's name before janitor's prefix), kept so
    ``withdraw`` restores it exactly; None when no native warning is applied.
    ``activity`` and ``activity_since`` remember a session's activity fingerprint (see
    :attr:`Session.activity`) and the first sweep that saw it. ``observed`` is the digest of
    the fields last written to the session history log (None: none written yet).
    """

    first_seen: datetime
    state: State
    state_since: datetime
    provider_state: str | None = None
    streak_policy: str | None = None
    streak: int = 0
    mark: Mark | None = None
    last_key: str | None = None
    original: str | None = None
    activity: str | None = None
    activity_since: datetime | None = None
    observed: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Keep:
    """An admin's protection of one session from every policy until ``until``
    (``janitor keep``). Expired, it protects nothing."""

    target: str
    session_id: str
    session_name: str
    until: datetime
    reason: str
    actor: str
    created_at: datetime

    def holds(self, now: datetime) -> bool:
        """True while the keep has not expired."""
        return now < self.until


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyRef:
    """The policy and version a decision came from."""

    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The engine's verdict on one session, with a sentence a person can read.

    ``code`` is a stable, short form of the reason (no numbers that change every sweep):
    the sweep writes a skip or wait row only when it changes.
    """

    session: Session
    verdict: Verdict
    reason: str
    code: str
    policy: PolicyRef | None = None
    action: Action | None = None
    dry_run: bool = True
    streak: int = 0

    @property
    def key(self) -> str:
        """Identifies the decision for de-duplicating audit rows across sweeps."""
        policy = str(self.policy) if self.policy else "-"
        return f"{self.verdict}|{policy}|{self.code}"


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One audit row (DESIGN 2.5). ``id``, ``prev_hash`` and ``hash`` are set by the store.

    ``details`` is structured data for scripts (a policy change's diff, a keep's expiry, a
    prune's checkpoint), JSON-native and covered by the row's hash like every other field;
    None for rows that carry none (and for every row written before it existed).
    """

    at: datetime
    kind: AuditKind
    reason: str
    actor: str
    sweep_id: str | None = None
    target: str | None = None
    session_id: str | None = None
    session_name: str | None = None
    session_kind: str | None = None
    policy: str | None = None
    policy_version: int | None = None
    action: Action | None = None
    dry_run: bool = False
    outcome: Outcome | None = None
    http_status: int | None = None
    provider_request_id: str | None = None
    error: str | None = None
    fencing_token: int | None = None
    intent_id: int | None = None
    details: Mapping[str, Any] | None = field(default=None, hash=False)
    id: int | None = None
    prev_hash: str | None = None
    hash: str | None = None

    def __post_init__(self) -> None:
        # The hash is computed over the value given here and checked against the value read
        # back from the database: only what survives a JSON round trip may go in.
        if self.details is not None:
            normal = json.loads(json.dumps(self.details, ensure_ascii=False, allow_nan=False))
            object.__setattr__(self, "details", normal)
