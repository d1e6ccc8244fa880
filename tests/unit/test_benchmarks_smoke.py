"""The benchmarks still run: tiny sizes, no timing assertions (``make bench`` has the numbers)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import __main__ as bench
from benchmarks import audit, decide, enforce, fleet, http_client, list_sweep


def test_decide_runs_and_agrees_with_its_baseline() -> None:
    results = decide.run([(60, 1), (60, 4)])
    assert [m.case for m in results] == ["n=60 x p=1", "n=60 x p=4"]
    assert all(m.count == 60 and m.unit == "decisions" for m in results)
    assert results[0].extra["acted"] == results[1].extra["acted"]


def test_decide_has_the_s3_cases_and_runs_their_shape_small() -> None:
    assert (decide.S3_SESSIONS, 20) in decide.DEFAULT_CASES
    assert {p for n, p in decide.S3_CASES} == {10, 20, 50}
    assert any(p == 20 for _, p in decide.QUICK_CASES)
    results = decide.run([(300, 20), (300, 50)])
    assert [m.case for m in results] == ["n=300 x p=20", "n=300 x p=50"]
    assert results[0].extra["acted"] == results[1].extra["acted"] > 0
    assert all(m.extra["us_per_session_policy"] > 0 and m.lower_bound > 0 for m in results)


def test_list_sweep_runs_over_loopback_http() -> None:
    results = list_sweep.run([12])
    assert [m.case for m in results] == ["n=12 first sweep", "n=12 repeat sweep"]
    assert results[0].extra["matched"] == 6
    assert all(m.lower_bound > 0 for m in results)


def test_enforce_deletes_every_session_once() -> None:
    (result,) = enforce.run([enforce.Case(n=5, rate=1000.0, concurrency=2)])
    assert result.count == 5
    assert result.extra["requests"] == 12


def test_audit_append_on_sqlite() -> None:
    (result,) = audit.run([audit.Case(rows=10, batch=3)])
    assert result.case == "sqlite rows=10 batch=3"
    assert result.extra["transactions"] == 4


def test_table_and_json_output(tmp_path: Path) -> None:
    results = decide.run([(20, 2)])
    table = bench.format_table(results)
    assert "n=20 x p=2" in table
    assert "lower bounds:" in table
    path = bench.write_json(results, bench.Plan(quick=True, postgres=False), 0.5, tmp_path)
    body = json.loads(path.read_text(encoding="utf-8"))
    assert body["quick"] is True
    assert body["results"][0]["benchmark"] == "decide"
    assert set(body["results"][0]) >= {"seconds", "lower_bound_seconds", "ratio", "per_second"}


def test_fleet_deletes_each_idle_session_once_with_fakes_in_other_processes() -> None:
    case = fleet.FleetCase(targets=2, sessions=30, latency=0.001, rate=1000.0)
    sequential, result = fleet.run_fleet([case])
    assert (sequential.benchmark, result.benchmark) == ("fleet_sequential", "fleet")
    assert sequential.count == result.count == 6  # every tenth of 2 x 30, each deleted once
    assert result.extra["deleted_exactly_once"] == 6
    assert result.extra["requests"] == 2 * (2 + 2 * 3)
    assert result.lower_bound > 0
    assert float(result.extra["janitor_cpu_s"]) > 0
    assert "speedup_vs_sequential" in result.extra


def test_fleet_listing_measures_the_janitor_process() -> None:
    (result,) = fleet.run_listing([fleet.ListingCase(sessions=40)])
    assert result.count == 40
    assert result.extra["would_act"] == 20
    assert float(result.extra["janitor_max_rss_mb"]) > 0
    assert result.lower_bound > 0


def test_http_client_measures_each_available_client_against_a_fake() -> None:
    cases = [http_client.ClientCase(client=c, requests=20) for c in ("janitor", "httpx")]
    results = http_client.run(cases)
    assert [m.case for m in results] == [
        "janitor GET x20 concurrency=8",
        "httpx GET x20 concurrency=8",
    ]
    assert all(m.count == 20 and m.extra["cpu_ms_per_request"] > 0 for m in results)
    assert http_client.available("janitor")
