"""Guards that `make mutants` found unguarded (docs/mutation-testing.md)."""

from __future__ import annotations

from janitor.guards import shared_parents
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


def test_every_kernel_group_is_checked_after_one_acted_on_whole() -> None:
    """The first kernel's sessions all go together; the second kernel has a kept session."""
    decisions = [_act("a", "kernel-1"), _act("b", "kernel-1"), _act("c", "kernel-2")]
    decisions.append(_act("d", "kernel-2"))
    assert set(shared_parents(decisions, acting={"a", "b", "c"})) == {"c"}


def test_the_hold_reason_names_the_kernel_and_every_kept_session() -> None:
    kernel = "0123456789abcdef"
    decisions = [_act(sid, kernel) for sid in ("a", "c", "b")]
    held = shared_parents(decisions, acting={"a"})
    assert held == {
        "a": (
            "shares its kernel 01234567 with b.ipynb, c.ipynb, which is not being acted on; "
            "delete would end it for them too"
        )
    }
