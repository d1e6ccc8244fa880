"""``/metrics`` of a real daemon process agrees with its audit trail and with what the
simulated Jupyter servers saw; every log line of a sweep carries its sweep id and target.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from janitor import __version__
from janitor.sim.jupyter import JupyterSim, SimServer
from tests.conftest import invoke
from tests.fakes.daemon import (
    NotifySocket,
    daemon_env,
    free_port,
    http_get,
    running_daemon,
)

POLICIES = """
policies:
  - name: dead-kernels
    priority: 10
    match: {state: [dead]}
    action: delete
    mode: enforce
  - name: idle-notebooks
    priority: 100
    match: {state: [idle], idle_for: 2h, max_connections: 0, kind: [notebook]}
    exempt: {name: ["keep-*"]}
    action: delete
    mode: enforce
  - name: idle-consoles
    priority: 200
    match: {state: [idle], idle_for: 1h, kind: [console]}
    action: delete
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def sims() -> Iterator[tuple[JupyterSim, SimServer, JupyterSim, SimServer]]:
    notebooks = JupyterSim(token="test-token")
    notebooks.add_session("a/analysis.ipynb", idle_for=timedelta(hours=3))
    notebooks.add_session("a/report.ipynb", idle_for=timedelta(hours=5))
    notebooks.add_session("a/keep-me.ipynb", idle_for=timedelta(hours=9))
    notebooks.add_session("a/train.ipynb", state="busy", idle_for=timedelta(hours=4))
    notebooks.add_session("console-1", idle_for=timedelta(hours=2), kind="console")
    notebooks.add_kernel(state="dead", idle_for=timedelta(days=1))
    crowded = JupyterSim(token="test-token")
    for n in range(3):
        crowded.add_session(f"b/old-{n}.ipynb", idle_for=timedelta(hours=6))
    first, second = notebooks.serve(), crowded.serve()
    yield notebooks, first, crowded, second
    first.stop()
    second.stop()


def write_config(tmp_path: Path, port: int, notebooks_url: str, crowded_url: str) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(
        f'database_url = "sqlite:///{tmp_path / "janitor.db"}"\n'
        'sweep_interval = "1h"\nsweep_jitter = "0s"\nlog_format = "json"\n'
        f'listen = "127.0.0.1:{port}"\n\n'
        '[[targets]]\nname = "notebooks"\nprovider = "jupyter"\n'
        f'base_url = "{notebooks_url}/"\ntoken = "test-token"\n\n'
        '[[targets]]\nname = "crowded"\nprovider = "jupyter"\n'
        f'base_url = "{crowded_url}/"\ntoken = "test-token"\n'
        "max_actions_per_sweep = 1\n"
        "requests_per_second = 0.5\n",  # a budget of one request: the second one waits
        encoding="utf-8",
    )
    return path


def scrape(port: int) -> Samples:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= set(lbls))


def test_metrics_match_the_audit_trail_and_the_provider(
    tmp_path: Path,
    notify: NotifySocket,
    sims: tuple[JupyterSim, SimServer, JupyterSim, SimServer],
) -> None:
    notebooks, first, crowded, second = sims
    port = free_port()
    config = write_config(tmp_path, port, first.url, second.url)
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES, encoding="utf-8")
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    assert invoke("-c", str(config), "policy", "apply", "-f", str(policies)).exit_code == 0

    with running_daemon(config, daemon_env(notify), tmp_path / "daemon.log") as daemon:
        notify.wait_for("STATUS=last sweep")
        samples = scrape(port)
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        assert daemon.terminate() == 0
        logs = daemon.json_lines()

    result = invoke("-c", str(config), "audit", "list", "-o", "json")
    rows = json.loads(result.stdout)
    outcomes = Counter(
        (r["target"], r["action"], r["outcome"]) for r in rows if r["kind"] == "outcome"
    )
    executed = sum(n for (_, _, outcome), n in outcomes.items() if outcome == "executed")
    assert executed == 3  # two idle notebooks and the dead kernel
    assert total(samples, "janitor_actions_total", outcome="executed") == executed
    for (target, action, outcome), count in outcomes.items():
        labels = {"target": target, "action": action, "outcome": outcome}
        assert total(samples, "janitor_actions_total", **labels) == count, labels
    assert total(samples, "janitor_actions_total") == sum(outcomes.values())

    blocked = [r for r in rows if r["kind"] == "blocked"]
    assert [r["target"] for r in blocked] == ["crowded"]
    assert total(samples, "janitor_blast_radius_blocks_total", target="crowded") == 1
    assert total(samples, "janitor_alerts_total", kind="blocked") == 1

    # what the servers saw is what janitor counted
    for sim, target in ((notebooks, "notebooks"), (crowded, "crowded")):
        assert total(samples, "janitor_provider_requests_total", target=target) == len(sim.requests)
        assert total(samples, "janitor_sweeps_total", target=target, result="ok") == 1
        assert total(samples, "janitor_sweep_duration_seconds_count", target=target) == 1
        assert total(samples, "janitor_last_successful_sweep_timestamp_seconds", target=target)
        assert total(samples, "janitor_lease_held", target=target) == 1
    assert total(samples, "janitor_rate_limit_waits_total", target="crowded") >= 1
    assert total(samples, "janitor_rate_limit_wait_seconds_total", target="crowded") > 0

    seen = {
        state: total(samples, "janitor_sessions_seen", target="notebooks", state=state)
        for state in ("idle", "busy", "dead", "unknown")
    }
    assert seen == {"idle": 4, "busy": 1, "dead": 1, "unknown": 0}
    assert total(samples, "janitor_sessions_seen", target="crowded", state="idle") == 3

    # the audit chain head as of the end of the sweep
    assert total(samples, "janitor_audit_chain_rows") == len(rows)
    assert total(samples, "janitor_audit_chain_head_info", hash=rows[-1]["hash"]) == 1
    assert total(samples, "janitor_build_info", version=__version__) == 1
    assert total(samples, "janitor_paused") == 0

    # the series docs/operations.md builds alert rules on exist from the start, at zero
    for kind in ("chain_broken", "target_failed", "circuit_open", "sweep_timeout"):
        assert (("janitor_alerts_total", (("kind", kind),))) in samples, kind
        assert total(samples, "janitor_alerts_total", kind=kind) == 0
    for target in ("notebooks", "crowded"):
        assert ("janitor_circuit_open", (("target", target),)) in samples
        assert total(samples, "janitor_circuit_open", target=target) == 0
    assert (
        "janitor_blast_radius_blocks_total",
        (("scope", "policy"), ("target", "notebooks")),
    ) in samples

    # every line logged inside the sweep names the sweep and its target
    sweep_lines = [line for line in logs if line["logger"] in ("janitor.sweep", "janitor.actions")]
    per_target = [line for line in sweep_lines if line["target"] is not None]
    assert {line["target"] for line in per_target} == {"notebooks", "crowded"}
    assert all(line["sweep_id"] for line in sweep_lines), sweep_lines
    assert len({line["sweep_id"] for line in sweep_lines}) == 1
    assert any("executed delete" in line["message"] for line in per_target)
