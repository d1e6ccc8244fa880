"""Provider errors name the URL and the credential source; retries are logged by janitor."""

from __future__ import annotations

import asyncio
import json
import logging
from io import StringIO
from pathlib import Path

import httpx
import pytest

from janitor.clock import FrozenClock
from janitor.errors import AuthFailed
from janitor.observability.logs import setup_logging
from janitor.providers.jupyter import JupyterProvider
from janitor.sim.jupyter import JupyterSim
from janitor.store import Store
from janitor.targets import JupyterConfig
from tests.fakes.jupyter import Fault, SimTransport, on


def _provider(
    sim: JupyterSim, clock: FrozenClock, **keys: str
) -> tuple[JupyterProvider, SimTransport]:
    transport = SimTransport(sim)
    config = JupyterConfig.model_validate(
        {"name": "nb", "provider": "jupyter", "base_url": "http://jupyter.test:8888/", **keys}
    )
    return JupyterProvider.connect(config, clock, transport=transport), transport


def test_an_auth_failure_names_the_url_and_the_token_file(
    sim: JupyterSim, clock: FrozenClock, tmp_path: Path
) -> None:
    token_file = tmp_path / "jupyter-token"
    token_file.write_text("not-the-token")
    provider, _ = _provider(sim, clock, token_file=str(token_file))

    async def scenario() -> None:
        try:
            await provider.list_sessions()
        finally:
            await provider.aclose()

    with pytest.raises(AuthFailed) as caught:
        asyncio.run(scenario())
    message = str(caught.value)
    assert "403 credentials rejected by http://jupyter.test:8888/" in message
    assert f"(token from token_file {token_file})" in message
    assert "not-the-token" not in message


def test_retries_are_logged_by_janitor_with_the_url_and_the_cause(
    sim: JupyterSim, clock: FrozenClock
) -> None:
    stream = StringIO()
    setup_logging("json", "INFO", stream=stream)
    provider, transport = _provider(sim, clock, token="test-token")
    transport.add(Fault(when=on("GET", "api/kernels"), error=httpx.ConnectError, times=2))

    async def scenario() -> None:
        try:
            await provider.list_sessions()
        finally:
            await provider.aclose()

    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    retries = [line["message"] for line in lines if line["message"].startswith("retrying")]
    cause = "after ProviderUnavailable: GET api/kernels: ConnectError (not sent)"
    assert retries == [
        f"retrying GET http://jupyter.test:8888/api/kernels (1/3) {cause}",
        f"retrying GET http://jupyter.test:8888/api/kernels (2/3) {cause}",
    ]
    assert not [line for line in lines if line["logger"] == "stamina"], "no library events"
    assert not [key for line in lines for key in line if key.startswith("stamina")]


def test_action_logs_name_the_session_by_name_and_id(
    sim: JupyterSim, clock: FrozenClock, sqlite_store: Store
) -> None:
    from datetime import timedelta

    from janitor.policy.spec import PolicySpec
    from janitor.sweep import run_sweep
    from tests.conftest import build_runtime, make_config

    session = sim.add_session("work/quarterly.ipynb", idle_for=timedelta(hours=3))
    sqlite_store.policies.apply(
        [
            PolicySpec.model_validate(
                {"name": "idle", "match": {"idle_for": "1h"}, "action": "delete", "mode": "enforce"}
            )
        ],
        actor="t",
        now=clock.now(),
    )
    stream = StringIO()
    setup_logging("json", "INFO", stream=stream)
    config = make_config("sqlite://")

    async def scenario() -> None:
        rt = build_runtime(config, sqlite_store, {"nb": SimTransport(sim)}, clock)
        try:
            await run_sweep(rt)
        finally:
            await rt.providers["nb"].aclose()

    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [done] = [line for line in lines if line["message"].startswith("executed delete")]
    assert done["session_name"] == "quarterly.ipynb"
    assert done["session_id"] == session.id
    assert f"quarterly.ipynb ({session.id})" in done["message"]
