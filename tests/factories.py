"""Builders for records used across tests: sessions, policies, histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from janitor.model import History, Mark, Session, State
from janitor.policy.spec import Policy, PolicySpec, compile_policy

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def session(**overrides: Any) -> Session:
    """An idle notebook session on target ``nb``, idle for 3 hours, no connections."""
    values: dict[str, Any] = {
        "target": "nb",
        "provider": "jupyter",
        "id": "s-1",
        "name": "analysis.ipynb",
        "kind": "notebook",
        "state": State.IDLE,
        "provider_state": "idle",
        "last_activity": NOW - timedelta(hours=3),
        "connections": 0,
    }
    values.update(overrides)
    return Session(**values)


def policy(version: int = 1, **spec: Any) -> Policy:
    """A compiled policy; defaults: delete idle sessions idle for 2h, in enforce mode."""
    values: dict[str, Any] = {
        "name": "idle",
        "match": {"state": ["idle"], "idle_for": "2h"},
        "action": "delete",
        "mode": "enforce",
    }
    values.update(spec)
    return compile_policy(PolicySpec.model_validate(values), version)


def history(**overrides: Any) -> History:
    """A memory of a session first seen a day ago, idle since then."""
    values: dict[str, Any] = {
        "first_seen": NOW - timedelta(days=1),
        "state": State.IDLE,
        "state_since": NOW - timedelta(days=1),
    }
    values.update(overrides)
    return History(**values)


def mark(policy_name: str = "idle", warned_ago: timedelta | None = None) -> Mark:
    """A mark by ``policy_name``, warned ``warned_ago`` before NOW (None: not delivered)."""
    warned = NOW - warned_ago if warned_ago is not None else None
    return Mark(policy=policy_name, marked_at=NOW - timedelta(days=2), warned_at=warned)
