"""The provider contract suite (tests/providers/contract.py), run against every provider's fake.

Adding a provider: write its ContractFake next to its fake server and add one line to
``FAKES``. A case the provider's API cannot produce is not run for it (``can``); the
report says which cases ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest

from janitor.clock import FrozenClock
from janitor.errors import AuthFailed, OutcomeUnknown, ProviderError
from janitor.model import Action, Outcome, Session, State
from janitor.providers.base import Provider
from tests.conftest import NOW
from tests.fakes.aidp import AidpContract
from tests.fakes.ess import EssContract
from tests.fakes.fabric import FabricContract
from tests.fakes.glue import GlueContract
from tests.fakes.jupyter import JupyterContract
from tests.fakes.toy import ToyContract
from tests.providers.contract import CAPABILITIES, ContractFactory, ContractFake

T = TypeVar("T")

#: provider name -> its contract fake
FAKES: dict[str, ContractFactory] = {
    "aidp": AidpContract,
    "ess": EssContract,
    "fabric_sql": FabricContract,
    "glue": GlueContract,  # tests/fakes/glue.py: 401/403/404/409/429 become Glue's 400 errors
    "jupyter": JupyterContract,
    "toy": ToyContract,  # tests/fakes/toy.py: not shipped; proves the cases real APIs lack
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each case against every fake whose API can produce it (``@needs(...)``)."""
    if "fake_name" not in metafunc.fixturenames:
        return
    wanted = {m.args[0] for m in metafunc.definition.iter_markers("needs")}
    metafunc.parametrize("fake_name", [n for n in sorted(FAKES) if wanted <= FAKES[n].can])


@pytest.fixture
def fake(fake_name: str, clock: FrozenClock) -> ContractFake:
    """The contract fake of one provider."""
    return FAKES[fake_name](clock)


def needs(capability: str) -> pytest.MarkDecorator:
    """A case only APIs with ``capability`` can produce (see contract.CAPABILITIES)."""
    assert capability in CAPABILITIES
    return pytest.mark.needs(capability)


def run(fake: ContractFake, clock: FrozenClock, body: Callable[[Provider], Awaitable[T]]) -> T:
    """Connect a provider to the fake, run ``body`` with it, close it."""

    async def main() -> T:
        provider = fake.connect(clock)
        try:
            return await body(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def stub(fake: ContractFake, session_id: str) -> Session:
    """What reconciliation knows of a session: its id (the audit row), nothing else."""
    return Session(
        target="t",
        provider=fake.provider,
        id=session_id,
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state="",
    )


async def listed(provider: Provider, session_id: str) -> Session:
    """The record of ``session_id`` in a fresh listing."""
    listing = await provider.list_sessions()
    (record,) = [s for s in listing.sessions if s.id == session_id]
    return record


# --- listing ------------------------------------------------------------------------------


def test_the_listing_is_complete_and_every_record_says_what_it_allows(
    fake: ContractFake, clock: FrozenClock
) -> None:
    count = 2 * fake.page_size + 1 if "pages" in fake.can else 5
    ids = {fake.add(f"nb-{i}") for i in range(count)}

    listing = run(fake, clock, lambda p: p.list_sessions())

    assert {s.id for s in listing.sessions} == ids
    assert len(listing.sessions) == len(ids), "each record once"
    for record in listing.sessions:
        assert record.provider == fake.provider
        assert record.actions is not None, "the provider fills in what each record allows"
        assert fake.action in record.actions
        assert record.state is not State.UNKNOWN
        assert record.anomalies == ()
    assert listing.server_skew is not None, "the server's Date header is read"
    if "pages" in fake.can:
        assert fake.requests("list_next") >= 2


@pytest.mark.parametrize("status", [401, 403])
def test_an_auth_failure_is_an_error_never_an_empty_listing(
    fake: ContractFake, clock: FrozenClock, status: int
) -> None:
    fake.add("nb")
    fake.inject("list", status=status, body={"message": "no"}, times=100)
    with pytest.raises(AuthFailed):
        run(fake, clock, lambda p: p.list_sessions())


@needs("pages")
def test_a_failing_later_page_fails_the_listing(fake: ContractFake, clock: FrozenClock) -> None:
    for i in range(2 * fake.page_size):
        fake.add(f"nb-{i}")
    fake.inject("list_next", status=500, times=100)
    with pytest.raises(ProviderError):
        run(fake, clock, lambda p: p.list_sessions())


@needs("pages")
def test_duplicates_across_pages_are_tolerated(fake: ContractFake, clock: FrozenClock) -> None:
    ids = [fake.add(f"nb-{i}") for i in range(2 * fake.page_size)]
    fake.duplicate_across_pages(ids[fake.page_size - 1])

    listing = run(fake, clock, lambda p: p.list_sessions())

    assert sorted(s.id for s in listing.sessions) == sorted(ids)


@needs("total")
def test_a_listing_shorter_than_its_total_is_an_error(
    fake: ContractFake, clock: FrozenClock
) -> None:
    for i in range(fake.page_size + 1):
        fake.add(f"nb-{i}")
    fake.short_listing()
    with pytest.raises(ProviderError):
        run(fake, clock, lambda p: p.list_sessions())


# --- get ----------------------------------------------------------------------------------


def test_get_is_fresh_and_none_once_gone(fake: ContractFake, clock: FrozenClock) -> None:
    sid = fake.add("nb")
    other = fake.add("other")

    async def body(provider: Provider) -> None:
        before = await listed(provider, sid)
        clock.advance(timedelta(minutes=5))
        fake.touch(sid)
        after = await provider.get_session(before)
        assert after is not None
        assert after.id == sid
        assert after.last_activity != before.last_activity or after.etag != before.etag
        fake.remove(other)
        assert await provider.get_session(stub(fake, other)) is None

    run(fake, clock, body)


def test_reading_never_writes_nor_counts_as_activity(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("nb")
    before = fake.activity(sid)

    async def body(provider: Provider) -> None:
        for _ in range(3):
            record = await listed(provider, sid)
            await provider.get_session(record)

    run(fake, clock, body)
    assert fake.activity(sid) == before
    assert fake.writes() == 0


# --- the action ---------------------------------------------------------------------------


async def _act(fake: ContractFake, provider: Provider, sid: str) -> Any:
    record = await listed(provider, sid)
    fresh = await provider.get_session(record)
    assert fresh is not None
    return await provider.act(fake.action, fresh)


def test_the_action_takes_effect_once(fake: ContractFake, clock: FrozenClock) -> None:
    sid = fake.add("nb")
    receipt = run(fake, clock, lambda p: _act(fake, p, sid))
    assert 200 <= receipt.status < 300
    assert not receipt.absent
    assert not receipt.changed
    assert fake.effective(sid) == 1


def test_a_404_means_already_absent(fake: ContractFake, clock: FrozenClock) -> None:
    sid = fake.add("nb")
    fake.inject("act", status=404, body={"message": "not found"})
    receipt = run(fake, clock, lambda p: _act(fake, p, sid))
    assert receipt.absent
    assert fake.effective(sid) == 0


def _refused_as_changed(fake: ContractFake, clock: FrozenClock, status: int) -> None:
    sid = fake.add("nb")
    fake.inject("act", status=status, body={"message": "changed"})
    receipt = run(fake, clock, lambda p: _act(fake, p, sid))
    assert receipt.changed
    assert fake.effective(sid) == 0


@needs("409")
def test_a_conflict_means_changed(fake: ContractFake, clock: FrozenClock) -> None:
    _refused_as_changed(fake, clock, 409)


@needs("412")
def test_a_failed_precondition_means_changed(fake: ContractFake, clock: FrozenClock) -> None:
    _refused_as_changed(fake, clock, 412)


@needs("412")
def test_a_changed_record_is_never_acted_on_with_a_stale_precondition(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("nb")

    async def body(provider: Provider) -> Any:
        record = await listed(provider, sid)
        fresh = await provider.get_session(record)
        assert fresh is not None
        fake.touch(sid)  # the user returns between the re-check and the call
        return await provider.act(fake.action, fresh)

    receipt = run(fake, clock, body)
    assert receipt.changed
    assert fake.effective(sid) == 0


@pytest.mark.parametrize("retry_after", [None, "0"])
def test_throttling_is_retried_because_nothing_was_done(
    fake: ContractFake, clock: FrozenClock, retry_after: str | None
) -> None:
    sid = fake.add("nb")
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    fake.inject("act", status=429, headers=headers, body={"message": "slow down"})
    receipt = run(fake, clock, lambda p: _act(fake, p, sid))
    assert 200 <= receipt.status < 300
    assert fake.requests("act") == 2
    assert fake.effective(sid) == 1


def test_a_server_error_on_the_action_is_unknown_and_not_retried(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("nb")
    fake.inject("act", status=502, times=10)
    with pytest.raises(OutcomeUnknown):
        run(fake, clock, lambda p: _act(fake, p, sid))
    assert fake.requests("act") == 1


def test_a_timeout_after_sending_is_unknown_and_not_retried(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("nb")
    fake.inject("act", error=httpx.ReadTimeout, after=True)
    with pytest.raises(OutcomeUnknown):
        run(fake, clock, lambda p: _act(fake, p, sid))
    assert fake.requests("act") == 1
    assert fake.effective(sid) == 1, "the server did it; janitor cannot know"


# --- settling -----------------------------------------------------------------------------


def test_settling_after_the_action_is_executed(fake: ContractFake, clock: FrozenClock) -> None:
    sid = fake.add("nb")

    async def body(provider: Provider) -> None:
        await _act(fake, provider, sid)  # a 2xx: the provider took the action
        spec = provider.specs[fake.action]
        if spec.asynchronous:
            early = await provider.settle(
                fake.action, stub(fake, sid), accepted=True, waited=timedelta(0)
            )
            assert early.outcome is None, "an accepted action stays open until it settles"
            fake.finish(sid)
        done = await provider.settle(
            fake.action, stub(fake, sid), accepted=True, waited=timedelta(minutes=1)
        )
        assert done.outcome is Outcome.EXECUTED, done.reason

    run(fake, clock, body)


def test_settling_an_untouched_record_says_the_action_did_not_happen(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("nb")  # a crash between the intent and the call: nothing was sent

    async def body(provider: Provider) -> None:
        verdict = await provider.settle(
            fake.action, stub(fake, sid), accepted=False, waited=timedelta(minutes=1)
        )
        assert verdict.outcome is Outcome.FAILED
        assert "did not take effect" in verdict.reason

    run(fake, clock, body)
    assert fake.effective(sid) == 0


def test_settling_a_vanished_record_never_fails(fake: ContractFake, clock: FrozenClock) -> None:
    sid = fake.add("nb")
    fake.remove(sid)

    async def body(provider: Provider) -> None:
        verdict = await provider.settle(
            fake.action, stub(fake, sid), accepted=False, waited=timedelta(minutes=1)
        )
        assert verdict.outcome in (Outcome.ALREADY_ABSENT, Outcome.EXECUTED)

    run(fake, clock, body)


# --- native warnings ----------------------------------------------------------------------


@needs("warn")
def test_a_native_warning_is_shown_once_and_withdrawn_exactly(
    fake: ContractFake, clock: FrozenClock
) -> None:
    sid = fake.add("My notebook [draft]")
    original = fake.shown_name(sid)

    async def body(provider: Provider) -> None:
        record = await listed(provider, sid)
        receipt = await provider.warn(record, "cleanup at 14:30 UTC", act_after=NOW)
        assert not receipt.changed
        shown = fake.shown_name(sid)
        assert shown != original
        warned = await listed(provider, sid)
        assert warned.warning is not None
        assert warned.name == record.name, "the record's name is the user's, prefix stripped"
        again = await provider.warn(warned, "cleanup at 15:00 UTC", act_after=NOW)
        assert not again.changed
        assert fake.shown_name(sid).count(original) == 1, "a prefix is never stacked"
        current = await listed(provider, sid)
        await provider.withdraw(current, receipt.original or record.name)
        assert fake.shown_name(sid) == original
        assert (await listed(provider, sid)).warning is None

    run(fake, clock, body)


def test_every_provider_of_the_registry_has_a_contract_fake() -> None:
    from janitor.errors import ConfigError
    from janitor.providers import PROVIDERS, load_provider

    implemented = []
    for name in PROVIDERS:
        try:
            load_provider(name)
        except ConfigError:  # not written yet
            continue
        implemented.append(name)
    assert sorted(implemented) == sorted(n for n in FAKES if n in PROVIDERS)


def test_every_action_the_provider_declares_is_destructive_and_specified(
    fake: ContractFake, clock: FrozenClock
) -> None:
    provider = fake.connect(clock)
    try:
        assert fake.action in provider.specs
        assert Action.NOTIFY in provider.actions
        for action, spec in provider.specs.items():
            assert spec.action is action
            assert action.destructive
            assert spec.applies_to, f"{action} applies to no provider state"
            assert spec.applies_to <= set(provider.state_table), "states the table maps"
            assert spec.end_states <= set(provider.state_table)
    finally:
        asyncio.run(provider.aclose())
