"""The session history log's records: a session's observed fields, their fingerprint, and the
session rebuilt from them. Pure, no I/O.

The daemon records a session's fields when they change (the fingerprint in janitor's memory
says whether they did), so the log grows with changes, not with sweeps; ``janitor backtest``
replays it. Only what decisions read is kept: no ``raw`` record, no etag.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from typing import Any

from janitor.model import Action, Session, State

#: Fields of :class:`~janitor.model.Session` the log keeps (target and id are its key).
FIELDS = (
    "provider",
    "name",
    "kind",
    "state",
    "provider_state",
    "last_activity",
    "created_at",
    "state_since",
    "connections",
    "owner",
    "labels",
    "parent_id",
    "anomalies",
    "actions",
    "warning",
    "activity",
)
_TIMES = ("last_activity", "created_at", "state_since")


def observed(session: Session) -> dict[str, Any]:
    """The session's observed fields (:data:`FIELDS`, in that order), JSON-native: times in
    ISO 8601 with their offset, the state and actions as their names (actions sorted).

    Computed for every listed session each recorded sweep (its fingerprint), so written out
    field by field; ``tests/unit/test_history_observed.py`` holds it to the generic form.
    """
    labels, actions = session.labels, session.actions
    return {
        "provider": session.provider,
        "name": session.name,
        "kind": session.kind,
        "state": str(session.state),
        "provider_state": session.provider_state,
        "last_activity": _iso(session.last_activity),
        "created_at": _iso(session.created_at),
        "state_since": _iso(session.state_since),
        "connections": session.connections,
        "owner": session.owner,
        "labels": dict(labels) if labels is not None else None,
        "parent_id": session.parent_id,
        "anomalies": list(session.anomalies),
        "actions": list(_action_names(actions)) if actions is not None else None,
        "warning": session.warning,
        "activity": session.activity,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@functools.lru_cache(maxsize=256)
def _action_names(actions: frozenset[Action]) -> tuple[str, ...]:
    """The action names, sorted (providers share a handful of action sets)."""
    return tuple(sorted(str(a) for a in actions))


def fingerprint(session: Session) -> str:
    """A short digest of the observed fields: equal when nothing a decision reads changed."""
    text = json.dumps(observed(session), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def rebuild(target: str, session_id: str, fields: dict[str, Any]) -> Session:
    """The session as it was recorded (naive times stay naive: the engine refuses them)."""
    values: dict[str, Any] = {name: fields.get(name) for name in FIELDS}
    for name in _TIMES:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["state"] = State(values["state"])
    values["anomalies"] = tuple(values["anomalies"] or ())
    if values["actions"] is not None:
        values["actions"] = frozenset(Action(a) for a in values["actions"])
    return Session(target=target, id=session_id, **values)
