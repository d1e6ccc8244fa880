"""Guards that `make mutants` found unguarded (docs/mutation-testing.md)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from janitor.guards import (
    BlastRadius,
    Limits,
    blast_radius,
    population_block,
    shared_parents,
    skew_block,
)
from janitor.model import Action, Decision, PolicyRef, Verdict
from tests.factories import policy, session


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


def test_a_target_over_its_limit_blocks_only_enforced_destructive_acts() -> None:
    """The per-target limit counts enforced deletes: a dry-run preview and a notification
    still go ahead while it holds back the deletes."""
    over = BlastRadius(target="over the target's limit")
    enforced = _act("a", None)
    assert over.blocks(enforced) == "over the target's limit"
    assert over.blocks(replace(enforced, dry_run=True)) is None
    assert over.blocks(replace(enforced, action=Action.NOTIFY)) is None
    assert BlastRadius().blocks(enforced) is None


def test_the_skew_reason_says_which_way_the_clock_is_off() -> None:
    tolerance = timedelta(minutes=2)
    assert skew_block(timedelta(hours=3), tolerance) == (
        "the provider's clock is 3h ahead of janitor's, beyond the tolerance of 2m; "
        "no action on this target"
    )
    assert skew_block(-timedelta(hours=3), tolerance) == (
        "the provider's clock is 3h behind janitor's, beyond the tolerance of 2m; "
        "no action on this target"
    )


def test_the_population_guard_starts_at_ten_remembered_sessions() -> None:
    assert population_block(4, 10, max_drop_percent=50) is not None
    assert population_block(0, 9, max_drop_percent=50) is None
    assert population_block(0, 20, max_drop_percent=100) is None


def test_the_population_guard_lets_a_drop_of_exactly_the_limit_through() -> None:
    assert population_block(5, 10, max_drop_percent=50) is None
    assert population_block(4, 10, max_drop_percent=50) == (
        "the listing has 4 sessions where janitor remembers 10 (a drop of more than 50%); "
        "a partial listing is suspected, no action on this target this sweep"
    )


def test_a_decision_of_an_unknown_policy_does_not_stop_the_per_policy_limits() -> None:
    """Policies are checked in name order; one missing from the mapping is skipped, and
    the next one is still held to its limit."""
    limited = policy(name="bbb", max_actions_per_sweep=1)
    decisions = [
        replace(_act(sid, None), policy=PolicyRef(name=name, version=1))
        for sid, name in (("a", "aaa"), ("b", "bbb"), ("c", "bbb"))
    ]
    blast = blast_radius(decisions, {"bbb": limited}, Limits(), population=3)
    assert set(blast.policies) == {"bbb"}
