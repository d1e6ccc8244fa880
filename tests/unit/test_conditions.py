"""Each condition: its values, its three-valued answers, its validation errors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from janitor.model import State
from janitor.policy.conditions import CONDITIONS, ConditionError, EvalContext, compile_condition
from tests.factories import NOW, history, session

CTX = EvalContext(now=NOW, history=None)


@pytest.mark.parametrize(
    ("key", "value", "overrides", "expected"),
    [
        ("state", ["idle", "dead"], {}, True),
        ("state", "busy", {}, False),
        ("provider_state", ["IDLE"], {}, True),
        ("provider_state", ["busy"], {}, False),
        ("idle_for", "3h", {}, True),
        ("idle_for", "3h1s", {}, False),
        ("idle_for", "1h", {"last_activity": None}, None),
        ("idle_for", 3600, {}, True),
        ("in_state_for", "1h", {"state_since": NOW - timedelta(hours=2)}, True),
        ("in_state_for", "1h", {}, None),
        ("age", "1d", {"created_at": NOW - timedelta(days=2)}, True),
        ("age", "1d", {"created_at": NOW - timedelta(hours=2)}, False),
        ("age", "1d", {}, None),
        ("max_connections", 0, {}, True),
        ("max_connections", 0, {"connections": 2}, False),
        ("max_connections", 1, {"connections": None}, None),
        ("name", ["*.ipynb"], {}, True),
        ("name", "keep-*", {}, False),
        ("owner", ["a*"], {"owner": "alice"}, True),
        ("owner", ["b*"], {"owner": "alice"}, False),
        ("owner", ["a*"], {}, None),
        ("labels", {"team": "data-*"}, {"labels": {"team": "data-eng"}}, True),
        ("labels", {"team": "data-*"}, {"labels": {"team": "web"}}, False),
        ("labels", {"team": "data-*"}, {"labels": {}}, False),
        ("labels", {"team": "data-*"}, {}, None),  # labels that could not be read: unknown
        ("kind", ["notebook", "console"], {}, True),
        ("kind", ["kernel"], {}, False),
    ],
)
def test_condition_answers(
    key: str, value: Any, overrides: dict[str, Any], expected: bool | None
) -> None:
    answer = compile_condition(key, value).evaluate(session(**overrides), CTX)
    assert answer.value is expected
    assert answer.reason


def test_in_state_for_uses_memory_only_for_the_same_state() -> None:
    condition = compile_condition("in_state_for", "1h")
    same = EvalContext(now=NOW, history=history(state=State.IDLE))
    other = EvalContext(now=NOW, history=history(state=State.BUSY))
    assert condition.evaluate(session(), same).value is True
    assert condition.evaluate(session(), other).value is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("idle_forever", "1h", "unknown key (did you mean 'idle_for'? known conditions: age,"),
        ("colour", "red", "unknown key (known conditions: age, idle_for"),
        ("idle_for", "two hours", "invalid duration 'two hours'"),
        ("idle_for", "0s", "must be a positive duration"),
        ("state", ["idle", "sleeping"], "expected a list of states from: idle, busy"),
        ("state", ["unknown"], "'unknown' cannot be matched"),
        ("state", [], "must list at least one state"),
        ("max_connections", -1, "must be a whole number ≥ 0"),
        ("max_connections", True, "must be a whole number ≥ 0"),
        ("name", [], "must list at least one value"),
        ("labels", {}, "must list at least one label"),
        ("labels", ["team"], "Input should be a valid dictionary"),
    ],
)
def test_condition_validation(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConditionError, match=None) as info:
        compile_condition(key, value)
    assert message in str(info.value)


def test_registry_has_the_documented_conditions() -> None:
    assert set(CONDITIONS) == {
        "state",
        "provider_state",
        "idle_for",
        "in_state_for",
        "age",
        "max_connections",
        "name",
        "owner",
        "labels",
        "kind",
    }
