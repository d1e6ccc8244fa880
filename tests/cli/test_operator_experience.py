"""What an operator meets on day one (issue 13): no silent surprises, errors naming the cause.

Read-only commands never create a database or a directory; a sweep that cannot write its
database fails; unknown option values are usage errors listing the valid ones; a second
``resume`` writes nothing; a policy whose targets match nothing says so and suggests the close
name; help shows plain flags.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from janitor.store import Store
from tests.conftest import invoke, jupyter_toml

READ_ONLY_COMMANDS = [
    ("explain",),
    ("audit", "list"),
    ("audit", "verify"),
    ("db", "status"),
    ("policy", "list"),
    ("policy", "show", "idle"),
    ("policy", "history", "idle"),
    ("policy", "export"),
]


@pytest.fixture
def nowhere(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose database lies in a directory that does not exist."""
    db = tmp_path / "state" / "janitor" / "janitor.db"
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{db}", "http://127.0.0.1:9/"))
    return config, db


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_read_only_commands_create_no_database_and_say_where_they_looked(
    nowhere: tuple[Path, Path], command: tuple[str, ...]
) -> None:
    config, db = nowhere
    result = invoke("-c", str(config), *command)
    assert result.exit_code in (1, 2), result.output
    assert f"no janitor database at {db}" in result.stderr
    assert "janitor db upgrade" in result.stderr
    assert result.stdout == "", "nothing on stdout ahead of the error"
    assert not db.parent.exists(), "not even its directory"


def test_explain_without_a_config_file_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    result = invoke("explain")
    assert result.exit_code == 2
    assert "no configuration file" in result.stderr
    assert "/etc/janitor/janitor.toml" in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "xdg").exists()


def _immutable(path: Path) -> bool:
    """Make ``path`` immutable (even for root); False where the filesystem cannot."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    return done.returncode == 0


def test_a_sweep_that_cannot_write_its_database_fails_naming_the_file(tmp_path: Path) -> None:
    db = tmp_path / "janitor.db"
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(f"sqlite:///{db}", "http://127.0.0.1:9/"))
    assert invoke("-c", str(config), "db", "upgrade").exit_code == 0
    assert _immutable(db), "chattr +i must work on the test machine (tmp on ext4, as root)"
    try:
        result = invoke("-c", str(config), "sweep", "-o", "json")
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["failed"] is True
    assert f"cannot open or write {db}" in summary["error"]  # the sweep's own row
    assert f"cannot open or write {db}" in summary["targets"][0]["error"]  # its lease


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", "http://127.0.0.1:9/"))
    assert invoke("-c", str(path), "db", "upgrade").exit_code == 0
    return path


def test_an_unknown_option_value_is_a_usage_error_listing_the_valid_ones(config: Path) -> None:
    result = invoke("-c", str(config), "audit", "list", "--kind", "outcomes")
    assert result.exit_code == 2
    assert "'outcomes' is not one of" in result.stderr
    assert "'outcome'" in result.stderr
    assert result.stdout == ""


def test_a_second_resume_says_it_was_not_paused_and_writes_nothing(config: Path) -> None:
    assert invoke("-c", str(config), "pause", "--reason", "look").exit_code == 0
    assert invoke("-c", str(config), "resume").exit_code == 0
    second = invoke("-c", str(config), "resume")
    assert second.exit_code == 0
    assert "not paused" in second.stdout
    store = Store.open(f"sqlite:///{config.parent / 'j.db'}")
    try:
        kinds = [str(e.kind) for e in store.audit.events()]
    finally:
        store.close()
    assert kinds == ["pause", "resume"]


def test_a_policy_matching_no_target_says_so_and_strict_refuses_it(
    config: Path, tmp_path: Path
) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        "policies:\n  - {name: idle, targets: [notebook], match: {idle_for: 1h}, action: delete}\n"
    )
    plan = invoke("-c", str(config), "policy", "apply", "-f", str(file), "--plan")
    assert plan.exit_code == 0
    assert "match no configured target, so it would act on nothing" in plan.stderr
    assert "(did you mean 'notebooks'?)" in plan.stderr
    assert "would create idle (v1, dry-run)" in plan.stdout
    strict = invoke("-c", str(config), "policy", "apply", "-f", str(file), "--strict")
    assert strict.exit_code == 2
    assert "(did you mean 'notebooks'?)" in strict.stderr
    assert invoke("-c", str(config), "policy", "list", "-o", "json").stdout.strip() == "[]"


def test_help_shows_plain_flags() -> None:
    result = invoke("sweep", "--help")
    assert result.exit_code == 0
    assert "--dry-run" in result.stdout
    assert "<bool>" not in result.stdout


# --- errors that point at the cause -------------------------------------------------------


def test_a_bad_value_from_the_environment_names_the_variable(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JANITOR_SWEEP_INTERVAL", "abc")
    result = invoke("-c", str(config), "policy", "list")
    assert result.exit_code == 2
    assert "environment variable JANITOR_SWEEP_INTERVAL: key sweep_interval" in result.stderr
    assert str(config) not in result.stderr, "the file is not what is wrong"


def test_a_bad_value_from_a_credentials_file_names_the_file(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "janitor_listen").write_text("nowhere")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    result = invoke("-c", str(config), "policy", "list")
    assert result.exit_code == 2
    assert f"credentials file {creds / 'janitor_listen'}: key listen" in result.stderr


def test_a_mistyped_janitor_variable_is_warned_about(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JANITOR_SWEEP_INTERVL", "5m")
    result = invoke("-c", str(config), "policy", "list")
    assert result.exit_code == 0
    assert (
        "environment variable JANITOR_SWEEP_INTERVL is not a janitor setting; ignored "
        "(did you mean JANITOR_SWEEP_INTERVAL?)"
    ) in result.stderr


def test_jitter_longer_than_the_interval_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "janitor.toml"
    path.write_text(
        jupyter_toml(
            f"sqlite:///{tmp_path / 'j.db'}",
            "http://127.0.0.1:9/",
            sweep_interval='"1m"',
            sweep_jitter='"5m"',
        )
    )
    result = invoke("-c", str(path), "db", "upgrade")
    assert result.exit_code == 0
    assert "sweep_jitter (5m) is longer than sweep_interval (1m)" in result.stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'sweep_intervall = "5m"',
            "key sweep_intervall: unknown key (did you mean 'sweep_interval'?)",
        ),
        (
            '[notify]\nwebhook_urll = "x"',
            "key notify.webhook_urll: unknown key (did you mean 'webhook_url'?)",
        ),
    ],
)
def test_an_unknown_config_key_suggests_the_close_one(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "janitor.toml"
    path.write_text(toml + "\n")
    result = invoke("-c", str(path), "policy", "list")
    assert result.exit_code == 2
    assert f"{path}: {message}" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty: expected a document like 'policies: [...]'"),
        ("- name: a\n", "expected a mapping with a 'policies' list at the top, got a YAML list"),
        (
            "policies:\n  - name: a\n    match:\n      idle_for: 2h\n     action: delete\n",
            "invalid YAML (line 5, column 6): this line is indented differently",
        ),
        (
            "policies:\n  - name: a\n    idle_for: 2h\n    match: {state: [idle]}\n    action: delete\n",
            "policy a: idle_for: unknown key: idle_for is a condition: it belongs under match",
        ),
        (
            "policies:\n  - name: a\n    match: {idle_fo: 2h}\n    action: delete\n",
            "policy a: match.idle_fo: unknown key (did you mean 'idle_for'?",
        ),
        (
            "policies:\n  - name: a\n    match: {idle_for: 2h}\n    acton: delete\n",
            "policy a: acton: unknown key (did you mean 'action'?)",
        ),
    ],
)
def test_policy_file_mistakes_get_messages_a_person_can_act_on(
    config: Path, tmp_path: Path, text: str, message: str
) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(text)
    result = invoke("-c", str(config), "policy", "validate", "-f", str(file))
    assert result.exit_code == 2
    assert message in result.stderr, result.stderr


# --- logs and summaries that match -------------------------------------------------------


def test_a_target_swept_by_another_replica_is_skipped_not_failed(config: Path) -> None:
    from datetime import timedelta

    store = Store.open(f"sqlite:///{config.parent / 'j.db'}")
    try:
        assert store.leases.acquire("target:notebooks", "other-host:42:abcd", timedelta(hours=1))
    finally:
        store.close()
    result = invoke("-c", str(config), "sweep", "-o", "json")
    assert result.exit_code == 1, "still exit 1: that target was not swept"
    summary = json.loads(result.stdout)
    assert summary["status"] == "skipped"
    assert summary["targets"][0]["lease_holder"] == "other-host:42:abcd"
    assert "target notebooks is being swept by other-host:42:abcd" in result.stderr
    assert "(failed)" not in result.stderr
