"""The session history log's records: a session's observed fields, their fingerprint, and the
session rebuilt from them. Pure, no I/O.

The daemon records a session's fields when they change (the fingerprint in janitor's memory
says whether they did), so the log grows with changes, not with sweeps; ``janitor backtest``
replays it. Only what decisions read is kept: no ``raw`` record, no etag.
"""

from __future__ import annotations

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
    """The session's observed fields, JSON-native (times in ISO 8601 with their offset)."""
    values: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(session, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif name == "labels" and value is not None:
            value = dict(value)
        elif name == "anomalies":
            value = list(value)
        elif name == "actions" and value is not None:
            value = sorted(str(a) for a in value)
        elif name == "state":
            value = str(value)
        values[name] = value
    return values


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
