"""Settings: a TOML file plus ``JANITOR_*`` environment variables (``__`` nests).

Precedence, highest first: environment, secret files in ``$CREDENTIALS_DIRECTORY`` (systemd
``LoadCredential=``, named like ``janitor_database_url``), the TOML file, defaults. Targets
come only from the TOML file; each is validated by its provider's model in
:mod:`janitor.targets` (chosen through the registry in :mod:`janitor.providers`, without
importing the provider), and a provider whose optional extra is not installed is an error.
Every failure is a :class:`~janitor.errors.ConfigError` whose message names the file and the key.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from janitor.durations import Duration, format_duration
from janitor.errors import ConfigError, UnknownProvider
from janitor.providers import config_model, require_extra
from janitor.targets import TargetConfig

DEFAULT_CONFIG = Path("/etc/janitor/janitor.toml")


class NotifyConfig(BaseModel):
    """The generic warning channel: a JSON POST to a webhook."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretStr | None = None
    webhook_headers: dict[str, SecretStr] = Field(default_factory=dict)
    webhook_timeout: Duration = timedelta(seconds=10)
    webhook_attempts: int = Field(default=3, ge=1, le=10)


class SentryConfig(BaseModel):
    """Optional Sentry reporting; off unless a DSN is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: SecretStr | None = None
    environment: str = "production"
    monitor_slug: str = "janitor-sweep"


class Settings(BaseSettings):
    """Everything janitor reads at start-up (DESIGN 2.2 and 5)."""

    model_config = SettingsConfigDict(
        env_prefix="JANITOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    database_url: SecretStr | None = None
    auto_upgrade: bool | None = None
    sweep_interval: Duration = timedelta(minutes=5)
    sweep_jitter: Duration = timedelta(seconds=20)
    sweep_timeout: Duration | None = None
    dry_run: bool = False
    listen: str = "127.0.0.1:9465"
    lease_ttl: Duration = timedelta(minutes=2)
    failing_target_after: Duration = timedelta(minutes=15)
    shutdown_grace: Duration = timedelta(seconds=5)
    #: How long the session history log (``janitor backtest``'s input) keeps superseded records.
    history_retention: Duration = timedelta(days=30)
    #: Audit rows older than this are pruned by the daemon (``audit prune``); off by default.
    audit_retention: Duration | None = None
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    notify: NotifyConfig = NotifyConfig()
    sentry: SentryConfig = SentryConfig()
    targets: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("history_retention", "audit_retention")
    @classmethod
    def _at_least_a_day(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(days=1):
            raise ValueError("must be at least 1d")
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then systemd credentials, then the TOML file (passed as init)."""
        sources: list[PydanticBaseSettingsSource] = [env_settings]
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if creds:
            sources.append(
                NestedSecretsSettingsSource(
                    file_secret_settings, secrets_dir=creds, secrets_dir_missing="ok"
                )
            )
        sources.append(init_settings)
        return tuple(sources)

    @property
    def effective_sweep_timeout(self) -> timedelta:
        """The configured sweep timeout, or twice the interval."""
        return self.sweep_timeout or 2 * self.sweep_interval


class Config:
    """Validated settings plus the provider-specific target configurations."""

    def __init__(
        self,
        settings: Settings,
        targets: tuple[TargetConfig, ...],
        source: str,
        *,
        warnings: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.targets = targets
        self.source = source
        self.warnings = warnings or []  # things that work but are probably not meant

    def target(self, name: str) -> TargetConfig:
        """The target called ``name``; ConfigError naming the known ones otherwise."""
        for target in self.targets:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.targets) or "none configured"
        raise ConfigError(f"{self.source}: no target named {name!r} (targets: {known})")


def resolve_config_path(explicit: str | None) -> tuple[Path | None, bool]:
    """The config file to read and whether the user named it (a named file must exist)."""
    named = explicit or os.environ.get("JANITOR_CONFIG")
    if named:
        return Path(named), True
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG, False
    return None, False


def load_config(explicit: str | None = None) -> Config:
    """Read and validate the configuration.

    Raises:
        ConfigError: the named file is missing or unreadable, TOML is invalid, a key is
            unknown or has a bad value, or a target names an unknown provider.
    """
    path, named = resolve_config_path(explicit)
    source = str(path) if path else "environment"
    data = _read_toml(path, named) if path else {}
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(source, exc, model=Settings, origins=True)
        ) from None
    targets = tuple(
        _validate_target(source, index, raw) for index, raw in enumerate(settings.targets)
    )
    _check_unique_names(source, targets)
    warnings = unknown_env_names(os.environ)
    if settings.sweep_jitter > settings.sweep_interval:
        warnings.append(
            f"{source}: sweep_jitter ({format_duration(settings.sweep_jitter)}) is longer than "
            f"sweep_interval ({format_duration(settings.sweep_interval)}): sweeps may run at "
            "very uneven times"
        )
    return Config(settings, targets, source, warnings=warnings)


def _read_toml(path: Path, named: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _validate_target(source: str, index: int, raw: dict[str, Any]) -> TargetConfig:
    where = f"targets[{index}]"
    if "name" in raw:
        where += f" (name={raw['name']!r})"
    provider = raw.get("provider")
    if not isinstance(provider, str):
        raise ConfigError(f"{source}: key {where}.provider is required")
    try:
        model = config_model(provider)
    except UnknownProvider as exc:
        raise ConfigError(f"{source}: key {where}.provider: {exc}") from None
    try:
        target = model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, prefix=where, model=model)) from None
    try:
        require_extra(provider, target=target.name)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return target


def _check_unique_names(source: str, targets: tuple[TargetConfig, ...]) -> None:
    seen: set[str] = set()
    for target in targets:
        if target.name in seen:
            raise ConfigError(f"{source}: key targets: the name {target.name!r} is used twice")
        seen.add(target.name)


def format_validation_error(
    source: str,
    exc: ValidationError,
    prefix: str = "",
    *,
    model: type[BaseModel] | None = None,
    origins: bool = False,
) -> str:
    """One line per problem: ``SOURCE: key a.b: message``, never echoing secret values.

    ``model`` is what was validated: an unknown key gets "did you mean ...?" from its keys.
    With ``origins`` (the top-level settings), a value that came from an environment variable
    or a credentials file names that source instead of the TOML file.
    """
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(item) for item in error["loc"] if not isinstance(item, int)]
        parts = [prefix] if prefix else []
        for item in error["loc"]:
            if isinstance(item, int):
                parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
            else:
                parts.append(str(item))
        key = ".".join(parts) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _suggest(loc, model)
        where = _origin(loc) if origins else None
        lines.append(f"{where or source}: key {key}: {message}")
    return "\n".join(lines)


def _suggest(loc: list[str], model: type[BaseModel] | None) -> str:
    """`` (did you mean 'sweep_interval'?)`` for an unknown key, from the model's keys."""
    for part in loc[:-1]:  # walk down nested models (notify.webhook_urll)
        field = model.model_fields.get(part) if model is not None else None
        annotation = field.annotation if field is not None else None
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    if model is None or not loc:
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _origin(loc: list[str]) -> str | None:
    """Where a setting's value came from when not the TOML file: its environment variable or
    credentials file (which win over the file), else None."""
    if not loc:
        return None
    for depth in range(len(loc), 0, -1):
        name = "JANITOR_" + "__".join(loc[:depth]).upper()
        if name in os.environ:
            return f"environment variable {name}"
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        for depth in range(len(loc), 0, -1):
            path = Path(creds) / ("janitor_" + "__".join(loc[:depth]))
            if path.exists():
                return f"credentials file {path}"
    return None


#: ``JANITOR_*`` variables that are not settings: the config file's name, and those the test
#: suite and benchmarks read (``JANITOR_TEST_*``, ``JANITOR_BENCH_*``).
RESERVED_ENV = ("JANITOR_CONFIG", "JANITOR_REQUIRE_POSTGRES", "JANITOR_TEST_", "JANITOR_BENCH_")


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``JANITOR_*`` variables that name no setting (a typo is otherwise ignored silently)."""
    known = {f"JANITOR_{name.upper()}" for name in Settings.model_fields}
    unknown = []
    for name in sorted(environ):
        if not name.startswith("JANITOR_") or name.startswith(RESERVED_ENV):
            continue
        if name.split("__", 1)[0] in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
        hint = f" (did you mean {close[0]}?)" if close else ""
        unknown.append(f"environment variable {name} is not a janitor setting; ignored{hint}")
    return unknown


def default_database_url() -> str:
    """``$STATE_DIRECTORY/janitor.db`` under systemd, else the user's state directory."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        base = Path(state_dir.split(":")[0])
    else:
        xdg = os.environ.get("XDG_STATE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "state") / "janitor"
    return f"sqlite:///{base / 'janitor.db'}"
