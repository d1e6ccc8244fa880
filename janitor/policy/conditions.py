"""Conditions: the keys of a policy's ``match`` and ``exempt`` blocks, in one registry.

Adding a condition means one class with a ``@condition("name")`` line here, test rows in
``tests/unit/test_conditions.py`` and a line in ``docs/policies.md``.

Every condition answers three-valued: True, False, or None when the session does not say
(an unknown ``last_activity``, no owner). In ``match`` an unknown never matches; in
``exempt`` an unknown exempts, so a field a provider cannot read never exposes a session.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from janitor.durations import Duration, format_duration
from janitor.frozen import slot_init
from janitor.model import History, Session, State


@slot_init
@dataclass(frozen=True, slots=True)
class Match:
    """One condition's answer: True, False or None (unknown), with a readable reason.

    ``observed`` is what the session showed (None: it did not say) and ``threshold`` what the
    condition asks for, both for people: ``explain SESSION`` prints them side by side.
    """

    value: bool | None
    reason: str
    observed: str | None = None
    threshold: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalContext:
    """What conditions may look at besides the session: the time and janitor's memory."""

    now: datetime
    history: History | None


class Probe:
    """One session under evaluation, for the fast answers of :meth:`Condition.holds`.

    The times conditions compare (idle, in state, age) are computed at most once per session,
    however many policies ask; ``now`` in UTC once per probe.
    """

    __slots__ = ("_age", "_idle", "_in_state", "_times", "ctx", "session")

    def __init__(self, session: Session, ctx: EvalContext) -> None:
        self.session = session
        self.ctx = ctx
        self._times = 0  # bit 1: idle known, 2: in state known, 4: age known
        self._idle: timedelta | None = None
        self._in_state: timedelta | None = None
        self._age: timedelta | None = None

    def idle(self) -> timedelta | None:
        """``now - last activity``; None when the last activity is unknown."""
        if not self._times & 1:
            last = last_activity(self.session, self.ctx)
            self._idle = None if last is None else elapsed(self.ctx.now, last)
            self._times |= 1
        return self._idle

    def in_state(self) -> timedelta | None:
        """How long the session has been in its state; None when unknown."""
        if not self._times & 2:
            since = state_since(self.session, self.ctx)
            self._in_state = None if since is None else elapsed(self.ctx.now, since)
            self._times |= 2
        return self._in_state

    def age(self) -> timedelta | None:
        """How long ago the session was created (else first seen); None when unknown."""
        if not self._times & 4:
            created = created_at(self.session, self.ctx)
            self._age = None if created is None else elapsed(self.ctx.now, created)
            self._times |= 4
        return self._age


class Condition(Protocol):
    """A compiled condition.

    ``evaluate`` answers with a reason (``janitor explain``, the deciding policy);
    ``holds`` gives the same value without one (the compiled engine). ``key_field`` names the
    one session field the answer depends on when there is one (``state``, ``provider_state``,
    ``kind``): the compiled engine then answers once per distinct value.
    """

    name: ClassVar[str]
    key_field: ClassVar[str | None]

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """Answer for one session."""
        ...

    def holds(self, probe: Probe) -> bool | None:
        """The value ``evaluate`` answers, without its reason."""
        ...

    def explain(self, probe: Probe) -> Match:
        """``evaluate``'s answer for the probed session (reusing the probe's times)."""
        ...


class _Evaluates(Protocol):
    def evaluate(self, session: Session, ctx: EvalContext) -> Match: ...


class _Reasoned:
    """``explain`` for conditions that need nothing from the probe: ``evaluate``."""

    def explain(self: _Evaluates, probe: Probe) -> Match:
        """``evaluate``'s answer for the probed session."""
        return self.evaluate(probe.session, probe.ctx)


class ConditionType(Protocol):
    """A condition class: built from the policy's value for its key."""

    name: ClassVar[str]

    def __call__(self, value: Any) -> Condition: ...


CONDITIONS: dict[str, ConditionType] = {}


def condition(name: str) -> Callable[[type[Any]], type[Any]]:
    """Register a condition class under ``name`` (its key in ``match`` and ``exempt``)."""

    def register(cls: type[Any]) -> type[Any]:
        cls.name = name
        CONDITIONS[name] = cast(ConditionType, cls)
        return cls

    return register


class ConditionError(ValueError):
    """A condition's value is invalid; the message says what is expected."""


def compile_condition(name: str, value: Any) -> Condition:
    """Validate ``value`` for condition ``name`` and return the compiled condition.

    Raises:
        ConditionError: unknown key or invalid value.
    """
    try:
        cls = CONDITIONS[name]
    except KeyError:
        known = ", ".join(sorted(CONDITIONS))
        close = difflib.get_close_matches(name, sorted(CONDITIONS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConditionError(f"unknown key ({hint}known conditions: {known})") from None
    return cls(value)


def _validate(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise ConditionError(str(first["msg"]).removeprefix("Value error, ")) from None


_STATES = TypeAdapter(list[State])
_STRINGS = TypeAdapter(list[str])
_POSITIVE = TypeAdapter(Duration)
_LABELS = TypeAdapter(dict[str, str])


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _duration(value: Any) -> timedelta:
    parsed: timedelta = _validate(_POSITIVE, value)
    if parsed <= timedelta(0):
        raise ConditionError("must be a positive duration such as 90s, 15m, 2h or 7d")
    return parsed


def _globs(value: Any) -> tuple[str, ...]:
    patterns = _validate(_STRINGS, _one_or_many(value))
    if not patterns:
        raise ConditionError("must list at least one value")
    return tuple(patterns)


_K = TypeVar("_K")


class _Answers(Generic[_K]):
    """Answers a condition remembers by everything they depend on (a few thousand at most).

    Conditions answer the same for the same key, so a remembered (immutable) Match is the
    very answer it would build again.
    """

    __slots__ = ("_answers",)

    #: Beyond this many, the memory starts over.
    LIMIT = 4096

    def __init__(self) -> None:
        self._answers: dict[_K, Match] = {}

    def get(self, key: _K) -> Match | None:
        """The remembered answer for ``key``, if any."""
        return self._answers.get(key)

    def remember(self, key: _K, answer: Match) -> Match:
        """Remember ``answer`` for ``key``; return it."""
        if len(self._answers) >= self.LIMIT:
            self._answers.clear()
        self._answers[key] = answer
        return answer


def _compiled_globs(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One matcher for any of ``patterns``: the expressions ``fnmatch.fnmatchcase`` uses for
    each (anchored at both ends), as alternatives of one expression compiled once."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match


def _any_glob(text: str | None, patterns: tuple[str, ...]) -> bool:
    return text is not None and any(fnmatch.fnmatchcase(text, p) for p in patterns)


@condition("state")
class StateIn(_Reasoned):
    """Normalized state is one of the listed states. ``unknown`` cannot be listed."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        values = _one_or_many(value)
        if isinstance(values, list) and State.UNKNOWN.value in values:
            raise ConditionError("'unknown' cannot be matched: janitor never acts on it")
        matchable = ", ".join(s.value for s in State if s is not State.UNKNOWN)
        try:
            states = _STATES.validate_python(values)
        except ValidationError:
            raise ConditionError(f"expected a list of states from: {matchable}") from None
        if not states:
            raise ConditionError("must list at least one state")
        self.states: frozenset[State] = frozenset(states)

    key_field: ClassVar[str | None] = "state"

    def holds(self, probe: Probe) -> bool | None:
        """True when the state is listed."""
        return probe.session.state in self.states

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when the state is listed."""
        listed = ", ".join(sorted(self.states))
        seen, wanted = str(session.state), f"one of [{listed}]"
        if session.state in self.states:
            return Match(True, f"state {session.state}", seen, wanted)
        return Match(False, f"state {session.state} not in [{listed}]", seen, wanted)


@condition("provider_state")
class ProviderStateIn(_Reasoned):
    """The provider's own state (case-insensitive) is one of the listed values."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.values = frozenset(v.lower() for v in _globs(value))

    key_field: ClassVar[str | None] = "provider_state"

    def holds(self, probe: Probe) -> bool | None:
        """True when the provider state is listed."""
        return probe.session.provider_state.lower() in self.values

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when the provider state is listed."""
        seen, wanted = session.provider_state, f"one of [{', '.join(sorted(self.values))}]"
        if session.provider_state.lower() in self.values:
            return Match(True, f"provider state {session.provider_state}", seen, wanted)
        return Match(False, f"provider state {session.provider_state} not listed", seen, wanted)


@condition("idle_for")
class IdleFor:
    """No activity for at least the duration: ``now - last_activity``. Unknown never matches."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.duration = _duration(value)
        self.limit = format_duration(self.duration)

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """Compare with the limit; None when unknown."""
        spent = probe.idle()
        return None if spent is None else spent >= self.duration

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """Compare the idle time with the limit."""
        last = last_activity(session, ctx)
        return self._judged(None if last is None else elapsed(ctx.now, last))

    def explain(self, probe: Probe) -> Match:
        """``evaluate``'s answer, from the probe's idle time."""
        return self._judged(probe.idle())

    def _judged(self, idle: timedelta | None) -> Match:
        limit = self.limit
        if idle is None:
            return Match(None, "last activity unknown", None, f"≥ {limit}")
        seen = f"idle {_short(idle)}"
        if idle >= self.duration:
            return Match(True, f"{seen} ≥ {limit}", seen, f"≥ {limit}")
        return Match(False, f"{seen} < {limit}", seen, f"≥ {limit}")


@condition("in_state_for")
class InStateFor:
    """In the current state for at least the duration (provider's time, else janitor's)."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.duration = _duration(value)
        self.limit = format_duration(self.duration)

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """Compare with the limit; None when unknown."""
        spent = probe.in_state()
        return None if spent is None else spent >= self.duration

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """Compare the time in state with the limit."""
        since = state_since(session, ctx)
        return self._judged(session, None if since is None else elapsed(ctx.now, since))

    def explain(self, probe: Probe) -> Match:
        """``evaluate``'s answer, from the probe's time in state."""
        return self._judged(probe.session, probe.in_state())

    def _judged(self, session: Session, spent: timedelta | None) -> Match:
        limit = self.limit
        if spent is None:
            return Match(None, f"time in state {session.state} unknown", None, f"≥ {limit}")
        seen = f"{session.state} for {_short(spent)}"
        if spent >= self.duration:
            return Match(True, f"{seen} ≥ {limit}", seen, f"≥ {limit}")
        return Match(False, f"{seen} < {limit}", seen, f"≥ {limit}")


@condition("age")
class AgeAtLeast:
    """Created at least the duration ago (janitor's first sighting when the provider won't say)."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.duration = _duration(value)
        self.limit = format_duration(self.duration)

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """Compare with the limit; None when unknown."""
        spent = probe.age()
        return None if spent is None else spent >= self.duration

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """Compare the age with the limit."""
        created = created_at(session, ctx)
        return self._judged(session, None if created is None else elapsed(ctx.now, created))

    def explain(self, probe: Probe) -> Match:
        """``evaluate``'s answer, from the probe's age."""
        return self._judged(probe.session, probe.age())

    def _judged(self, session: Session, age: timedelta | None) -> Match:
        limit = self.limit
        source = "age" if session.created_at is not None else "seen for"
        if age is None:
            return Match(None, "age unknown", None, f"≥ {limit}")
        seen = f"{source} {_short(age)}"
        if age >= self.duration:
            return Match(True, f"{seen} ≥ {limit}", seen, f"≥ {limit}")
        return Match(False, f"{seen} < {limit}", seen, f"≥ {limit}")


@condition("max_connections")
class MaxConnections(_Reasoned):
    """At most this many clients connected. Unknown never matches."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConditionError("must be a whole number ≥ 0")
        self.limit = value
        self._answers: _Answers[int | None] = _Answers()

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """Compare the connection count with the limit; None when unknown."""
        connections = probe.session.connections
        return None if connections is None else connections <= self.limit

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """Compare the connection count with the limit."""
        answer = self._answers.get(session.connections)
        if answer is None:
            answer = self._answers.remember(session.connections, self._reasoned(session))
        return answer

    def _reasoned(self, session: Session) -> Match:
        wanted = f"≤ {self.limit}"
        if session.connections is None:
            return Match(None, "connections unknown", None, wanted)
        seen = f"{session.connections} connections"
        if session.connections <= self.limit:
            return Match(True, seen, seen, wanted)
        return Match(False, f"{seen} > {self.limit}", seen, wanted)


@condition("name")
class NameGlob(_Reasoned):
    """The session name matches one of the globs (``keep-*``)."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.patterns = _globs(value)
        self._glob = _compiled_globs(self.patterns)

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """True when a glob matches the name."""
        return self._glob(probe.session.name) is not None

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when a glob matches the name."""
        seen, wanted = repr(session.name), f"matches {list(self.patterns)}"
        if _any_glob(session.name, self.patterns):
            return Match(True, f"name {seen} matches {list(self.patterns)}", seen, wanted)
        return Match(False, f"name {seen} does not match {list(self.patterns)}", seen, wanted)


@condition("owner")
class OwnerGlob(_Reasoned):
    """The owner matches one of the globs. Unknown owner: unknown."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.patterns = _globs(value)
        self._glob = _compiled_globs(self.patterns)

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """True when a glob matches the owner; None when the owner is unknown."""
        owner = probe.session.owner
        return None if owner is None else self._glob(owner) is not None

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when a glob matches the owner."""
        wanted = f"matches {list(self.patterns)}"
        if session.owner is None:
            return Match(None, "owner unknown", None, wanted)
        seen = repr(session.owner)
        if _any_glob(session.owner, self.patterns):
            return Match(True, f"owner {seen} matches {list(self.patterns)}", seen, wanted)
        return Match(False, f"owner {seen} does not match {list(self.patterns)}", seen, wanted)


@condition("labels")
class LabelsMatch(_Reasoned):
    """Every listed label is present and matches its glob."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        labels: dict[str, str] = _validate(_LABELS, value)
        if not labels:
            raise ConditionError("must list at least one label")
        self.labels: Mapping[str, str] = labels

    key_field: ClassVar[str | None] = None

    def holds(self, probe: Probe) -> bool | None:
        """True when all labels match; None when they could not be read."""
        labels = probe.session.labels
        if labels is None:
            return None
        for key, pattern in self.labels.items():
            value = labels.get(key)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when all labels match; unknown when the provider could not read them."""
        wanted = f"match {dict(self.labels)}"
        if session.labels is None:
            return Match(None, "labels unknown (they could not be read)", None, wanted)
        seen = repr({key: session.labels.get(key) for key in self.labels})
        for key, pattern in self.labels.items():
            value = session.labels.get(key)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return Match(
                    False, f"label {key}={value!r} does not match {pattern!r}", seen, wanted
                )
        return Match(True, f"labels match {dict(self.labels)}", seen, wanted)


@condition("kind")
class KindIn(_Reasoned):
    """The session kind (``notebook``, ``kernel``, ``sql``, ``job``, ...) is listed."""

    name: ClassVar[str]

    def __init__(self, value: Any) -> None:
        self.kinds = frozenset(_globs(value))

    key_field: ClassVar[str | None] = "kind"

    def holds(self, probe: Probe) -> bool | None:
        """True when the kind is listed."""
        return probe.session.kind in self.kinds

    def evaluate(self, session: Session, ctx: EvalContext) -> Match:
        """True when the kind is listed."""
        seen, wanted = session.kind, f"one of {sorted(self.kinds)}"
        if session.kind in self.kinds:
            return Match(True, f"kind {session.kind}", seen, wanted)
        return Match(False, f"kind {session.kind} not in {sorted(self.kinds)}", seen, wanted)


def _short(value: timedelta) -> str:
    """:func:`~janitor.durations.format_short` by arithmetic (a reason per deciding policy
    costs no regular expression): the two largest units from the first that is not zero,
    zeros left out, rounded down to the second like ``format_duration``."""
    seconds = int(value.total_seconds())
    if seconds < 0:
        return "-" + _short_of(-seconds)
    return _short_of(seconds)


def _short_of(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    return f"{rest}s"


def elapsed(now: datetime, since: datetime) -> timedelta:
    """``now - since`` as real time. Python subtracts two datetimes that share a tzinfo as wall
    clock times, so across a DST change two values in the same zone (say both in
    America/Los_Angeles) would be an hour off; converting both to UTC first never is."""
    return now.astimezone(UTC) - since.astimezone(UTC)


def state_since(session: Session, ctx: EvalContext) -> datetime | None:
    """When the session entered its current state: the provider's value, else janitor's.

    janitor's memory counts only while both the normalized and the provider state are the
    ones it remembers (ESS WAIT → BLOCKED restarts the count).
    """
    if session.state_since is not None:
        return session.state_since
    history = ctx.history
    if (
        history is not None
        and history.state == session.state
        and history.provider_state in (None, session.provider_state)
    ):
        return history.state_since
    return None


def created_at(session: Session, ctx: EvalContext) -> datetime | None:
    """When the session was created: the provider's value, else janitor's first sighting."""
    if session.created_at is None and ctx.history is not None:
        return ctx.history.first_seen
    return session.created_at


def last_activity(session: Session, ctx: EvalContext) -> datetime | None:
    """The session's last activity, with undated activity counted from janitor's first sight.

    A session with an activity fingerprint (work the provider shows but does not date, see
    :attr:`Session.activity`) was active at least until the first sweep that saw that
    fingerprint; before janitor has seen it in an earlier sweep, its idleness is unknown.
    """
    if session.activity is None:
        return session.last_activity
    history = ctx.history
    if history is None or history.activity != session.activity or history.activity_since is None:
        return None
    if session.last_activity is None:
        return history.activity_since
    return max(session.last_activity, history.activity_since)
