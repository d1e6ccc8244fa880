"""``janitor sweep`` exits 1 when a destructive call's result is not known.

An ``unknown`` outcome (a 5xx, a timeout or a lost connection after the request was sent) is
a failure of the sweep, as much as ``failed``: the session may or may not be gone, and the
operator (or the cron job running ``janitor sweep``) must hear about it. The boundary case:
a sweep whose only bad outcome is one ``unknown`` next to a successful delete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.sim.jupyter import Response, SimServer
from tests.conftest import invoke, jupyter_toml
from tests.fakes.served import Hook, HookedSim

POLICY = """
policies:
  - name: idle-notebooks
    match: {state: [idle], idle_for: 2h}
    action: delete
    mode: enforce
"""


@pytest.fixture
def served() -> Iterator[tuple[HookedSim, SimServer]]:
    sim = HookedSim(token="test-token")
    server = sim.serve()
    yield sim, server
    server.stop()


def test_a_sweep_whose_only_bad_outcome_is_unknown_exits_1(
    served: tuple[HookedSim, SimServer], tmp_path: Path
) -> None:
    sim, server = served
    done = sim.add_session("done.ipynb", idle_for=timedelta(hours=3))
    lost = sim.add_session("lost.ipynb", idle_for=timedelta(hours=3))
    # The server deletes the session, but the gateway in front of it answers 502.
    sim.hook(
        Hook(
            when=lambda method, path: method == "DELETE" and path.endswith(lost.id),
            answer=lambda _: Response(502, {"message": "Bad Gateway"}),
        )
    )
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", server.url + "/"))
    (tmp_path / "p.yaml").write_text(POLICY)
    applied = invoke("-c", str(config), "policy", "apply", "-f", str(tmp_path / "p.yaml"))
    assert applied.exit_code == 0, applied.output

    result = invoke("-c", str(config), "sweep")

    assert result.exit_code == 1, result.output
    assert "1 executed, 1 unknown" in result.stdout
    assert dict(sim.deletes) == {done.id: 1, lost.id: 1}, "each called once, never retried"
    rows = json.loads(
        invoke("-c", str(config), "audit", "list", "--kind", "outcome", "-o", "json").stdout
    )
    assert {r["session_id"]: r["outcome"] for r in rows} == {
        done.id: "executed",
        lost.id: "unknown",
    }
