"""Shared hypothesis strategies: instants, sessions, policies, histories and decisions.

The pools below are small on purpose: names, owners, labels and kinds are drawn from values
that the policy globs can match (``keep-*`` and ``keep-me``), and timestamps are drawn near
the policies' thresholds (``2h`` ago, plus or minus a microsecond or a second), so the
properties see matches, exemptions and boundaries often, not only "nothing matched".

Timestamps are aware and expressed in many UTC offsets (half-hour, quarter-hour and DST
zones); ``now`` sometimes sits on a DST change of the host zones the time-invariance tests
switch to.

Drawing is what these property tests spend their time on (deciding costs microseconds), so
categorical fields are drawn together with one integer (:func:`draw_mixed`) and lists of
values come from precomputed tables. Shrinking still works: every choice shrinks towards the
first, simplest option.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from janitor.durations import format_duration, parse_duration
from janitor.model import (
    Action,
    Decision,
    History,
    Mark,
    PolicyRef,
    Session,
    State,
    Verdict,
)
from janitor.policy.conditions import CONDITIONS
from janitor.policy.spec import Policy, PolicySpec, compile_policy

# --- drawing several choices at once ---------------------------------------------------

_INTEGERS: dict[int, st.SearchStrategy[int]] = {}
_SAMPLED: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {}


def _integers(size: int) -> st.SearchStrategy[int]:
    if size not in _INTEGERS:
        _INTEGERS[size] = st.integers(0, size - 1)
    return _INTEGERS[size]


def _sampled(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """``st.sampled_from(values)``, built once per tuple (building strategies is slow)."""
    if values not in _SAMPLED:
        _SAMPLED[values] = st.sampled_from(values)
    return _SAMPLED[values]


def draw_mixed(draw: st.DrawFn, *choices: Sequence[Any]) -> tuple[Any, ...]:
    """One value from each of ``choices``, with few integer draws (mixed radix).

    Hypothesis favours small values in wide integer ranges, which would starve the choices
    decoded from the high digits, so each draw covers at most 256 combinations (a range
    it draws about uniformly).
    """
    picked: list[Any] = []
    group: list[Sequence[Any]] = []
    for options in (*choices, None):
        size = math.prod(len(g) for g in group)
        if group and (options is None or size * len(options) > _GROUP):
            code = draw(_integers(size))
            for member in group:
                code, index = divmod(code, len(member))
                picked.append(member[index])
            group = []
        if options is not None:
            group.append(options)
    return tuple(picked)


_GROUP = 256


def draw_index(draw: st.DrawFn, options: Sequence[Any]) -> Any:
    """One of ``options`` (which may hold unhashable values)."""
    return options[draw(_integers(len(options)))]


# --- time ------------------------------------------------------------------------------

#: The host time zones the time-invariance tests run under (reliability T6).
HOST_ZONES = ("UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham")

#: Offsets timestamps are expressed in: the host zones, DST zones, odd fixed offsets.
ZONES: tuple[tzinfo, ...] = (
    UTC,
    ZoneInfo("America/Los_Angeles"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Pacific/Chatham"),
    ZoneInfo("Australia/Lord_Howe"),  # a 30-minute DST shift
    timezone(timedelta(hours=-12)),
    timezone(timedelta(hours=14)),
    timezone(timedelta(hours=5, minutes=45)),
    timezone(-timedelta(hours=3, minutes=30)),
)

#: Instants where a host zone changes its offset (checked against zoneinfo).
DST_EDGES = (
    datetime(2026, 3, 8, 10, 0, tzinfo=UTC),  # Los Angeles: PST -> PDT
    datetime(2026, 11, 1, 9, 0, tzinfo=UTC),  # Los Angeles: PDT -> PST
    datetime(2026, 4, 4, 14, 0, tzinfo=UTC),  # Chatham: +13:45 -> +12:45
    datetime(2026, 9, 26, 14, 0, tzinfo=UTC),  # Chatham: +12:45 -> +13:45
)

#: The durations policies use; timestamps are drawn on and around them.
DURATIONS = tuple(
    timedelta(seconds=s) for s in (1, 90, 15 * 60, 3600, 5400, 2 * 3600, 86400, 7 * 86400)
)
JITTER = (
    timedelta(0),
    timedelta(microseconds=1),
    -timedelta(microseconds=1),
    timedelta(seconds=1),
    -timedelta(seconds=1),
)
#: Ages on the thresholds (each duration, plus or minus a microsecond or a second).
THRESHOLD_AGES = tuple(d + j for d in DURATIONS for j in JITTER)

_SECONDS = st.integers(min_value=1, max_value=30 * 86400)
DURATIONS_ST: st.SearchStrategy[timedelta] = st.one_of(
    st.sampled_from(DURATIONS), _SECONDS.map(lambda s: timedelta(seconds=s))
)
#: A duration as written in a policy: ``"1h30m"`` or a number of seconds.
DURATION_VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(tuple(format_duration(d) for d in DURATIONS)),
    st.sampled_from(tuple(int(d.total_seconds()) for d in DURATIONS)),
    _SECONDS.map(lambda s: format_duration(timedelta(seconds=s))),
    _SECONDS,
)


def durations() -> st.SearchStrategy[timedelta]:
    """Positive durations: the common thresholds, or any whole number of seconds up to 30d."""
    return DURATIONS_ST


def duration_values() -> st.SearchStrategy[Any]:
    """A duration as written in a policy: ``"1h30m"`` or a number of seconds."""
    return DURATION_VALUES


def spec_duration(value: Any) -> timedelta:
    """The timedelta a policy's duration value stands for (the inverse of duration_values)."""
    if isinstance(value, str):
        return parse_duration(value)
    return timedelta(seconds=value)


INSTANTS: st.SearchStrategy[datetime] = st.one_of(
    st.datetimes(
        min_value=datetime(2020, 1, 1),  # noqa: DTZ001 (hypothesis wants naive bounds)
        max_value=datetime(2035, 12, 31),  # noqa: DTZ001 (the zone comes from `timezones`)
        timezones=st.just(UTC),
    ),
    st.builds(
        lambda edge, delta: edge + delta,
        st.sampled_from(DST_EDGES),
        st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2)),
    ),
)


def instants() -> st.SearchStrategy[datetime]:
    """A ``now``: aware UTC, 2020-2035, sometimes within two days of a DST change."""
    return INSTANTS


AGES: st.SearchStrategy[timedelta] = st.one_of(
    st.sampled_from(THRESHOLD_AGES),
    # microseconds from 10 minutes in the future to 60 days ago (one draw, unlike timedeltas)
    st.integers(-600 * 10**6, 60 * 86400 * 10**6).map(lambda us: timedelta(microseconds=us)),
)


def ages() -> st.SearchStrategy[timedelta]:
    """How long before ``now`` something happened (negative: slightly in the future)."""
    return AGES


_REPORTED = (True, True, True, False)


def draw_timestamp(draw: st.DrawFn, now: datetime) -> datetime:
    """Draw an aware timestamp near ``now``, expressed in a random UTC offset."""
    zone = draw_index(draw, ZONES)
    return (now - draw(AGES)).astimezone(zone)


def draw_optional_timestamp(draw: st.DrawFn, now: datetime) -> datetime | None:
    """Draw a timestamp near ``now`` (three times in four), or None (not reported)."""
    reported, zone = draw_mixed(draw, _REPORTED, ZONES)
    return (now - draw(AGES)).astimezone(zone) if reported else None


@st.composite
def timestamps(draw: st.DrawFn, now: datetime) -> datetime:
    """An aware timestamp near ``now``, expressed in a random UTC offset."""
    return draw_timestamp(draw, now)


@st.composite
def optional_timestamps(draw: st.DrawFn, now: datetime) -> datetime | None:
    """A timestamp, or None (not reported)."""
    return draw_optional_timestamp(draw, now)


# --- sessions ------------------------------------------------------------------------

TARGETS = ("nb", "nb-prod", "aidp-eu", "glue")
TARGET_GLOBS = ("*", "nb", "nb-*", "aidp-*", "glue", "nothing")
NAMES = (
    "keep-me",
    "keep-",
    "tmp-1",
    "tmp-22",
    "analysis.ipynb",
    "a-notebook",
    "b",
    "work/keep-x",
    "x-keep",
    "",
    "KEEP-upper",
    "ünïcødé",
    "a*b",
    "[x]",
)
NAME_GLOBS = ("keep-*", "*-keep", "tmp-?", "[ab]*", "*.ipynb", "*")
OWNERS = ("alice", "bob", "svc-etl", "", "Alice")
OWNER_GLOBS = ("alice", "svc-*", "*", "b?b")
LABEL_KEYS = ("team", "keep", "env", "kernel_name")
LABEL_SETS: tuple[dict[str, str] | None, ...] = (
    None,  # tags that could not be read
    {},
    {"kernel_name": "python3"},
    {"keep": "true"},
    {"keep": "false", "team": "prod"},
    {"team": "prod-eu", "env": "dev"},
    {"env": "prod", "keep": ""},
    {"team": "dev", "env": "prod-eu", "kernel_name": "python3"},
    {"keep": "true", "env": "prod", "team": "false"},
)
LABEL_GLOBS = ("true", "prod*", "*", "dev")
KINDS = ("notebook", "kernel", "console", "sql", "job")
PROVIDER_STATES = ("idle", "busy", "starting", "dead", "Running", "SUCCEEDED", "weird")
ANOMALIES = (
    "last_activity has no time zone: '2026-01-01T00:00:00'",
    "last_activity lies in the future: '2099-01-01T00:00:00Z'",
    "connections is not a count: -1",
)
MATCHABLE_STATES = tuple(s for s in State if s is not State.UNKNOWN)
#: Actions a generated policy may name (force_cancel has its own rules: tested apart).
POLICY_ACTIONS = tuple(a for a in Action if a.in_policies and a is not Action.FORCE_CANCEL)
#: What a record allows: mostly everything (None), sometimes a narrower set.
_RECORD_ACTIONS: tuple[frozenset[Action] | None, ...] = (
    *(None,) * 20,
    frozenset(POLICY_ACTIONS),
    frozenset({Action.NOTIFY}),
    frozenset({Action.DELETE, Action.NOTIFY}),
    frozenset({Action.STOP, Action.CANCEL}),
)

NAMES_ST: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(NAMES), st.sampled_from(NAMES), st.text(max_size=8)
)
#: Idle sessions are what policies are about: drawn more often than the other states.
_STATE_OPTIONS = (*(State.IDLE,) * 8, *State)
_PROVIDERS = ("jupyter", "aidp", "glue")
_KIND_OPTIONS = (*KINDS, "", "Notebook", "ünï")
_CONNECTIONS = (None, 0, 0, 1, 2, 4)
_OWNER_OPTIONS = (None, *OWNERS)
_ETAGS = (None, "W/1")
_ANOMALY_OPTIONS: tuple[tuple[str, ...], ...] = ((),) * 40 + tuple((a,) for a in ANOMALIES)


def names() -> st.SearchStrategy[str]:
    """Session names: the pool (which the globs match) or arbitrary text."""
    return NAMES_ST


def draw_session(
    draw: st.DrawFn,
    now: datetime,
    *,
    states: st.SearchStrategy[State] | None = None,
    anomalies: st.SearchStrategy[tuple[str, ...]] | None = None,
) -> Session:
    """Draw a normalized session around ``now``: any state, optional and odd timestamps."""
    target, provider, kind, provider_state, connections, owner, labels, etag, state, flaws = (
        draw_mixed(
            draw,
            TARGETS,
            _PROVIDERS,
            _KIND_OPTIONS,
            PROVIDER_STATES,
            _CONNECTIONS,
            _OWNER_OPTIONS,
            LABEL_SETS,
            _ETAGS,
            _STATE_OPTIONS,
            _ANOMALY_OPTIONS,
        )
    )
    return Session(
        target=target,
        provider=provider,
        id="s-1",
        name=draw(NAMES_ST),
        kind=kind,
        state=draw(states) if states is not None else state,
        provider_state=provider_state,
        last_activity=draw_optional_timestamp(draw, now),
        created_at=draw_optional_timestamp(draw, now),
        state_since=draw_optional_timestamp(draw, now),
        connections=connections,
        owner=owner,
        labels=labels,
        etag=etag,
        anomalies=draw(anomalies) if anomalies is not None else flaws,
        actions=draw(st.sampled_from(_RECORD_ACTIONS)),
    )


@st.composite
def sessions(
    draw: st.DrawFn,
    now: datetime,
    *,
    states: st.SearchStrategy[State] | None = None,
    anomalies: st.SearchStrategy[tuple[str, ...]] | None = None,
) -> Session:
    """A normalized session around ``now``: any state, optional and odd timestamps."""
    return draw_session(draw, now, states=states, anomalies=anomalies)


def name_matching(glob: str, filler: str = "x") -> str:
    """A name that ``glob`` matches (for the globs of NAME_GLOBS and OWNER_GLOBS)."""
    text = re.sub(r"\[([^\]]+)\]", lambda m: m.group(1)[0], glob)
    text = text.replace("*", filler).replace("?", "y")
    assert fnmatch.fnmatchcase(text, glob), (text, glob)
    return text


# --- policies ------------------------------------------------------------------------

POLICY_NAMES = ("a", "b", "c", "d", "e", "keep-out", "zz")
#: Conditions that measure activity. As ``exempt`` keys they protect the *less* alive
#: sessions (``exempt: {age: 30d}`` exempts old ones), so making a session more alive can
#: remove such an exemption; the monotonicity properties leave them out of ``exempt``.
ACTIVITY_KEYS = frozenset({"idle_for", "in_state_for", "age", "max_connections"})


def _subsets(values: Sequence[str], max_size: int) -> st.SearchStrategy[Any]:
    """A single value, or a list of up to ``max_size`` distinct values (one draw)."""
    options: list[Any] = list(values)
    for size in range(1, max_size + 1):
        options += [list(c) for c in itertools.combinations(values, size)]
    return st.sampled_from(options)


def _label_conditions() -> st.SearchStrategy[dict[str, str]]:
    options = [{k: g} for k in LABEL_KEYS for g in LABEL_GLOBS]
    options += [{"keep": "true", "env": "prod*"}, {"team": "*", "kernel_name": "*"}]
    return st.sampled_from(options)


#: A value strategy for every registered condition. A new condition without an entry here
#: makes the property tests fail, so its generator (and its oracle) gets written.
CONDITION_VALUES: Mapping[str, st.SearchStrategy[Any]] = {
    "state": _subsets([s.value for s in MATCHABLE_STATES], 3),
    "provider_state": _subsets(PROVIDER_STATES, 2),
    "idle_for": DURATION_VALUES,
    "in_state_for": DURATION_VALUES,
    "age": DURATION_VALUES,
    "max_connections": st.integers(0, 3),
    "name": _subsets(NAME_GLOBS, 2),
    "owner": _subsets(OWNER_GLOBS, 2),
    "labels": _label_conditions(),
    "kind": _subsets(KINDS, 2),
}
ALL_KEYS = tuple(sorted(CONDITIONS))
#: Keys drawn more often in ``match``: the activity-based ones make realistic policies.
MATCH_WEIGHTED = (*ALL_KEYS, *(("state", "idle_for", "max_connections", "age") * 2))


def draw_conditions(
    draw: st.DrawFn, keys: Sequence[str], *, min_size: int, max_size: int
) -> dict[str, Any]:
    """Draw a ``match`` or ``exempt`` block with keys drawn from ``keys``."""
    if not keys:
        return {}
    options = tuple(keys)
    count, *chosen = draw_mixed(draw, range(min_size, max_size + 1), *([options] * max_size))
    return {key: draw(CONDITION_VALUES[key]) for key in dict.fromkeys(chosen[:count])}


_PRIORITIES = (0, 10, 10, 100)
_TARGET_LISTS: tuple[list[str], ...] = (
    *(["*"] for _ in range(8)),
    *([g] for g in TARGET_GLOBS[1:]),
    ["nb", "glue"],
    ["nb-*", "aidp-*"],
    ["nothing", "*"],
)
_OBSERVATIONS = (1, 1, 1, 2, 3)
_ENABLED = (True,) * 9 + (False,)
_HAS_GRACE = (False, True, True)
_COUNTS = st.one_of(st.none(), st.integers(0, 12))
PERCENTS: st.SearchStrategy[float] = st.one_of(
    st.sampled_from((1.0, 10.0, 25.0, 33.3, 50.0, 99.9, 100.0)),
    st.floats(min_value=0, max_value=100, exclude_min=True, allow_nan=False),
)
_OPTIONAL_PERCENTS = st.one_of(st.none(), PERCENTS)


def draw_spec(
    draw: st.DrawFn,
    name: str,
    *,
    match_keys: Sequence[str] = MATCH_WEIGHTED,
    exempt_keys: Sequence[str] = ALL_KEYS,
    modes: Sequence[str] = ("dry-run", "enforce"),
    actions: Sequence[Action] = POLICY_ACTIONS,
    grace: st.SearchStrategy[Any] | None = None,
    limits: bool = False,
) -> dict[str, Any]:
    """Draw a policy document entry (what ``policy apply`` reads), valid by construction."""
    priority, targets, action, mode, observations, enabled, has_grace = draw_mixed(
        draw, _PRIORITIES, _TARGET_LISTS, actions, modes, _OBSERVATIONS, _ENABLED, _HAS_GRACE
    )
    spec: dict[str, Any] = {
        "name": name,
        "priority": priority,
        "targets": list(targets),
        "match": draw_conditions(draw, match_keys, min_size=1, max_size=2),
        "action": action.value,
        "mode": mode,
    }
    exempt = draw_conditions(draw, exempt_keys, min_size=0, max_size=2)
    if exempt:
        spec["exempt"] = exempt
    value = draw(grace) if grace is not None else draw(DURATION_VALUES) if has_grace else None
    if value is not None:
        spec["grace"] = value
    if observations != 1:
        spec["min_observations"] = observations
    if not enabled:
        spec["enabled"] = False
    if limits:
        count = draw(_COUNTS)
        if count is not None:
            spec["max_actions_per_sweep"] = count
        percent = draw(_OPTIONAL_PERCENTS)
        if percent is not None:
            spec["max_actions_percent"] = percent
    return spec


@st.composite
def policy_specs(draw: st.DrawFn, name: str, **spec_kw: Any) -> dict[str, Any]:
    """A policy document entry; keywords as :func:`draw_spec`."""
    return draw_spec(draw, name, **spec_kw)


def percents() -> st.SearchStrategy[float]:
    """A percentage limit: ``0 < p <= 100``, round numbers and arbitrary floats."""
    return PERCENTS


def compile_spec(spec: Mapping[str, Any], version: int = 1) -> Policy:
    """Validate and compile a spec the way ``policy apply`` and the store do."""
    return compile_policy(PolicySpec.model_validate(dict(spec)), version)


_NAME_SETS = st.lists(st.sampled_from(POLICY_NAMES), min_size=1, max_size=4, unique=True)
_VERSIONS = range(1, 10)


def draw_policies(
    draw: st.DrawFn, *, min_size: int = 1, max_size: int = 4, **spec_kw: Any
) -> list[Policy]:
    """Draw compiled policies with unique names (priorities collide: ties go by name)."""
    count, *picked = draw_mixed(draw, range(min_size, max_size + 1), *([POLICY_NAMES] * max_size))
    chosen = list(dict.fromkeys(picked[:count]))
    policies = []
    for name in chosen:
        (version,) = draw_mixed(draw, _VERSIONS)
        policies.append(compile_spec(draw_spec(draw, name, **spec_kw), version))
    return policies


@st.composite
def policy_sets(draw: st.DrawFn, **kw: Any) -> list[Policy]:
    """Compiled policies with unique names; keywords as :func:`draw_policies`."""
    return draw_policies(draw, **kw)


# --- memory --------------------------------------------------------------------------

_BEFORE_WARNING = (timedelta(0), timedelta(minutes=5))
_WARNED = (False, True)
_HISTORY_KNOWN = (False, True, True, True)
_STREAKS = range(5)
_LAST_KEYS = (None, "skip|-|no_match")


def draw_mark(draw: st.DrawFn, now: datetime, policy_names: Sequence[str]) -> Mark:
    """Draw a grace mark, delivered or not; ``warned_at`` lands on grace thresholds often."""
    policy, warned, before = draw_mixed(draw, tuple(policy_names), _WARNED, _BEFORE_WARNING)
    if not warned:
        return Mark(policy=policy, marked_at=draw_timestamp(draw, now))
    warned_at = draw_timestamp(draw, now)
    return Mark(policy=policy, marked_at=warned_at - before, warned_at=warned_at)


@st.composite
def marks(draw: st.DrawFn, now: datetime, policy_names: Sequence[str]) -> Mark:
    """A grace mark, delivered or not."""
    return draw_mark(draw, now, policy_names)


def draw_history(
    draw: st.DrawFn, now: datetime, session: Session, policy_names: Sequence[str]
) -> History | None:
    """Draw what janitor may remember about ``session`` (None: first sighting)."""
    names = tuple(policy_names) or ("a",)
    known, same_state, state, streak_policy, streak, has_mark, last_key = draw_mixed(
        draw, _HISTORY_KNOWN, _WARNED, tuple(State), (None, *names), _STREAKS, _WARNED, _LAST_KEYS
    )
    if not known:
        return None
    return History(
        first_seen=draw_timestamp(draw, now),
        state=session.state if same_state else state,
        state_since=draw_timestamp(draw, now),
        streak_policy=streak_policy,
        streak=streak,
        mark=draw_mark(draw, now, names) if has_mark else None,
        last_key=last_key,
    )


@st.composite
def histories(
    draw: st.DrawFn, now: datetime, session: Session, policy_names: Sequence[str]
) -> History | None:
    """What janitor may remember about ``session`` (None: first sighting)."""
    return draw_history(draw, now, session, policy_names)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One input of ``decide``."""

    session: Session
    policies: list[Policy]
    now: datetime
    history: History | None


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    policies: dict[str, Any] | None = None,
    states: st.SearchStrategy[State] | None = None,
    anomalies: st.SearchStrategy[tuple[str, ...]] | None = None,
) -> Scenario:
    """A session, a policy set (``policies``: keywords of :func:`draw_policies`), a ``now``
    and a history."""
    now = draw(INSTANTS)
    chosen = draw_policies(draw, **(policies or {}))
    session = draw_session(draw, now, states=states, anomalies=anomalies)
    history = draw_history(draw, now, session, [p.name for p in chosen])
    return Scenario(session=session, policies=chosen, now=now, history=history)


# --- the same instants in other offsets --------------------------------------------


def shift_zone(value: datetime | None, tz: tzinfo) -> datetime | None:
    """The same instant written in ``tz``."""
    return value.astimezone(tz) if value is not None else None


def session_in_zone(session: Session, tz: tzinfo) -> Session:
    """``session`` with every timestamp written in ``tz``."""
    return replace(
        session,
        last_activity=shift_zone(session.last_activity, tz),
        created_at=shift_zone(session.created_at, tz),
        state_since=shift_zone(session.state_since, tz),
    )


def history_in_zone(history: History | None, tz: tzinfo) -> History | None:
    """``history`` with every timestamp written in ``tz``."""
    if history is None:
        return None
    mark = history.mark
    if mark is not None:
        mark = replace(
            mark, marked_at=mark.marked_at.astimezone(tz), warned_at=shift_zone(mark.warned_at, tz)
        )
    return replace(
        history,
        first_seen=history.first_seen.astimezone(tz),
        state_since=history.state_since.astimezone(tz),
        mark=mark,
    )


# --- decisions for the guards ------------------------------------------------------


def plain_session(index: int) -> Session:
    """A minimal session (the guards only look at decisions)."""
    return Session(
        target="nb",
        provider="jupyter",
        id=f"s-{index}",
        name=f"n-{index}",
        kind="notebook",
        state=State.IDLE,
        provider_state="idle",
    )


VERDICT_CYCLE = (Verdict.SKIP, Verdict.WAIT, Verdict.ACT, Verdict.ACT, Verdict.WARN)


def decision(number: int, policy: Policy | None, verdict: Verdict) -> Decision:
    """A decision as the engine makes them: WARN only for enforced policies, SKIP with none."""
    session = plain_session(number)
    if policy is None:
        return Decision(session=session, verdict=Verdict.SKIP, reason="no match", code="no_match")
    if verdict is Verdict.WARN and policy.dry_run:
        verdict = Verdict.ACT  # dry-run policies never warn
    return Decision(
        session=session,
        verdict=verdict,
        reason=f"{verdict} by {policy.name}",
        code=str(verdict),
        policy=PolicyRef(name=policy.name, version=policy.version),
        action=policy.action,
        dry_run=policy.dry_run,
        streak=1,
    )


def draw_decisions(draw: st.DrawFn, policies: Sequence[Policy], max_size: int) -> list[Decision]:
    """Draw up to ``max_size`` decisions over ``policies``, one small integer each."""
    choices = (len(policies) + 1) * len(VERDICT_CYCLE)
    codes = draw(st.lists(_integers(choices), max_size=max_size))
    result = []
    for number, code in enumerate(codes):
        which, verdict = divmod(code, len(VERDICT_CYCLE))
        policy = policies[which - 1] if which > 0 else None
        result.append(decision(number, policy, VERDICT_CYCLE[verdict]))
    return result
