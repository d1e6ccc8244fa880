"""Compiled policies: which policy decides a session, without a sentence per policy.

The readable evaluator (:func:`janitor.policy.engine.evaluate`) builds a reason for every
condition of every policy: ``janitor explain`` shows them all, but a sweep needs only the
deciding policy's. :class:`CompiledPolicies` is built once from the policies and answers
the same question faster:

1. Sessions that share a :data:`RouteKey` (target, state, provider state, kind, the actions
   the record allows) share every answer that depends only on those fields: the target
   globs, consent, the record's actions (the gates of ``evaluate``) and the ``state``,
   ``provider_state`` and ``kind`` conditions. A :class:`Route` holds them, computed once
   per distinct key: the candidates (the policies those checks leave, in evaluation order),
   their reasons so far, and how each shown miss is explained.
2. A session runs only its candidates' other conditions, through :meth:`Condition.holds`
   (True, False or None, no reason; an unknown never matches), the first candidate whose
   conditions all hold decides.
3. Reasons come from the conditions themselves (``explain``: ``evaluate``'s answer, with
   the probe's times), only for the deciding policy (its match, then its ``exempt`` block in
   order: an unknown exempts) and for the first three misses a no-match reason names.

Decisions are identical to the readable evaluator's for every input (the property test
``tests/unit/test_compiled_engine.py`` proves it against ``decide_readable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from janitor.model import QUIET_STATES, Action, History, PolicyRef, Session, State
from janitor.policy.conditions import Condition, EvalContext, Match, Probe
from janitor.policy.spec import Policy

#: What the route of a session depends on: target, state, provider state, kind, actions.
RouteKey = tuple[str, State, str, str, frozenset[Action] | None]

#: How many distinct routes are kept; beyond that the cache starts over (bounded memory
#: whatever values providers send).
MAX_ROUTES = 4096

#: A step in explaining a miss: a condition to check on the session (its reason if it does
#: not hold), or the reason itself once the route decided it.
Step = Condition | str

#: A part of a matched policy's reasons: known from the route, or a condition to ask.
Part = Condition | str


def ordered(policies: Sequence[Policy]) -> list[Policy]:
    """Enabled policies in evaluation order (as :func:`janitor.policy.engine.ordered`)."""
    return sorted((p for p in policies if p.enabled), key=lambda p: (p.priority, p.name))


def consents(policy: Policy, session: Session) -> bool:
    """True when ``policy`` may match a session in its state (DESIGN 6 "Quiet states").

    Quiet states match by default; any other state only when the policy names it in
    ``match.state`` or names the session's provider state in ``match.provider_state``.
    The readable evaluator states the same rule on its own (``engine.consents``): the
    property test holds the two to the same answers.
    """
    return (
        session.state in QUIET_STATES
        or session.state in policy.explicit_states
        or session.provider_state.lower() in policy.explicit_provider_states
    )


def gate(policy: Policy, session: Session) -> str | None:
    """Why ``policy`` cannot match the session at all (its state, its actions), or None:
    the reasons ``engine.evaluate`` gives for its ``gate``."""
    if not consents(policy, session):
        return f"state {session.state} is only matched by a policy that lists it"
    if not session.allows(policy.action):
        return f"{policy.action} is not possible in provider state {session.provider_state}"
    return None


def exemption(result: Match) -> str | None:
    """Why one ``exempt`` answer exempts (True; None: unknown exempts), or None (False)."""
    if result.value is True:
        return result.reason
    if result.value is None:
        return f"{result.reason}, exempt to be safe"
    return None


def policy_tag(ref: PolicyRef) -> str:
    """``(policy idle v3)``: how a decision's reason names its policy."""
    return f"(policy {ref})"


def route_key(session: Session) -> RouteKey:
    """The fields a session's route depends on."""
    return (session.target, session.state, session.provider_state, session.kind, session.actions)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A policy the route leaves: its per-session checks and its reasons so far.

    ``checks`` are the ``match`` conditions the route could not answer; ``parts`` every
    ``match`` condition in order, as its reason (route-answered) or the condition to ask.
    """

    policy: Policy
    ref: PolicyRef
    tag: str
    checks: tuple[Condition, ...]
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Route:
    """What a :data:`RouteKey` decides for every session that has it.

    ``applicable`` counts the enabled policies that apply to the target; ``misses`` says how
    to explain the first three of them if none matches; ``fixed`` is the answer when no
    policy matches and no step of a shown miss needs the session (None: one does).
    """

    candidates: tuple[Candidate, ...]
    applicable: int
    misses: tuple[tuple[Policy, tuple[Step, ...]], ...]
    fixed: Unmatched | None


class Chosen(NamedTuple):
    """The deciding policy (its ref and :func:`policy_tag`), its match reasons and why it
    exempts the session (or None)."""

    policy: Policy
    ref: PolicyRef
    tag: str
    reasons: tuple[str, ...]
    exempt_reason: str | None


class Unmatched(NamedTuple):
    """No policy matched: ``applicable`` policies applied; ``reason`` says why (None: none)."""

    applicable: int
    reason: str | None


class CompiledPolicies:
    """Policies compiled for :func:`janitor.policy.engine.decide` (see the module docstring).

    Build it once per set of policies; it caches one :class:`Route` per distinct key.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies: tuple[Policy, ...] = tuple(policies)
        self.order: tuple[Policy, ...] = tuple(ordered(policies))
        self._routes: dict[RouteKey, Route] = {}
        self._context: EvalContext | None = None

    def context(self, now: datetime, history: History | None) -> EvalContext:
        """``EvalContext(now, history)``; the last one again while both are the same objects
        (sessions without memory share it: it is immutable)."""
        ctx = self._context
        if ctx is None or ctx.now is not now or ctx.history is not history:
            ctx = self._context = EvalContext(now=now, history=history)
        return ctx

    def choose(self, session: Session, ctx: EvalContext) -> Chosen | Unmatched:
        """The policy that decides ``session`` (first in order whose match holds), if any."""
        key = route_key(session)
        route = self._routes.get(key)
        if route is None:
            route = self._route(key, session, ctx)
        if not route.candidates and route.fixed is not None:
            return route.fixed
        probe = Probe(session, ctx)
        for candidate in route.candidates:
            for check in candidate.checks:
                if check.holds(probe) is not True:  # an unknown never matches
                    break
            else:
                return _chosen(candidate, probe)
        if route.fixed is not None:
            return route.fixed
        return Unmatched(applicable=route.applicable, reason=_no_match(route, probe))

    def _route(self, key: RouteKey, session: Session, ctx: EvalContext) -> Route:
        if len(self._routes) >= MAX_ROUTES:
            self._routes.clear()
        route = build_route(self.order, session, ctx)
        self._routes[key] = route
        return route


def build_route(order: Sequence[Policy], session: Session, ctx: EvalContext) -> Route:
    """The route of ``session``'s key: only its key fields are read (see :data:`RouteKey`)."""
    candidates: list[Candidate] = []
    misses: list[tuple[Policy, tuple[Step, ...]]] = []
    applicable = 0
    for policy in order:
        if not policy.applies_to(session.target):
            continue
        applicable += 1
        candidate, steps = _compile_for_key(policy, session, ctx)
        if candidate is not None:
            candidates.append(candidate)
        if len(misses) < SHOWN_MISSES:
            misses.append((policy, steps))
    return Route(
        candidates=tuple(candidates),
        applicable=applicable,
        misses=tuple(misses),
        fixed=_fixed_reason(misses, applicable),
    )


#: How many misses a no-match reason names.
SHOWN_MISSES = 3


def _compile_for_key(
    policy: Policy, session: Session, ctx: EvalContext
) -> tuple[Candidate | None, tuple[Step, ...]]:
    """The policy as a candidate (None: the key rules it out) and how to explain its miss."""
    closed = gate(policy, session)
    if closed is not None:
        return None, (closed,)
    steps: list[Step] = []
    parts: list[Part] = []
    for condition in policy.match:
        if condition.key_field is None:
            steps.append(condition)
            parts.append(condition)
            continue
        answer = condition.evaluate(session, ctx)
        if answer.value is not True:
            steps.append(answer.reason)
            return None, tuple(steps)
        parts.append(answer.reason)
    checks = tuple(c for c in policy.match if c.key_field is None)
    ref = policy.ref
    candidate = Candidate(
        policy=policy, ref=ref, tag=policy_tag(ref), checks=checks, parts=tuple(parts)
    )
    return candidate, tuple(steps)


def _fixed_reason(
    misses: list[tuple[Policy, tuple[Step, ...]]], applicable: int
) -> Unmatched | None:
    """The answer when no policy matches and the key alone explains every shown miss."""
    if applicable == 0:
        return Unmatched(applicable=0, reason=None)
    lines = []
    for policy, steps in misses:
        if not steps or not isinstance(steps[0], str):
            return None
        lines.append(f"{policy.name}: {steps[0]}")
    return Unmatched(applicable=applicable, reason=_no_match_text(lines, applicable))


def _no_match_text(lines: list[str], applicable: int) -> str:
    shown = "; ".join(lines) + ("; …" if applicable > SHOWN_MISSES else "")
    return f"no policy matched ({shown})"


def _no_match(route: Route, probe: Probe) -> str:
    """The no-match reason: each shown miss's first condition that does not hold, in order."""
    lines = [f"{policy.name}: {_first_miss(steps, probe)}" for policy, steps in route.misses]
    return _no_match_text(lines, route.applicable)


def _first_miss(steps: tuple[Step, ...], probe: Probe) -> str:
    for step in steps:
        if isinstance(step, str):
            return step
        if step.holds(probe) is not True:
            return step.explain(probe).reason
    # Every per-session check held, so this policy matched: choose() never gets here.
    raise AssertionError("a policy that matched was explained as a miss")


def _chosen(candidate: Candidate, probe: Probe) -> Chosen:
    """The deciding policy's reasons and exemption, built from the conditions' ``evaluate``."""
    reasons = tuple(
        [part if isinstance(part, str) else part.explain(probe).reason for part in candidate.parts]
    )
    return Chosen(
        policy=candidate.policy,
        ref=candidate.ref,
        tag=candidate.tag,
        reasons=reasons,
        exempt_reason=_exempt_reason(candidate.policy.exempt, probe),
    )


def _exempt_reason(conditions: tuple[Condition, ...], probe: Probe) -> str | None:
    """The first ``exempt`` condition that holds or is unknown, as a reason (None: none)."""
    for condition in conditions:
        if condition.holds(probe) is False:
            continue
        reason = exemption(condition.explain(probe))
        if reason is not None:
            return reason
    return None
