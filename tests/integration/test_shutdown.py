"""SIGTERM/SIGINT: the action in flight finishes (or is cut and recorded ``unknown``), exit < 10 s.

Runs ``janitor run`` as a real process against the simulator over loopback HTTP, with a
DELETE that takes a while on the server side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.sim.jupyter import JupyterSim, SimServer
from tests.conftest import invoke, jupyter_toml
from tests.fakes.daemon import free_port

POLICY = """
policies:
  - name: idle
    match: {state: [idle], idle_for: 1h}
    action: delete
    mode: enforce
"""


@pytest.fixture
def served() -> Iterator[tuple[JupyterSim, SimServer]]:
    sim = JupyterSim(token="test-token")
    server = sim.serve()
    yield sim, server
    server.stop()


def _prepare(tmp_path: Path, server: SimServer) -> Path:
    config = tmp_path / "janitor.toml"
    config.write_text(
        jupyter_toml(
            f"sqlite:///{tmp_path / 'j.db'}",
            server.url + "/",
            sweep_interval='"1h"',
            listen=f'"127.0.0.1:{free_port()}"',
            log_format='"json"',
        )
    )
    (tmp_path / "p.yaml").write_text(POLICY)
    assert (
        invoke("-c", str(config), "policy", "apply", "-f", str(tmp_path / "p.yaml")).exit_code == 0
    )
    return config


def _start(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "janitor", "-c", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _audit(config: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = json.loads(
        invoke("-c", str(config), "audit", "list", "-o", "json").stdout
    )
    return rows


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_the_call_in_flight_finish_and_records_it(
    tmp_path: Path, served: tuple[JupyterSim, SimServer], sig: signal.Signals
) -> None:
    sim, server = served
    session = sim.add_session("a.ipynb", idle_for=timedelta(hours=2))
    sim.delete_delay = 2.0
    config = _prepare(tmp_path, server)
    proc = _start(config)
    try:
        assert sim.delete_started.wait(30), "the daemon never started the delete"
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        output = proc.communicate()[0].decode()
    assert dict(sim.deletes) == {session.id: 1}
    outcome = [r for r in _audit(config) if r["kind"] == "outcome"]
    assert [r["outcome"] for r in outcome] == ["executed"], output
    assert "janitor stopped" in output


def test_a_call_longer_than_the_grace_is_cut_recorded_unknown_and_reconciled(
    tmp_path: Path, served: tuple[JupyterSim, SimServer]
) -> None:
    sim, server = served
    session = sim.add_session("a.ipynb", idle_for=timedelta(hours=2))
    sim.delete_delay = 8.0
    config = _prepare(tmp_path, server)
    proc = _start(config)
    try:
        assert sim.delete_started.wait(30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()
    rows = _audit(config)
    assert [r["outcome"] for r in rows if r["kind"] == "outcome"] == ["unknown"]
    deadline = time.monotonic() + 30
    while not sim.deletes and time.monotonic() < deadline:
        time.sleep(0.1)  # the server finishes the delete it was given
    sim.delete_delay = 0.0
    sweep = invoke("-c", str(config), "sweep")
    assert sweep.exit_code == 0, sweep.output
    final = [r for r in _audit(config) if r["kind"] == "outcome"]
    assert [r["outcome"] for r in final] == ["unknown", "already_absent"]
    assert final[1]["intent_id"] == final[0]["intent_id"]
    assert "reconciled" in str(final[1]["reason"])
    assert dict(sim.deletes) == {session.id: 1}, "never re-issued"
