"""Output fit for people and scripts: -o json everywhere, one timestamp format, no colour
unless on a terminal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import invoke, jupyter_toml

#: Every command that prints something for people also speaks JSON (the rest say why not).
WITH_JSON = [
    ("sweep",),
    ("explain",),
    ("backtest",),
    ("pause",),
    ("resume",),
    ("policy", "apply"),
    ("policy", "validate"),
    ("policy", "list"),
    ("policy", "show"),
    ("policy", "export"),
    ("policy", "history"),
    ("policy", "enable"),
    ("policy", "disable"),
    ("policy", "rollback"),
    ("policy", "diff"),
    ("audit", "list"),
    ("audit", "verify"),
    ("audit", "prune"),
    ("keep", "add"),
    ("keep", "list"),
    ("keep", "remove"),
    ("db", "status"),
]
WITHOUT = {
    ("run",): "the daemon: logs, in JSON with log_format = json",
    ("demo",): "a demonstration for people",
    ("healthcheck",): "an exit code for container health checks",
    ("db", "upgrade"): "one line; `db status -o json` says where the schema is",
    ("audit", "export"): "streams JSON Lines or CSV (--format)",
}


@pytest.mark.parametrize("command", WITH_JSON, ids=" ".join)
def test_every_command_takes_output_json(command: tuple[str, ...]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--output" in result.stdout


def test_the_commands_without_it_are_the_listed_exceptions() -> None:
    import typer.main

    from janitor.cli import app

    root = typer.main.get_command(app)
    found: set[tuple[str, ...]] = set()

    def walk(group: object, path: tuple[str, ...]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            if getattr(command, "commands", None):
                walk(command, (*path, name))
            else:
                found.add((*path, name))

    walk(root, ())
    assert found == set(WITH_JSON) | set(WITHOUT)


def test_json_for_scripts_and_one_time_format_for_people(tmp_path: Path) -> None:
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", "http://127.0.0.1:9/"))
    paused = invoke("-c", str(config), "pause", "--reason", "maintenance", "-o", "json")
    assert json.loads(paused.stdout)["paused"] is True
    resumed = json.loads(invoke("-c", str(config), "resume", "-o", "json").stdout)
    assert resumed == {"paused": False, "resumed": True}
    status = json.loads(invoke("-c", str(config), "db", "status", "-o", "json").stdout)
    assert status["revision"] == status["needs"]
    rows = json.loads(invoke("-c", str(config), "audit", "list", "-o", "json").stdout)
    rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"
    assert all(re.fullmatch(rfc3339, r["at"]) for r in rows)
    table = invoke("-c", str(config), "audit", "list").stdout
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", table)
    assert "\x1b[" not in table


def test_colour_only_on_a_terminal_and_never_with_no_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from janitor.model import Action, AuditEvent, AuditKind, Outcome
    from janitor.store import Store

    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", "http://127.0.0.1:9/"))
    store = Store.open(f"sqlite:///{tmp_path / 'j.db'}")
    store.db.upgrade()
    from janitor.clock import SystemClock

    store.audit.append(
        [
            AuditEvent(
                at=SystemClock().now(),
                kind=AuditKind.OUTCOME,
                outcome=Outcome.FAILED,
                action=Action.DELETE,
                reason="not done",
                actor="janitor@host",
            )
        ]
    )
    store.close()
    from typer.testing import CliRunner

    from janitor.cli import app

    def terminal() -> str:  # as a terminal shows it: click keeps the colours
        result = CliRunner().invoke(app, ["-c", str(config), "audit", "list"], color=True)
        return result.stdout

    assert "\x1b[" not in terminal(), "not a terminal: no colour"
    monkeypatch.setattr("janitor.cli.common.stdout_is_tty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert "\x1b[31mfailed" in terminal(), "red, on a terminal"
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in terminal()
