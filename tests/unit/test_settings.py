"""Settings: TOML plus JANITOR_* environment; errors name the file and the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from janitor.errors import ConfigError
from janitor.settings import default_database_url, load_config
from tests.conftest import invoke, write_config

JUPYTER = """
[[targets]]
name = "notebooks"
provider = "jupyter"
base_url = "http://127.0.0.1:8888/prefix"
token = "s3cret-token"
"""


def test_toml_and_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path / "j.toml", 'sweep_interval = "90s"\n' + JUPYTER)
    assert config.settings.sweep_interval == timedelta(seconds=90)
    assert config.settings.effective_sweep_timeout == timedelta(seconds=180)
    assert config.settings.listen == "127.0.0.1:9465"
    target = config.target("notebooks")
    assert target.provider == "jupyter"
    assert target.base_url == "http://127.0.0.1:8888/prefix/"  # type: ignore[attr-defined]
    assert "s3cret" not in repr(target)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JANITOR_SWEEP_INTERVAL", "2m")
    monkeypatch.setenv("JANITOR_SENTRY__ENVIRONMENT", "staging")
    config = write_config(tmp_path / "j.toml", 'sweep_interval = "90s"\n' + JUPYTER)
    assert config.settings.sweep_interval == timedelta(minutes=2)
    assert config.settings.sentry.environment == "staging"


def test_config_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.toml"
    path.write_text('sweep_jitter = "5s"\n')
    monkeypatch.setenv("JANITOR_CONFIG", str(path))
    assert load_config().settings.sweep_jitter == timedelta(seconds=5)


def test_systemd_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "janitor_database_url").write_text("sqlite:////var/lib/janitor/x.db\n")
    (creds / "jupyter-token").write_text("tok\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = write_config(
        tmp_path / "j.toml",
        JUPYTER.replace('token = "s3cret-token"', 'token_file = "jupyter-token"'),
    )
    assert config.settings.database_url == SecretStr("sqlite:////var/lib/janitor/x.db")
    assert str(config.target("notebooks").token_file) == str(  # type: ignore[attr-defined]
        creds / "jupyter-token"
    )


def test_default_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/janitor")
    assert default_database_url() == "sqlite:////var/lib/janitor/janitor.db"
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_database_url() == f"sqlite:///{tmp_path}/janitor/janitor.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('sweep_interval = "soon"\n', "key sweep_interval: invalid duration 'soon'"),
        ('colour = "blue"\n', "key colour: unknown key"),
        ('listen = "9465"\n', "key listen: expected HOST:PORT"),
        (
            '[[targets]]\nname = "x"\nprovider = "nope"\n',
            (
                "key targets[0] (name='x').provider: unknown provider 'nope'; "
                "known providers: aidp, ess, fabric_sql, glue, jupyter"
            ),
        ),
        ('[[targets]]\nname = "x"\n', "key targets[0] (name='x').provider is required"),
        (
            '[[targets]]\nname = "x"\nprovider = "jupyter"\n',
            "key targets[0] (name='x').base_url: Field required",
        ),
        (
            '[[targets]]\nname = "x"\nprovider = "jupyter"\nbase_url = "ftp://h/"\n',
            "key targets[0] (name='x').base_url: expected an http:// or https:// URL",
        ),
        (
            '[[targets]]\nname = "x"\nprovider = "jupyter"\nbase_url = "http://h/"\nregion = "eu"\n',
            "key targets[0] (name='x').region: unknown key",
        ),
        ("sweep_interval = \n", "is not valid TOML"),
        (JUPYTER + JUPYTER, "the name 'notebooks' is used twice"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    with pytest.raises(ConfigError) as info:
        write_config(path, text)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_secret_values_never_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    with pytest.raises(ConfigError) as info:
        write_config(
            path,
            JUPYTER.replace(
                'base_url = "http://127.0.0.1:8888/prefix"', 'base_url = "s3cret-in-url"'
            ),
        )
    assert "s3cret-in-url" not in str(info.value)


def test_cli_exit_2_for_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('sweep_interval = "soon"\n')
    result = invoke("-c", str(path), "policy", "list")
    assert result.exit_code == 2
    assert f"janitor: error: {path}: key sweep_interval: invalid duration 'soon'" in result.stderr


def test_cli_exit_2_for_missing_config(tmp_path: Path) -> None:
    result = invoke("-c", str(tmp_path / "nope.toml"), "policy", "list")
    assert result.exit_code == 2
    assert "nope.toml does not exist" in result.stderr
