"""The health state, the HTTP server in its thread (on loopback), and ``janitor healthcheck``."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from janitor.errors import ConfigError
from janitor.observability.health import Health, HealthServer, parse_listen
from tests.conftest import invoke
from tests.fakes.daemon import daemon_env, http_get


@pytest.fixture
def health() -> Health:
    return Health(sweep_timeout=60, overrun_grace=10, failing_after=900)


@pytest.fixture
def server(health: Health) -> Iterator[HealthServer]:
    srv = HealthServer("127.0.0.1:0", health)
    srv.start()
    yield srv
    srv.stop()


def request(url: str, method: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def test_a_fresh_loop_is_alive(health: Health) -> None:
    assert health.liveness() == (True, [])


def test_a_stalled_loop_is_not_alive(health: Health) -> None:
    health.heartbeat = time.monotonic() - 100
    alive, problems = health.liveness()
    assert not alive
    assert problems[0].startswith("event loop stalled for")


def test_a_sweep_is_stuck_only_after_its_timeout_and_the_grace(health: Health) -> None:
    health.sweep_started = time.monotonic() - 65  # past the timeout, within the grace
    assert health.liveness() == (True, [])
    health.sweep_started = time.monotonic() - 75
    alive, problems = health.liveness()
    assert not alive
    assert "past its timeout of 60s and not ending after cancellation" in problems[0]


def test_readiness_adds_database_stopping_and_long_failing_targets(health: Health) -> None:
    assert health.readiness() == (False, ["database not checked yet"])
    health.db_ok = True
    assert health.readiness() == (True, [])
    health.target_result("nb", ok=False)
    assert health.readiness() == (True, []), "a target failing briefly is not a problem"
    health.failing_since["nb"] = time.monotonic() - 1000
    ready, problems = health.readiness()
    assert not ready
    assert problems[0].startswith("target nb failing for")
    health.target_result("nb", ok=True)
    assert health.readiness() == (True, [])
    health.stopping = True
    assert health.readiness() == (False, ["shutting down"])


def test_readiness_includes_liveness(health: Health) -> None:
    health.db_ok = True
    health.heartbeat = time.monotonic() - 100
    ready, problems = health.readiness()
    assert not ready
    assert "event loop stalled" in problems[0]


def test_endpoints(health: Health, server: HealthServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    status, body = http_get(f"{base}/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "problems": []})
    status, body = http_get(f"{base}/readyz")
    assert (status, json.loads(body)) == (
        503,
        {"ok": False, "problems": ["database not checked yet"]},
    )
    health.db_ok = True
    assert http_get(f"{base}/readyz")[0] == 200
    health.heartbeat = time.monotonic() - 100
    assert http_get(f"{base}/healthz")[0] == 503, "answered from its thread, loop or not"

    status, text = http_get(f"{base}/metrics")
    assert status == 200
    assert "# TYPE janitor_actions_total counter" in text
    assert 'janitor_build_info{version="' in text

    assert http_get(f"{base}/")[0] == 404
    status, headers, _ = request(f"{base}/healthz", "POST")
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    status, headers, content = request(f"{base}/healthz", "HEAD")
    assert (status, content) == (503, b"")
    assert headers["Cache-Control"] == "no-store"


def test_ipv6_listen(health: Health) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        srv = HealthServer("[::1]:0", health)
    except ConfigError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    srv.start()
    try:
        status, _ = http_get(f"http://[::1]:{srv.port}/healthz")
        assert status == 200
    finally:
        srv.stop()


def test_a_busy_port_is_a_config_error_naming_the_setting(
    health: Health, server: HealthServer
) -> None:
    with pytest.raises(ConfigError, match=r"listen = '127.0.0.1:\d+': cannot serve"):
        HealthServer(f"127.0.0.1:{server.port}", health)


def test_stop_without_start_does_not_hang(health: Health) -> None:
    HealthServer("127.0.0.1:0", health).stop()


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:9465") == ("0.0.0.0", 9465)
    assert parse_listen("[::]:9465") == ("::", 9465)


def test_healthcheck_command(health: Health, server: HealthServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{server.port}/healthz"
    result = invoke("healthcheck", "--url", url)
    assert (result.exit_code, result.stdout.strip()) == (0, "healthy")

    config = tmp_path / "janitor.toml"
    config.write_text(f'listen = "127.0.0.1:{server.port}"\n', encoding="utf-8")
    assert invoke("-c", str(config), "healthcheck").exit_code == 0, "URL from `listen`"

    health.heartbeat = time.monotonic() - 100
    result = invoke("healthcheck", "--url", url)
    assert result.exit_code == 1

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    result = invoke("healthcheck", "--url", f"http://127.0.0.1:{closed}/healthz", "--timeout", "2")
    assert result.exit_code == 1
    assert "unhealthy" in result.stderr


def test_a_busy_listen_port_makes_run_exit_2(server: HealthServer, tmp_path: Path) -> None:
    """A port clash is a configuration error: exit 2, which systemd does not restart."""
    config = tmp_path / "janitor.toml"
    config.write_text(
        f'database_url = "sqlite:///{tmp_path / "janitor.db"}"\n'
        f'listen = "127.0.0.1:{server.port}"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "janitor", "-c", str(config), "run"],
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"listen = '127.0.0.1:{server.port}': cannot serve" in result.stderr
