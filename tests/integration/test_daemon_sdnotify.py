"""``janitor run`` under a fake systemd: READY, STATUS, WATCHDOG and STOPPING over a real
notify socket, with the daemon as a real subprocess against the simulated Jupyter server.

The watchdog is fed only while the daemon is healthy. A sweep that outlives its timeout's
cancellation (here: its writes are stuck behind a lock another process holds on the SQLite
database) means the process is wedged: WATCHDOG=1 stops, so systemd would restart it. A
provider that merely never answers is *not* a wedge: the daemon cancels that sweep at its
timeout, audits it, and keeps feeding the watchdog (no restart storms from a slow provider).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.sim.jupyter import JupyterSim, SimServer
from tests.conftest import invoke
from tests.fakes.daemon import (
    NotifySocket,
    SilentServer,
    daemon_env,
    free_port,
    http_get,
    running_daemon,
    wait_until,
)


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def served() -> Iterator[tuple[JupyterSim, SimServer]]:
    sim = JupyterSim(token="test-token")
    sim.add_session("work/analysis.ipynb", idle_for=timedelta(hours=3))
    sim.add_session("work/train.ipynb", state="busy")
    server = sim.serve()
    yield sim, server
    server.stop()


def write_config(tmp_path: Path, base_url: str, port: int, **extra: str) -> Path:
    """A fast-cycling daemon config: 1 s sweeps, a 2 s sweep timeout, 1 s shutdown grace."""
    settings = {
        "database_url": f'"sqlite:///{tmp_path / "janitor.db"}"',
        "sweep_interval": '"1s"',
        "sweep_jitter": '"0s"',
        "sweep_timeout": '"2s"',
        "shutdown_grace": '"1s"',
        "listen": f'"127.0.0.1:{port}"',
        "log_format": '"json"',
    }
    settings.update(extra)
    lines = [f"{key} = {value}" for key, value in settings.items()]
    lines += [
        "",
        "[[targets]]",
        'name = "notebooks"',
        'provider = "jupyter"',
        f'base_url = "{base_url}/"',
        'token = "test-token"',
        'timeout = "60s"',
    ]
    path = tmp_path / "janitor.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def healthz(port: int) -> tuple[int, dict[str, object]]:
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    return status, json.loads(body)


def audit_kinds(config: Path) -> list[str]:
    result = invoke("-c", str(config), "audit", "list", "-o", "json")
    assert result.exit_code == 0, result.output
    return [row["kind"] for row in json.loads(result.stdout)]


def test_ready_status_watchdog_stopping_and_no_watchdog_while_a_sweep_is_wedged(
    tmp_path: Path, notify: NotifySocket, served: tuple[JupyterSim, SimServer]
) -> None:
    _, server = served
    port = free_port()
    config = write_config(tmp_path, server.url, port)
    env = daemon_env(notify, WATCHDOG_USEC="1000000")  # WatchdogSec=1s: ping every 0.5 s

    with running_daemon(config, env, tmp_path / "daemon.log") as daemon:
        ready = notify.wait_for("READY=1")
        assert "STATUS=ready" in ready
        status = notify.wait_for("STATUS=last sweep")
        assert "1 targets, 2 sessions" in status
        notify.wait_for("WATCHDOG=1")
        assert healthz(port)[0] == 200

        # Another process holds the database's write lock: the next sweep cannot record
        # anything, is cancelled at its timeout, and cannot even record that it was.
        with contextlib.closing(
            sqlite3.connect(tmp_path / "janitor.db", isolation_level=None, timeout=30)
        ) as blocker:
            blocker.execute("BEGIN EXCLUSIVE")
            _, body = wait_until(
                lambda: (h := healthz(port))[0] == 503 and h, "/healthz to report the wedge"
            )
            assert "not ending after cancellation" in " ".join(map(str, body["problems"]))
            time.sleep(0.6)  # one watchdog period: a ping decided just before is flushed
            notify.drain()
            quiet = notify.collect(1.5)
            assert not [m for m in quiet if "WATCHDOG=1" in m], quiet
            assert healthz(port)[0] == 503, "the wedge lasted the whole observation"
            blocker.execute("ROLLBACK")

        notify.wait_for("WATCHDOG=1")
        wait_until(lambda: healthz(port)[0] == 200, "/healthz to recover")
        assert daemon.terminate() == 0
        notify.wait_for("STOPPING=1")
        log = daemon.log()

    assert "watchdog not fed" in log
    assert "sweep_aborted" in audit_kinds(config)


def test_a_provider_that_never_answers_is_cancelled_and_the_watchdog_keeps_going(
    tmp_path: Path, notify: NotifySocket
) -> None:
    silent = SilentServer()
    port = free_port()
    config = write_config(tmp_path, silent.url, port)
    env = daemon_env(notify, WATCHDOG_USEC="1000000")
    try:
        with running_daemon(config, env, tmp_path / "daemon.log") as daemon:
            notify.wait_for("READY=1")
            assert silent.accepted.wait(30), "the sweep never reached the provider"
            wait_until(
                lambda: "sweep cancelled after its timeout" in daemon.log(),
                "the sweep to be cancelled at its timeout",
            )
            notify.drain()
            notify.wait_for("WATCHDOG=1")  # still fed after the cancelled sweep
            assert healthz(port)[0] == 200
            assert daemon.terminate() == 0
            notify.wait_for("STOPPING=1")
    finally:
        silent.close()

    assert "sweep_aborted" in audit_kinds(config)
