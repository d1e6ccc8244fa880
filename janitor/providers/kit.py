"""The provider kit: what a provider declares instead of what shared code assumes (DESIGN 6).

A provider is a file of declarations plus the calls its API needs. It declares:

* per action, an :class:`ActionSpec`: the provider states it applies to (an action is never
  chosen for a record outside them, so an ended session is never deleted again), whether it
  removes the record, whether it is asynchronous (the provider accepts it and the state
  settles later, within a deadline), the provider states that mean it took effect, and
  whether it cascades to the record's children;
* how parents relate (:class:`ParentRelation`): ``shared`` (Jupyter: a kernel several
  sessions use), ``cascade`` (ESS: acting on a parent acts on its children) or ``none``;
* whether its population is stable (the population-drop guard applies only then);
* whether it has a native warning channel (``warn``/``withdraw``, AIDP's rename).

Shared code turns these declarations into behaviour: :func:`allowed_actions` fills each
record's ``actions``; :func:`judge` settles an action from a fresh read of its record, for
later sweeps and for reconciliation after a crash alike.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from janitor.durations import format_duration
from janitor.model import Action, Outcome, Session, State

#: How long an asynchronous action may take to settle when neither the provider nor the
#: target (``settle_timeout``) says otherwise.
DEFAULT_SETTLE_TIMEOUT = timedelta(hours=1)


class ParentRelation(enum.StrEnum):
    """What a record's ``parent_id`` means for actions (DESIGN 6 "Parents")."""

    SHARED = "shared"  # siblings share the parent: acting on one ends it for the others
    CASCADE = "cascade"  # acting on the parent acts on every descendant
    NONE = "none"  # parent_id is informational only


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSpec:
    """What one action does on one provider.

    Attributes:
        action: the action.
        applies_to: provider states (as the provider reports them) the action may be taken
            in. The engine never picks the action for a record in another state.
        removes_record: True when the record is gone once the action took effect (a
            delete); False when it stays, in one of ``end_states`` (a stop, a cancel).
        end_states: provider states that mean the action took effect (for actions that keep
            the record). Reaching any other end state (normalized ``ended``) means it failed.
        transit_states: provider states that mean the action is under way (ESS
            ``CANCELLING``); a record in normalized state ``stopping`` is under way too.
        asynchronous: the provider accepts the action and the state settles later: the
            outcome is ``accepted`` and later sweeps settle it.
        settle_timeout: how long settling may take before the action is ``failed`` (with an
            alert); the target's ``settle_timeout`` overrides it.
        cascades: acting on a record acts on its descendants too.
    """

    action: Action
    applies_to: frozenset[str]
    removes_record: bool = True
    end_states: frozenset[str] = frozenset()
    transit_states: frozenset[str] = frozenset()
    asynchronous: bool = False
    settle_timeout: timedelta = DEFAULT_SETTLE_TIMEOUT
    cascades: bool = False

    def __post_init__(self) -> None:
        if not self.removes_record and not self.end_states:
            raise ValueError(f"{self.action}: an action that keeps the record needs end_states")
        if not self.action.destructive:
            raise ValueError(f"{self.action} is not a destructive action; notify needs no spec")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settlement:
    """Where an action stands after a fresh read: settled with ``outcome``, or still open.

    ``again``: the action needs its call made again now, on ``record`` (Glue: the delete of a
    session that has finished stopping). janitor makes it with every guard of a first call
    (kill switch, lease, outcome row); the provider never calls by itself while settling.
    """

    outcome: Outcome | None  # None: still settling (the intent stays open)
    reason: str
    timed_out: bool = False  # failed because it did not settle in time: raise an alert
    again: bool = False
    record: Session | None = None


def allowed_actions(
    specs: Mapping[Action, ActionSpec],
    session: Session,
    *,
    forbidden: Iterable[Action] = (),
) -> frozenset[Action]:
    """The actions a record allows: the specs that apply to its provider state, less
    ``forbidden`` (the record's own flags, e.g. ESS ``isCancellable: false``), plus
    ``notify`` for every record that has not ended."""
    allowed = {
        action
        for action, spec in specs.items()
        if session.provider_state in spec.applies_to and action not in set(forbidden)
    }
    if session.state is not State.ENDED:
        allowed.add(Action.NOTIFY)
    return frozenset(allowed)


def judge(
    spec: ActionSpec,
    fresh: Session | None,
    *,
    accepted: bool,
    waited: timedelta,
    timeout: timedelta | None = None,
) -> Settlement:
    """Settle ``spec``'s action from a fresh read of its record, ``waited`` after the intent.

    ``accepted`` says the provider took the action (an ``accepted`` outcome); without it the
    call may never have been made (a crash, an ``unknown`` outcome). ``timeout`` overrides
    the spec's ``settle_timeout`` (the target's ``settle_timeout``).

    * gone: the action took effect for one that removes the record (``already_absent``
      when it was not known to be accepted: the record may have gone by itself); for one
      that keeps the record, ``already_absent``;
    * in one of the end states: ``executed``;
    * under way (a transit state, or normalized ``stopping``): open until the deadline;
    * ended elsewhere (ESS ``ERROR`` after a cancel): ``failed``, naming the state;
    * anything else: open until the deadline if the provider accepted the action, else the
      action did not take effect: ``failed``, and the next sweep decides anew;
    * open past the deadline: ``failed`` (the caller raises an alert).
    """
    action = spec.action
    if fresh is None:
        if spec.removes_record and accepted:
            return Settlement(outcome=Outcome.EXECUTED, reason=f"{action} done: the record is gone")
        return Settlement(
            outcome=Outcome.ALREADY_ABSENT,
            reason=f"the record is gone; the {action} most likely completed",
        )
    state = fresh.provider_state
    if state in spec.end_states:
        return Settlement(outcome=Outcome.EXECUTED, reason=f"{action} done: the record is {state}")
    if fresh.state is State.ENDED:
        return Settlement(
            outcome=Outcome.FAILED, reason=f"{action} failed: the record ended in {state}"
        )
    under_way = state in spec.transit_states or fresh.state is State.STOPPING
    if not (under_way or accepted):
        return Settlement(
            outcome=Outcome.FAILED,
            reason=(
                f"the record is still {state}, so the {action} did not take effect; "
                "it will be decided anew"
            ),
        )
    limit = timeout or spec.settle_timeout
    if waited >= limit:
        return Settlement(
            outcome=Outcome.FAILED,
            reason=f"{action} did not settle within {format_duration(limit)}: still {state}",
            timed_out=True,
        )
    return Settlement(outcome=None, reason=f"{action} under way: the record is {state}")
