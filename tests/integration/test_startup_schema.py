"""``janitor run`` refuses to start on an old schema unless auto-upgrade is on (SQLite default)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from janitor.store import Database
from tests.conftest import jupyter_toml
from tests.fakes.daemon import free_port


def _run(config: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "janitor", "-c", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _config(tmp_path: Path, db_url: str, **extra: str) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(
        jupyter_toml(
            db_url,
            "http://127.0.0.1:9/",
            sweep_interval='"1h"',
            listen=f'"127.0.0.1:{free_port()}"',
            **extra,
        )
    )
    return path


@pytest.mark.postgres
def test_postgres_without_auto_upgrade_refuses_to_start(tmp_path: Path, postgres_url: str) -> None:
    proc = _run(_config(tmp_path, postgres_url))
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 1
    assert (
        f"refusing to start: database schema is at nothing, janitor needs {Database.head_revision()}"
        in output
    )
    database = Database(postgres_url)
    assert database.current_revision() is None, "nothing was changed"
    database.dispose()


def test_sqlite_upgrades_itself_and_starts(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'j.db'}"
    proc = _run(_config(tmp_path, db_url, log_format='"json"'))
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode())
            if "is usable" in lines[-1]:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.communicate()
    database = Database(db_url)
    assert database.schema_is_current()
    database.dispose()


@pytest.mark.postgres
def test_postgres_with_auto_upgrade_starts(tmp_path: Path, postgres_url: str) -> None:
    proc = _run(_config(tmp_path, postgres_url, auto_upgrade="true"))
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if b"is usable" in raw:
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.communicate()
    database = Database(postgres_url)
    assert database.schema_is_current()
    database.dispose()
