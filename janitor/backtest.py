"""``janitor backtest``: what draft policies would have done, replayed from the session
history log. Reads only; acts on nothing, writes nothing.

For each target, the log's rows rebuild the sessions as they were at every sweep of the
window: the sweeps that logged a change, and sweeps every ``step`` (the sweep interval) in
between, as the daemon runs. At each of those instants the replay does what a daemon sweep
does, with the drafts in place of the stored policies and nothing sent anywhere:

1. the sessions listed then (a session logged as gone is not);
2. :func:`~janitor.policy.engine.decide` with the replay's own memory (first sighting, time in
   state, streaks, marks), advanced by :func:`janitor.memory.advance` exactly as a recorded
   sweep advances it;
3. the guards of :func:`janitor.plan.make_plan` (blast radius, cascades, population drop);
4. a warning is taken as delivered when given; an enforced action that removes or ends the
   session takes it out of the replay.

It counts, per policy, target and day, the sessions each draft would have acted on (once per
session; ``would_act`` for a dry-run draft), warned, or had held back by a guard. What the
replay cannot know: keeps and pauses of the past, open intents, clock skew, and a provider's
answer to the action; a session whose fields never changed is seen from its last logged row.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from janitor import memory
from janitor.history import rebuild
from janitor.model import Action, Decision, History, Listing, Session, Verdict
from janitor.plan import make_plan
from janitor.policy.compiled import CompiledPolicies
from janitor.policy.engine import decide
from janitor.policy.spec import Policy
from janitor.providers.base import Provider
from janitor.store.history import REMOVED, Observed
from janitor.targets import TargetConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Act:
    """One session a draft would have acted on (first time only)."""

    policy: str
    target: str
    session_id: str
    session: str
    at: datetime
    action: Action
    dry_run: bool


@dataclass
class Tally:
    """Counts of one (policy, target, day)."""

    acts: int = 0
    warns: int = 0
    held: int = 0


@dataclass
class TargetReplay:
    """One target's replay: what each draft did, and how many sweeps were replayed."""

    target: str
    sweeps: int = 0
    sessions: int = 0
    acts: list[Act] = field(default_factory=list)
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)  # (policy, day)
    held: dict[str, str] = field(default_factory=dict)  # policy -> the last guard's reason
    warned: list[tuple[str, datetime]] = field(default_factory=list)  # (session id, when)

    def tally(self, policy: str, at: datetime) -> Tally:
        """The counts of ``policy`` on the day of ``at`` (UTC)."""
        return self.tallies.setdefault((policy, at.date().isoformat()), Tally())


def instants(
    changes: Sequence[datetime], since: datetime, until: datetime, step: timedelta
) -> list[datetime]:
    """The sweeps to replay: every logged change in the window, and one every ``step`` after
    each of them (and from ``since``) until the next change, as the daemon's interval runs."""
    marks = sorted({t for t in changes if since <= t <= until})
    starts = [since, *marks]
    result = set(marks)
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else until + step
        point = start + step
        while point < end and point <= until:
            result.add(point)
            point += step
    return sorted(result)


def replay_target(
    target: TargetConfig,
    provider: Provider,
    drafts: Sequence[Policy],
    log: Mapping[str, Sequence[Observed]],
    *,
    since: datetime,
    until: datetime,
    step: timedelta,
    progress: Callable[[], None] | None = None,
) -> TargetReplay:
    """Replay one target's log between ``since`` and ``until`` against ``drafts``. Pure."""
    report = TargetReplay(target=target.name, sessions=len(log))
    timeline = {sid: (list(rows), [r.at for r in rows]) for sid, rows in log.items()}
    points = instants([r.at for rows in log.values() for r in rows], since, until, step)
    remembered: dict[str, History] = {}
    done: set[tuple[str, str]] = set()  # (policy, session) already counted as acted on
    removed: set[str] = set()
    compiled = CompiledPolicies(drafts)  # once per replay, as a sweep compiles once per listing
    for now in points:
        listed = _listed(target.name, timeline, now, removed)
        previous = remembered  # as the daemon's: every session remembered from the last sweep
        decisions = [decide(s, compiled, now, _seed(previous, s, timeline, now)) for s in listed]
        plan = make_plan(
            decisions,
            listing=Listing(sessions=tuple(listed)),
            policies=drafts,
            target=target,
            provider=provider,
            previous=previous,
            open_intents={},
            acts=True,
            now=now,
        )
        remembered = {}
        for decision in plan.decisions:
            session = decision.session
            history = memory.advance(
                _seed(previous, session, timeline, now), session, decision, now
            )
            policy = decision.policy.name if decision.policy else None
            if policy is None or decision.verdict not in (Verdict.ACT, Verdict.WARN):
                remembered[session.id] = history
                continue
            held = plan.holds(decision)
            if held is not None:
                report.tally(policy, now).held += 1
                report.held[policy] = held
                remembered[session.id] = history
                continue
            if decision.verdict is Verdict.WARN:
                report.tally(policy, now).warns += 1
                report.warned.append((session.id, now))
                remembered[session.id] = memory.warned(history, now)
                continue
            remembered[session.id] = history
            _acted(report, decision, now, done, removed, remembered)
        report.sweeps += 1
        if progress is not None:
            progress()
    return report


def _acted(
    report: TargetReplay,
    decision: Decision,
    now: datetime,
    done: set[tuple[str, str]],
    removed: set[str],
    remembered: dict[str, History],
) -> None:
    """Count a session acted on (once per policy) and take its effect on the replay."""
    assert decision.policy is not None
    assert decision.action is not None
    session, policy = decision.session, decision.policy.name
    if (policy, session.id) not in done:
        done.add((policy, session.id))
        report.tally(policy, now).acts += 1
        report.acts.append(
            Act(
                policy=policy,
                target=report.target,
                session_id=session.id,
                session=session.name,
                at=now,
                action=decision.action,
                dry_run=decision.dry_run,
            )
        )
    if decision.dry_run:
        return
    if decision.action is Action.NOTIFY:
        remembered[session.id] = memory.notified(remembered[session.id], policy, now)
    elif decision.action.destructive:
        removed.add(session.id)  # the action took it away: the replay sees it no more
        remembered.pop(session.id, None)


def _listed(
    target: str,
    timeline: Mapping[str, tuple[list[Observed], list[datetime]]],
    now: datetime,
    removed: set[str],
) -> list[Session]:
    """The sessions as the listing at ``now`` showed them (their latest row at or before; a
    session an action removed at ``now`` was still listed then)."""
    sessions = []
    for sid, (rows, times) in timeline.items():
        if sid in removed:
            continue
        index = bisect.bisect_right(times, now) - 1
        while index >= 0 and rows[index].gone == REMOVED and rows[index].at == now:
            index -= 1
        fields = rows[index].fields if index >= 0 else None
        if fields is not None:
            sessions.append(rebuild(target, sid, fields))
    return sessions


def _seed(
    previous: Mapping[str, History],
    session: Session,
    timeline: Mapping[str, tuple[list[Observed], list[datetime]]],
    now: datetime,
) -> History | None:
    """The replay's memory of a session; for one already there when the window opened, what
    the daemon would have remembered: seen, in its state, since its row was logged."""
    if session.id in previous:
        return previous[session.id]
    rows, _ = timeline[session.id]
    first = rows[0].at
    if first >= now:
        return None
    return History(
        first_seen=first,
        state=session.state,
        state_since=session.state_since or first,
        provider_state=session.provider_state,
        activity=session.activity,
        activity_since=first if session.activity is not None else None,
    )


def totals(replays: Sequence[TargetReplay]) -> Counter[str]:
    """Sessions each policy would have acted on, over every target."""
    return Counter(act.policy for replay in replays for act in replay.acts)
