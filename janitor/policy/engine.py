"""The decision engine: pure, no I/O. ``decide(session, policies, now, history) -> Decision``.

Rules, in order:

1. A session with anomalies (naive or future timestamps, malformed fields) is skipped, and so
   is one whose record or memory still holds a naive timestamp (a provider bug): fail closed.
2. A session in state ``unknown`` is skipped.
2a. A kept session (``janitor keep``, until the keep expires) is skipped, whatever the
   policies say.
3. Enabled policies that apply to the session's target run in (priority, name) order; the
   first whose ``match`` holds decides, whatever its mode. A session in a state other than
   idle, dead or ended only matches a policy that lists that state in ``match.state``, or
   its provider state in ``match.provider_state`` (naming is consent). A policy whose action
   the record does not allow (its provider state, its own flags) does not match it.
4. If that policy's ``exempt`` holds (any of its keys; an unknown value exempts), skip.
5. ``min_observations``: wait until the policy matched in that many consecutive sweeps.
6. Dry-run policies report ``act`` (the sweep records ``would_act``) and never warn.
7. ``notify`` acts once per mark. ``grace``: warn first, wait, act once the grace has
   passed since the warning was delivered.

:func:`decide` runs the policies compiled (:mod:`janitor.policy.compiled`: reasons only for
the deciding policy and the misses a no-match reason names); :func:`decide_readable` is the
readable evaluator every condition's reason comes from, kept as the reference the compiled
one is proved against, and :func:`explain` shows every policy's :class:`Evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from janitor.durations import format_duration
from janitor.model import (
    QUIET_STATES,
    Action,
    Decision,
    History,
    Keep,
    Mark,
    Session,
    State,
    Verdict,
)
from janitor.policy.compiled import Chosen, CompiledPolicies, policy_tag
from janitor.policy.conditions import EvalContext, Match, elapsed
from janitor.policy.spec import Policy

__all__ = [
    "KEPT",
    "CompiledPolicies",
    "Evaluation",
    "consents",
    "decide",
    "decide_readable",
    "evaluate",
    "exempt_reason",
    "explain",
    "kept_reason",
    "ordered",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """How one policy judged one session: what ``janitor explain`` shows.

    ``conditions`` holds every ``match`` condition's answer by key, ``exemptions`` every
    ``exempt`` condition's (only once the match held); ``gate`` says why the policy could not
    match the session at all (a state it does not name, an action the record does not allow).
    """

    policy: Policy
    matched: bool
    reasons: tuple[str, ...]
    exempt_reason: str | None = None
    conditions: tuple[tuple[str, Match], ...] = ()
    exemptions: tuple[tuple[str, Match], ...] = ()
    gate: str | None = None


def evaluate(policy: Policy, session: Session, ctx: EvalContext) -> Evaluation:
    """Evaluate one policy's match and exempt blocks against a session."""
    if not consents(policy, session):
        reason = f"state {session.state} is only matched by a policy that lists it"
        return Evaluation(policy=policy, matched=False, reasons=(reason,), gate=reason)
    if not session.allows(policy.action):
        reason = f"{policy.action} is not possible in provider state {session.provider_state}"
        return Evaluation(policy=policy, matched=False, reasons=(reason,), gate=reason)
    results = tuple((c.name, c.evaluate(session, ctx)) for c in policy.match)
    failed = [r.reason for _, r in results if r.value is not True]
    if failed:
        return Evaluation(policy=policy, matched=False, reasons=tuple(failed), conditions=results)
    reasons = tuple(r.reason for _, r in results)
    exemptions = tuple((c.name, c.evaluate(session, ctx)) for c in policy.exempt)
    return Evaluation(
        policy=policy,
        matched=True,
        reasons=reasons,
        exempt_reason=_exempt_reason([r for _, r in exemptions]),
        conditions=results,
        exemptions=exemptions,
    )


def ordered(policies: Sequence[Policy]) -> list[Policy]:
    """Enabled policies in evaluation order."""
    return sorted((p for p in policies if p.enabled), key=lambda p: (p.priority, p.name))


def consents(policy: Policy, session: Session) -> bool:
    """True when ``policy`` may match a session in its state (DESIGN 6 "Quiet states").

    Quiet states match by default; any other state only when the policy names it in
    ``match.state`` or names the session's provider state in ``match.provider_state``.
    """
    return (
        session.state in QUIET_STATES
        or session.state in policy.explicit_states
        or session.provider_state.lower() in policy.explicit_provider_states
    )


def exempt_reason(policy: Policy, session: Session, ctx: EvalContext) -> str | None:
    """Why ``policy``'s ``exempt`` block exempts the session (an unknown exempts), or None."""
    return _exempt_reason([c.evaluate(session, ctx) for c in policy.exempt])


def _exempt_reason(results: list[Match]) -> str | None:
    for result in results:
        if result.value is True:
            return result.reason
        if result.value is None:
            return f"{result.reason}, exempt to be safe"
    return None


def decide(
    session: Session,
    policies: Sequence[Policy] | CompiledPolicies,
    now: datetime,
    history: History | None,
    *,
    keep: Keep | None = None,
) -> Decision:
    """Decide what to do with one session now. Pure: same inputs, same decision.

    ``policies`` is best compiled once (:class:`CompiledPolicies`) for many sessions; a plain
    sequence is compiled for this one call. ``keep`` is the session's keep, if an admin kept
    it (an expired one protects nothing). The decision is :func:`decide_readable`'s.
    """
    if (
        session.anomalies
        or session.state is State.UNKNOWN
        or keep is not None
        or _has_naive(session, history)
    ):
        closed = _before_policies(session, now, history, keep)
        if closed is not None:
            return closed
    compiled = policies if isinstance(policies, CompiledPolicies) else CompiledPolicies(policies)
    ctx = compiled.context(now, history)
    found = compiled.choose(session, ctx)
    if isinstance(found, Chosen):
        return _decide_matched(session, found, ctx)
    if found.reason is None:
        return _skip(session, "no_policy", "no enabled policy applies to this target")
    return _skip(session, "no_match", found.reason)


def _before_policies(
    session: Session, now: datetime, history: History | None, keep: Keep | None
) -> Decision | None:
    """Rules 1, 2 and 2a: the skip of a record not trusted, in state unknown, or kept."""
    if session.anomalies or _has_naive(session, history):
        untrusted = [*session.anomalies, *_naive(session, history)]
        return _skip(session, "malformed", "record not trusted: " + "; ".join(untrusted))
    if session.state is State.UNKNOWN:
        return _skip(
            session,
            "unknown_state",
            f"provider state {session.provider_state!r} is unknown; never acted on",
        )
    if keep is not None and keep.holds(now):
        return _skip(session, KEPT, kept_reason(keep))
    return None


def _has_naive(session: Session, history: History | None) -> bool:
    """True when :func:`_naive` would name a timestamp, without naming it."""
    for value in (session.last_activity, session.created_at, session.state_since):
        if value is not None and value.utcoffset() is None:
            return True
    if history is None:
        return False
    mark = history.mark
    values: tuple[datetime | None, ...] = (
        history.first_seen,
        history.state_since,
        history.activity_since,
    )
    if mark is not None:
        values += (mark.marked_at, mark.warned_at)
    return any(value is not None and value.utcoffset() is None for value in values)


def decide_readable(
    session: Session,
    policies: Sequence[Policy],
    now: datetime,
    history: History | None,
    *,
    keep: Keep | None = None,
) -> Decision:
    """:func:`decide` by the readable evaluator: every policy's reasons built, in order.

    The reference the compiled engine is proved against (``tests/unit/test_compiled_engine.py``).
    """
    untrusted = [*session.anomalies, *_naive(session, history)]
    if untrusted:
        return _skip(session, "malformed", "record not trusted: " + "; ".join(untrusted))
    if session.state is State.UNKNOWN:
        return _skip(
            session,
            "unknown_state",
            f"provider state {session.provider_state!r} is unknown; never acted on",
        )
    if keep is not None and keep.holds(now):
        return _skip(session, KEPT, kept_reason(keep))
    ctx = EvalContext(now=now, history=history)
    misses: list[str] = []
    for policy in ordered(policies):
        if not policy.applies_to(session.target):
            continue
        evaluation = evaluate(policy, session, ctx)
        if evaluation.matched:
            chosen = Chosen(
                policy=policy,
                ref=policy.ref,
                tag=policy_tag(policy.ref),
                reasons=evaluation.reasons,
                exempt_reason=evaluation.exempt_reason,
            )
            return _decide_matched(session, chosen, ctx)
        misses.append(f"{policy.name}: {evaluation.reasons[0]}")
    if not misses:
        return _skip(session, "no_policy", "no enabled policy applies to this target")
    shown = "; ".join(misses[:3]) + ("; …" if len(misses) > 3 else "")
    return _skip(session, "no_match", f"no policy matched ({shown})")


#: The decision code of a kept session.
KEPT = "kept"


def kept_reason(keep: Keep) -> str:
    """``kept until 2026-11-25 12:00:00 UTC by alice (cli): holiday``."""
    why = f": {keep.reason}" if keep.reason else ""
    return f"kept until {_utc(keep.until, seconds=True)} UTC by {keep.actor}{why}"


def _naive(session: Session, history: History | None) -> list[str]:
    """Timestamps without a zone: they cannot be compared with ``now``, so nothing is trusted."""
    values = {
        "last_activity": session.last_activity,
        "created_at": session.created_at,
        "state_since": session.state_since,
    }
    if history is not None:
        values["first_seen (memory)"] = history.first_seen
        values["state_since (memory)"] = history.state_since
        values["activity_since (memory)"] = history.activity_since
        if history.mark is not None:
            values["marked_at (memory)"] = history.mark.marked_at
            values["warned_at (memory)"] = history.mark.warned_at
    return [
        f"{name} has no time zone: {value.isoformat()!r}"
        for name, value in values.items()
        if value is not None and value.utcoffset() is None
    ]


def _utc(value: datetime, seconds: bool = False) -> str:
    """A timestamp for a reason: always in UTC, whatever offset it was written in."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _decide_matched(session: Session, chosen: Chosen, ctx: EvalContext) -> Decision:
    """Rules 4 to 7 for the policy that matched, with its reasons and its exemption."""
    policy, ref, tag, exempted = chosen.policy, chosen.ref, chosen.tag, chosen.exempt_reason
    if exempted is not None:
        return Decision(
            session=session,
            verdict=Verdict.SKIP,
            policy=ref,
            code="exempt",
            reason=f"exempt: {exempted} {tag}",
        )
    history = ctx.history
    previous = history.streak if history and history.streak_policy == policy.name else 0
    mark = (
        history.mark
        if history and history.mark and history.mark.counts_for(policy.name, policy.action)
        else None
    )
    because = " and ".join(chosen.reasons)
    verdict, code, text = _stage(policy, because, previous + 1, mark, ctx.now)
    return Decision(
        session=session,
        verdict=verdict,
        code=code,
        reason=f"{text} {tag}",
        policy=ref,
        action=policy.action,
        dry_run=policy.dry_run,
        streak=previous + 1,
    )


def _stage(
    policy: Policy, because: str, streak: int, mark: Mark | None, now: datetime
) -> tuple[Verdict, str, str]:
    """Where a matching session stands: observations, dry-run, notify, grace, act."""
    if streak < policy.min_observations:
        return (
            Verdict.WAIT,
            "observations",
            (
                f"{because}, matched in {streak} of {policy.min_observations} consecutive sweeps "
                "needed"
            ),
        )
    if policy.dry_run:
        note = f", after a grace of {format_duration(policy.grace)}" if policy.grace else ""
        return Verdict.ACT, "act", f"{because}{note}"
    if policy.action is Action.NOTIFY:
        if mark is not None and mark.warned_at is not None:
            return (
                Verdict.WAIT,
                "notified",
                f"{because}; notified at {_utc(mark.warned_at)} UTC",
            )
        return Verdict.ACT, "act", because
    if policy.grace is None:
        return Verdict.ACT, "act", because
    grace = format_duration(policy.grace)
    if mark is None or mark.warned_at is None:
        return (
            Verdict.WARN,
            "warn",
            (f"{because}; warning now, {policy.action} after a grace of {grace}"),
        )
    # now - warned_at, not warned_at + grace: the sum can pass the end of the calendar
    if elapsed(now, mark.warned_at) < policy.grace:
        try:
            due = mark.warned_at.astimezone(UTC) + policy.grace  # UTC: no wall-clock sums
            until = f"until {_utc(due, seconds=True)} UTC"
        except OverflowError:
            until = f"for {grace} after the warning at {_utc(mark.warned_at)} UTC"
        return Verdict.WAIT, "grace", f"{because}; warned, in grace {until}"
    return Verdict.ACT, "act", f"{because}; grace of {grace} passed since the warning"


def _skip(session: Session, code: str, reason: str) -> Decision:
    return Decision(session=session, verdict=Verdict.SKIP, code=code, reason=reason)


def explain(
    session: Session,
    policies: Sequence[Policy],
    now: datetime,
    history: History | None,
    *,
    keep: Keep | None = None,
) -> tuple[Decision, list[Evaluation]]:
    """The decision plus every applicable policy's evaluation, for ``janitor explain``."""
    decision = decide(session, policies, now, history, keep=keep)
    if _naive(session, history):
        return decision, []  # naive timestamps cannot be compared with now
    ctx = EvalContext(now=now, history=history)
    evaluations = [
        evaluate(policy, session, ctx)
        for policy in ordered(policies)
        if policy.applies_to(session.target)
    ]
    return decision, evaluations
