"""How janitor's memory of a session advances from one daemon sweep to the next. Pure.

The memory (:class:`~janitor.model.History`) holds when janitor first saw the session, since
when it is in its state, how many consecutive sweeps a policy matched it, whether a grace
policy marked it (and when the warning went out), and the key of the last decision, so audit
rows are written when a decision changes rather than every sweep.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from janitor.history import fingerprint
from janitor.model import Action, Decision, History, Mark, Session, Verdict


def advance(
    previous: History | None, session: Session, decision: Decision, now: datetime
) -> History:
    """The memory after this sweep's decision (before any warning is delivered)."""
    first_seen = previous.first_seen if previous else now
    if (
        previous is not None
        and previous.state == session.state
        and previous.provider_state in (None, session.provider_state)
    ):
        state_since = previous.state_since
    else:
        state_since = session.state_since or now
    same_activity = previous is not None and previous.activity == session.activity
    matched = decision.policy is not None and decision.verdict is not Verdict.SKIP
    return History(
        first_seen=first_seen,
        state=session.state,
        state_since=state_since,
        provider_state=session.provider_state,
        streak_policy=decision.policy.name if matched and decision.policy else None,
        streak=decision.streak if matched else 0,
        mark=_next_mark(previous, decision, now) if matched else None,
        last_key=decision.key,
        original=previous.original if previous else None,
        activity=session.activity,
        activity_since=(
            None
            if session.activity is None
            else previous.activity_since
            if same_activity and previous is not None
            else now
        ),
        observed=fingerprint(session),
    )


def _next_mark(previous: History | None, decision: Decision, now: datetime) -> Mark | None:
    assert decision.policy is not None
    old = previous.mark if previous else None
    if (
        old is not None
        and decision.action is not None
        and old.counts_for(decision.policy.name, decision.action)
    ):
        return old
    if decision.verdict is Verdict.WARN:
        return Mark(policy=decision.policy.name, marked_at=now, action=decision.action)
    return None


def warned(history: History, at: datetime) -> History:
    """The memory once the warning for its mark was delivered at ``at``."""
    if history.mark is None or history.mark.warned_at is not None:
        return history
    return replace(history, mark=replace(history.mark, warned_at=at))


def notified(history: History, policy: str, at: datetime) -> History:
    """The memory once a ``notify`` action for ``policy`` was delivered at ``at``."""
    mark = Mark(policy=policy, marked_at=at, warned_at=at, action=Action.NOTIFY)
    return replace(history, mark=mark)


def with_original(history: History, original: str | None) -> History:
    """The memory once a native warning replaced ``original`` (None: once it was withdrawn)."""
    return replace(history, original=original)


def unmarked(previous: History | None, current: History) -> bool:
    """True when a mark was cleared this sweep (activity resumed or the policy changed)."""
    return previous is not None and previous.mark is not None and current.mark is None
