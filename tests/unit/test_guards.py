"""Table tests of the guards that are not property-tested: shared parents, limits wording."""

from __future__ import annotations

from janitor.guards import Limits, shared_parents
from janitor.model import Action, Decision, PolicyRef, Verdict
from tests.factories import session


def _act(sid: str, parent: str | None) -> Decision:
    return Decision(
        session=session(id=sid, name=f"{sid}.ipynb", parent_id=parent),
        verdict=Verdict.ACT,
        reason="idle",
        code="act",
        policy=PolicyRef(name="idle", version=1),
        action=Action.DELETE,
        dry_run=False,
    )


def test_a_session_sharing_its_kernel_with_a_kept_one_is_held() -> None:
    decisions = [_act("a", "k1"), _act("b", "k1"), _act("c", "k2"), _act("d", None)]
    held = shared_parents(decisions, acting={"a", "c", "d"})
    assert set(held) == {"a"}
    assert "shares its kernel k1 with b.ipynb" in held["a"]


def test_sessions_sharing_a_kernel_are_acted_on_together() -> None:
    decisions = [_act("a", "k1"), _act("b", "k1")]
    assert shared_parents(decisions, acting={"a", "b"}) == {}
    assert shared_parents(decisions, acting=set()) == {}


def test_limits_describe_and_floor() -> None:
    both = Limits(count=25, percent=10)
    assert both.allowed(99) == 9
    assert both.allowed(1000) == 25
    assert both.describe() == "25 actions and 10% of the sessions listed"
    assert Limits().allowed(5) is None
