"""The jupyter provider trusts a ``last_activity`` ahead of janitor's clock up to the target's
``skew_tolerance`` exactly, and not one second past it, in the listing and at the re-check.

A kernel that reports activity in the future would look idle for the wrong time once the
future arrives; past the tolerance the record carries an anomaly and the engine never acts
on it (DESIGN 4.4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from janitor.clock import FrozenClock
from janitor.model import Session
from janitor.providers.jupyter import JupyterConfig, JupyterProvider
from janitor.sim.jupyter import JupyterSim, NotebookSession
from tests.conftest import NOW
from tests.fakes.jupyter import SimTransport

T = TypeVar("T")
DEFAULT = timedelta(minutes=2)  # the default skew_tolerance


def run(
    sim: JupyterSim,
    clock: FrozenClock,
    scenario: Callable[[JupyterProvider], Awaitable[T]],
    **config: Any,
) -> T:
    settings = {
        "name": "nb",
        "provider": "jupyter",
        "base_url": "http://jupyter.test/",
        "token": "test-token",
        **config,
    }

    async def main() -> T:
        provider = JupyterProvider.connect(
            JupyterConfig.model_validate(settings), clock, transport=SimTransport(sim)
        )
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def ahead(sim: JupyterSim, by: timedelta) -> NotebookSession:
    """A session whose kernel reports its last activity ``by`` after janitor's now."""
    session = sim.add_session("a.ipynb")
    sim.kernel_of(session.id).last_activity = NOW + by
    return session


def listed(sim: JupyterSim, clock: FrozenClock, **config: Any) -> Session:
    (record,) = run(sim, clock, lambda p: p.list_sessions(), **config).sessions
    return record


def reread(sim: JupyterSim, clock: FrozenClock, **config: Any) -> Session:
    async def scenario(provider: JupyterProvider) -> Session:
        (record,) = (await provider.list_sessions()).sessions
        fresh = await provider.get_session(record)
        assert fresh is not None
        return fresh

    return run(sim, clock, scenario, **config)


READS = [pytest.param(listed, id="listing"), pytest.param(reread, id="recheck")]
TOLERANCES = [
    pytest.param(DEFAULT, {}, id="default-2m"),
    pytest.param(timedelta(minutes=10), {"skew_tolerance": "10m"}, id="configured-10m"),
]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize(("tolerance", "config"), TOLERANCES)
def test_last_activity_exactly_at_the_tolerance_is_trusted(
    sim: JupyterSim,
    clock: FrozenClock,
    read: Callable[..., Session],
    tolerance: timedelta,
    config: dict[str, str],
) -> None:
    ahead(sim, tolerance)
    record = read(sim, clock, **config)
    assert record.anomalies == ()
    assert record.last_activity == NOW + tolerance


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize(("tolerance", "config"), TOLERANCES)
def test_last_activity_a_second_past_the_tolerance_is_an_anomaly(
    sim: JupyterSim,
    clock: FrozenClock,
    read: Callable[..., Session],
    tolerance: timedelta,
    config: dict[str, str],
) -> None:
    ahead(sim, tolerance + timedelta(seconds=1))
    record = read(sim, clock, **config)
    assert record.last_activity is None
    (anomaly,) = record.anomalies
    assert anomaly.startswith("last_activity lies in the future: ")
