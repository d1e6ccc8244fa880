"""The guard pipeline (janitor.plan) on hand-built listings: each guard held to its rule.

The sweep-level behaviour of the same guards is in tests/integration/test_kit.py; these cases
pin each rule alone, so breaking one of them fails a test here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from janitor.model import Action, Decision, History, Listing, Session, State, Verdict
from janitor.plan import CASCADE_BLOCKED, COVERED, SETTLING, SHARED_PARENT, Open, Plan, make_plan
from janitor.policy.engine import decide
from janitor.providers.kit import ActionSpec, ParentRelation
from janitor.targets import JupyterConfig
from tests.factories import NOW, policy, session

CANCEL = ActionSpec(
    action=Action.CANCEL,
    applies_to=frozenset({"RUNNING"}),
    removes_record=False,
    end_states=frozenset({"CANCELLED"}),
    asynchronous=True,
    cascades=True,
)


@dataclass
class Declared:
    """What the plan reads of a provider: its declarations."""

    parents: ParentRelation = ParentRelation.NONE
    stable_population: bool = True
    specs: Mapping[Action, ActionSpec] = field(default_factory=dict)


TARGET = JupyterConfig.model_validate(
    {"name": "nb", "provider": "jupyter", "base_url": "http://x.test/", "token": "t"}
)


def job(sid: str, parent: str | None = None, **kw: Any) -> Session:
    """A running request idle for 3 hours on the ``nb`` target."""
    values: dict[str, Any] = {
        "id": sid,
        "name": sid,
        "provider_state": "RUNNING",
        "parent_id": parent,
        "labels": {},
    }
    values.update(kw)
    return session(**values)


def plan(
    sessions: list[Session],
    policies: list[Any],
    provider: Declared,
    *,
    open_intents: Mapping[str, Open] | None = None,
    previous: Mapping[str, History] | None = None,
    target: JupyterConfig = TARGET,
    skew: timedelta | None = None,
) -> Plan:
    listing = Listing(sessions=tuple(sessions), server_skew=skew)
    decisions = [decide(s, policies, NOW, (previous or {}).get(s.id)) for s in sessions]
    return make_plan(
        decisions,
        listing=listing,
        policies=policies,
        target=target,
        provider=provider,  # type: ignore[arg-type]  # the declarations are what it reads
        previous=previous or {},
        open_intents=open_intents or {},
        acts=True,
        now=NOW,
    )


def by_id(result: Plan) -> dict[str, Decision]:
    return {d.session.id: d for d in result.decisions}


CANCEL_IDLE = policy(name="stuck", action="cancel", match={"idle_for": "1h"})
CASCADING = Declared(
    parents=ParentRelation.CASCADE, stable_population=False, specs={Action.CANCEL: CANCEL}
)


# --- open intents -------------------------------------------------------------------------


def test_a_record_with_an_open_intent_and_its_descendants_take_no_new_action() -> None:
    sessions = [job("p"), job("c", parent="p"), job("other")]
    result = by_id(
        plan(
            sessions,
            [CANCEL_IDLE],
            CASCADING,
            open_intents={"p": Open(action=Action.CANCEL, reason="settling")},
        )
    )
    assert result["p"].code == SETTLING
    assert result["c"].code == SETTLING, "under a parent whose cancel is open"
    assert result["other"].verdict is Verdict.ACT


def test_an_open_cancel_does_not_hold_back_the_force_cancel_that_escalates_it() -> None:
    force = policy(
        name="force",
        action="force_cancel",
        match={"provider_state": ["CANCELLING"], "in_state_for": "30m"},
    )
    stuck = job(
        "p",
        state=State.STOPPING,
        provider_state="CANCELLING",
        state_since=NOW - timedelta(hours=1),
    )
    result = by_id(
        plan(
            [stuck], [force], CASCADING, open_intents={"p": Open(action=Action.CANCEL, reason="x")}
        )
    )
    assert result["p"].verdict is Verdict.ACT
    other = by_id(
        plan([stuck], [force], CASCADING, open_intents={"p": Open(action=Action.STOP, reason="x")})
    )
    assert other["p"].code == SETTLING


# --- cascades -----------------------------------------------------------------------------


def test_a_child_exempt_by_the_acting_policy_blocks_the_parent() -> None:
    exempting = policy(
        name="stuck", action="cancel", match={"idle_for": "1h"}, exempt={"owner": ["vip"]}
    )
    sessions = [
        job("p", owner="ops"),
        job("c1", parent="p", owner="ops"),
        job("c2", parent="p", owner="vip", state=State.BUSY),
    ]
    result = by_id(plan(sessions, [exempting], CASCADING))
    assert result["p"].code == CASCADE_BLOCKED
    assert "c2" in result["p"].reason


def test_a_child_exempt_by_its_own_decision_blocks_the_parent() -> None:
    keep = policy(
        name="keep", priority=1, action="cancel", match={"name": ["c1"]}, exempt={"name": ["c1"]}
    )
    result = by_id(plan([job("p"), job("c1", parent="p")], [keep, CANCEL_IDLE], CASCADING))
    assert result["p"].code == CASCADE_BLOCKED


def test_a_grandchild_of_unknown_exemption_blocks_the_parent() -> None:
    sessions = [
        job("p"),
        job("c", parent="p"),
        job("g", parent="c", anomalies=("last_activity lies in the future",)),
    ]
    result = by_id(plan(sessions, [CANCEL_IDLE], CASCADING))
    assert result["p"].code == CASCADE_BLOCKED
    assert "exemption is unknown" in result["p"].reason


def test_children_of_an_acting_parent_wait_and_the_blast_radius_counts_them() -> None:
    sessions = [
        job("p"),
        *(job(f"c{i}", parent="p") for i in range(3)),
        job("ended", parent="p", state=State.ENDED),
    ]
    result = plan(sessions, [CANCEL_IDLE], CASCADING)
    decisions = by_id(result)
    assert decisions["p"].verdict is Verdict.ACT
    assert {decisions[f"c{i}"].code for i in range(3)} == {COVERED}
    assert result.weights == {"p": 4}, "the parent and its three children that have not ended"


def test_a_cascade_over_its_policy_limit_is_blocked_as_a_whole() -> None:
    limited = replace(CANCEL_IDLE, max_actions_per_sweep=3)
    sessions = [job("p"), *(job(f"c{i}", parent="p") for i in range(3))]
    result = plan(sessions, [limited], CASCADING)
    assert result.holds(by_id(result)["p"]) is not None


def test_parents_mean_nothing_to_a_provider_that_does_not_cascade() -> None:
    sessions = [job("p", owner="ops"), job("c", parent="p", owner="vip")]
    exempting = policy(
        name="stuck", action="cancel", match={"idle_for": "1h"}, exempt={"owner": ["vip"]}
    )
    result = by_id(plan(sessions, [exempting], Declared(specs={Action.CANCEL: CANCEL})))
    assert result["p"].verdict is Verdict.ACT


# --- blast radius population, target blocks, shared parents -----------------------------


def test_the_percentage_is_of_the_sessions_that_have_not_ended() -> None:
    percent = policy(name="idle", match={"idle_for": "1h"}, max_actions_percent=50)
    ended = [
        job(f"e{i}", state=State.ENDED, provider_state="STOPPED", actions=frozenset())
        for i in range(6)
    ]  # allow nothing: the policy does not match them
    sessions = [job("a"), job("b"), *ended]
    result = plan(sessions, [percent], Declared())
    assert [d.verdict for d in result.decisions].count(Verdict.ACT) == 2
    assert "idle" in result.blast.policies, "2 of 2 live sessions is over 50%, though 2 of 8 is not"


def test_a_population_drop_blocks_only_a_stable_population() -> None:
    previous = {
        f"s{i}": History(first_seen=NOW, state=State.IDLE, state_since=NOW) for i in range(20)
    }
    sessions = [job("s0")]
    idle = policy(name="idle", match={"idle_for": "1h"})
    assert plan(sessions, [idle], Declared(stable_population=True), previous=previous).block
    assert (
        plan(sessions, [idle], Declared(stable_population=False), previous=previous).block is None
    )


def test_clock_skew_blocks_every_provider() -> None:
    idle = policy(name="idle", match={"idle_for": "1h"})
    result = plan([job("a")], [idle], Declared(stable_population=False), skew=timedelta(hours=2))
    assert result.block is not None
    assert result.holds(by_id(result)["a"]) == result.block


def test_shared_parents_are_held_only_for_providers_that_share() -> None:
    idle = policy(name="idle", match={"idle_for": "1h", "name": ["a"]})
    sessions = [job("a", parent="k"), job("b", parent="k")]
    shared = by_id(plan(sessions, [idle], Declared(parents=ParentRelation.SHARED)))
    assert shared["a"].code == SHARED_PARENT
    unrelated = by_id(plan(sessions, [idle], Declared(parents=ParentRelation.NONE)))
    assert unrelated["a"].verdict is Verdict.ACT
