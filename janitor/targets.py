"""Target configuration: the keys every target has, and one model per provider (DESIGN 6).

The models live here, not in the provider modules, so a configuration is validated without
importing a provider or the optional extra it needs, and ``janitor.settings`` and
``janitor.providers`` both import this module instead of each other.

Every model follows the same rules:

1. Keys are flat (no nested tables) and unknown keys are errors.
2. A secret is a ``SecretStr`` or a ``*_file`` path; every ``*_file`` key except those in
   :data:`PLAIN_FILE_KEYS` names a secret file, whose content is scrubbed from Sentry events.
3. A ``*_file`` value expands ``~`` and, when relative, resolves against
   ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) when that is set.
4. A provider with several ways to authenticate has an ``auth`` key naming the scheme and flat
   keys for its parameters (:class:`AuthScheme`): the keys the scheme needs must be given, keys
   of another scheme must not be.
5. Error messages name the key and never echo a value that could be secret.

The request budget (``requests_per_second``) is a number (a fixed rate, the default) or
``"auto"``: an adaptive rate between ``min_requests_per_second`` and
``max_requests_per_second`` (:class:`AdaptiveRate`; the controller is
:class:`janitor.http.AimdRate`). The two bounds belong to ``"auto"`` and are refused with a
fixed rate.
"""

from __future__ import annotations

import configparser
import difflib
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from janitor.durations import Duration

TARGET_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: ``*_file`` keys that name a file holding no secret of its own (never read for scrubbing).
PLAIN_FILE_KEYS: frozenset[str] = frozenset({"oci_config_file"})
MAX_SECRET_FILE = 64 * 1024
_AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


def _check_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        # The value is not echoed: a URL may carry credentials.
        raise ValueError("expected an http:// or https:// URL")
    return value


#: An http(s) URL, kept as written (``base_url`` also gets a trailing slash).
Url = Annotated[str, AfterValidator(_check_url)]


def _check_workspaces(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("list at least one workspace")
    seen: set[str] = set()
    for workspace in value:
        if not workspace or "/" in workspace or workspace != workspace.strip():
            raise ValueError(f"{workspace!r} is not a workspace key (no '/', no blanks)")
        if workspace in seen:
            raise ValueError(f"workspace {workspace!r} is listed twice")
        seen.add(workspace)
    return value


#: Workspace keys or ids: non-empty, unique, no ``/`` (session ids are ``workspace/id``).
Workspaces = Annotated[list[str], AfterValidator(_check_workspaces)]


#: The request budget of a target without ``requests_per_second``, and where ``"auto"`` starts.
DEFAULT_RATE = 10.0
#: ``"auto"``'s bounds when ``min_requests_per_second`` / ``max_requests_per_second`` are not given.
DEFAULT_MIN_RATE = 1.0
DEFAULT_MAX_RATE = 100.0
AUTO = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveRate:
    """``requests_per_second = "auto"``: an AIMD request budget and its bounds (requests/s).

    Attributes:
        start: the rate before the provider has answered anything: ``DEFAULT_RATE`` brought
            within ``[floor, ceiling]``.
        floor: never below this (``min_requests_per_second``).
        ceiling: never above this (``max_requests_per_second``).
        increase: requests/s added per second of fully used budget (not a config key).
    """

    start: float
    floor: float
    ceiling: float
    increase: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.start <= self.ceiling or self.increase <= 0:
            raise ValueError(f"inconsistent adaptive rate {self!r}")

    def __str__(self) -> str:
        """``auto``, as configured."""
        return AUTO


def adaptive_rate(floor: float | None, ceiling: float | None) -> AdaptiveRate:
    """The ``"auto"`` budget for the configured bounds (None: the default bound).

    Raises:
        ValueError: the floor is above the ceiling.
    """
    top = DEFAULT_MAX_RATE if ceiling is None else ceiling
    bottom = min(DEFAULT_MIN_RATE, top) if floor is None else floor
    if bottom > top:
        raise ValueError(f"the floor {bottom:g} is above the ceiling {top:g}")
    return AdaptiveRate(start=min(max(DEFAULT_RATE, bottom), top), floor=bottom, ceiling=top)


def _parse_rate(value: Any, info: ValidationInfo) -> float | AdaptiveRate:
    """``requests_per_second``: a number above 0, or ``"auto"`` (bounds from the keys before)."""
    if isinstance(value, AdaptiveRate):
        return value
    if value == AUTO:
        try:
            return adaptive_rate(
                info.data.get("min_requests_per_second"), info.data.get("max_requests_per_second")
            )
        except ValueError:
            return AdaptiveRate(start=1.0, floor=1.0, ceiling=1.0)  # _check_rate_bounds says why
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        # ValueError, not TypeError: pydantic reports only ValueError as a validation error
        raise ValueError(f'expected a number of requests per second or "{AUTO}"')  # noqa: TRY004
    try:
        rate = float(value)
    except ValueError:
        raise ValueError(_not_a_rate(str(value))) from None
    if not rate > 0:  # also NaN
        raise ValueError(f'must be more than 0 requests per second, or "{AUTO}"')
    return rate


def _not_a_rate(text: str) -> str:
    message = f'{text!r} is not a rate: write a number of requests per second or "{AUTO}"'
    close = text.strip().lower() == AUTO or difflib.get_close_matches(
        text.lower(), [AUTO], n=1, cutoff=0.6
    )
    return message + (f' (did you mean "{AUTO}"?)' if close else "")


@dataclass(frozen=True, slots=True)
class AuthScheme:
    """The flat keys one value of ``auth`` needs (``required``) or accepts (``optional``)."""

    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        """Every key that belongs to this scheme."""
        return frozenset(self.required + self.optional)


class TargetConfig(BaseModel):
    """Keys every target has. Each provider's model adds its own (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``auth`` value -> its keys; empty for a provider without an ``auth`` key.
    auth_schemes: ClassVar[Mapping[str, AuthScheme]] = {}

    name: str = Field(pattern=TARGET_NAME_PATTERN)
    provider: str
    max_actions_per_sweep: int | None = Field(default=None, ge=0)
    max_actions_percent: float | None = Field(default=None, gt=0, le=100)
    #: ``"auto"``'s bounds; they come before ``requests_per_second``, whose validator reads them.
    min_requests_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_requests_per_second: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    requests_per_second: float | AdaptiveRate = DEFAULT_RATE
    max_concurrency: int = Field(default=4, ge=1, le=64)
    timeout: Duration = timedelta(seconds=30)
    skew_tolerance: Duration = timedelta(minutes=2)
    max_population_drop_percent: float = Field(default=50.0, gt=0, le=100)
    #: How long an asynchronous action may take to settle; None: the provider's default.
    settle_timeout: Duration | None = None

    @field_validator("settle_timeout")
    @classmethod
    def _check_settle_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("requests_per_second", mode="plain")
    @classmethod
    def _check_rate(cls, value: Any, info: ValidationInfo) -> float | AdaptiveRate:
        return _parse_rate(value, info)

    @field_serializer("requests_per_second")
    def _dump_rate(self, value: float | AdaptiveRate) -> float | str:
        return AUTO if isinstance(value, AdaptiveRate) else value

    @model_validator(mode="after")
    def _check_rate_bounds(self) -> TargetConfig:
        """The bounds belong to ``"auto"``, and the floor may not be above the ceiling."""
        errors: list[InitErrorDetails] = []
        low, high = self.min_requests_per_second, self.max_requests_per_second
        if isinstance(self.requests_per_second, AdaptiveRate):
            if low is not None and high is not None and low > high:
                message = f"is below min_requests_per_second ({low:g})"
                errors.append(_key_error("max_requests_per_second", "rate_bounds", message))
            elif low is not None and high is None and low > DEFAULT_MAX_RATE:
                message = (
                    f"is above the default max_requests_per_second ({DEFAULT_MAX_RATE:g}): "
                    "set that too"
                )
                errors.append(_key_error("min_requests_per_second", "rate_bounds", message))
        else:
            fixed = "a fixed" if "requests_per_second" in self.model_fields_set else "the default"
            errors += [
                _key_error(
                    key,
                    "rate_bound_without_auto",
                    f'applies only with requests_per_second = "{AUTO}" (here the rate is '
                    f"{fixed} {self.requests_per_second:g}): remove it, or make the rate adaptive",
                )
                for key in ("min_requests_per_second", "max_requests_per_second")
                if getattr(self, key) is not None
            ]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    @model_validator(mode="before")
    @classmethod
    def _resolve_files(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return resolve_file_keys(data, os.environ.get("CREDENTIALS_DIRECTORY"))
        return data

    @model_validator(mode="after")
    def _check_auth(self) -> TargetConfig:
        schemes = type(self).auth_schemes
        if not schemes:
            return self
        auth = str(getattr(self, "auth"))  # noqa: B009 - declared by every model with schemes
        mine = schemes[auth]
        errors: list[InitErrorDetails] = [
            _key_error(key, "auth_key_missing", f'required with auth = "{auth}"')
            for key in mine.required
            if getattr(self, key) is None
        ]
        for key in sorted(self.model_fields_set - mine.keys):
            owners = [name for name, scheme in schemes.items() if key in scheme.keys]
            if owners:
                where = " or ".join(f'"{name}"' for name in owners)
                errors.append(
                    _key_error(key, "auth_key_foreign", f'belongs to auth = {where}, not "{auth}"')
                )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def secret_values(self) -> list[str]:
        """Every secret this target holds or names: inline secrets and secret files' contents.

        Files are read now (for scrubbing Sentry events); an unreadable file adds nothing.
        """
        values: list[str] = []
        for key in type(self).model_fields:
            value = getattr(self, key)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
            elif key.endswith("_file") and key not in PLAIN_FILE_KEYS and value is not None:
                values += read_secret_file(Path(value))
        return values


def _key_error(key: str, kind: str, message: str) -> InitErrorDetails:
    return {"type": PydanticCustomError(kind, message), "loc": (key,), "input": None}


class HttpTargetConfig(TargetConfig):
    """A target reached over HTTP(S) at ``base_url`` (loopback http is fine for tests)."""

    base_url: str

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        value = _check_url(value)
        return value if value.endswith("/") else value + "/"


class JupyterConfig(HttpTargetConfig):
    """``jupyter``: ``base_url`` plus ``token`` or ``token_file`` (or neither, for no auth)."""

    token: SecretStr | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token(self) -> JupyterConfig:
        if self.token is not None and self.token_file is not None:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [_key_error("token_file", "token_twice", "give token or token_file, not both")],
            )
        return self


def _default_oci_config() -> Path:
    try:
        return Path("~/.oci/config").expanduser()
    except RuntimeError:  # no home directory: the OCI SDK will say so when it reads the file
        return Path("~/.oci/config")


_OCI_CONFIG = AuthScheme(optional=("oci_config_file", "oci_profile"))


class AidpConfig(HttpTargetConfig):
    """``aidp``: Oracle AI Data Platform workspaces, authenticated like the OCI SDK.

    ``api_key`` (default) and ``security_token`` read the profile ``oci_profile`` of the OCI
    config file ``oci_config_file`` (with ``security_token``, the profile names the
    ``security_token_file``); ``instance_principal`` and ``resource_principal`` take no keys.
    """

    auth_schemes: ClassVar[Mapping[str, AuthScheme]] = {
        "api_key": _OCI_CONFIG,
        "security_token": _OCI_CONFIG,
        "instance_principal": AuthScheme(),
        "resource_principal": AuthScheme(),
    }

    ai_data_platform_id: str = Field(min_length=1)
    workspaces: Workspaces
    auth: Literal["api_key", "security_token", "instance_principal", "resource_principal"] = (
        "api_key"
    )
    oci_config_file: Path = Field(default_factory=_default_oci_config)
    oci_profile: str = Field(default="DEFAULT", min_length=1)

    def secret_values(self) -> list[str]:
        """Also the secrets the OCI profile names: pass phrase, private key, session token."""
        values = super().secret_values()
        if self.auth in ("api_key", "security_token"):
            values += oci_profile_secrets(self.oci_config_file, self.oci_profile)
        return values


class GlueConfig(TargetConfig):
    """``glue``: AWS Glue interactive sessions; credentials from botocore's default chain."""

    region: str
    endpoint_url: Url | None = None
    profile: str | None = Field(default=None, min_length=1)
    #: For tag ARNs; read once with STS GetCallerIdentity when not given.
    account_id: str | None = None

    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not _AWS_REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region (e.g. eu-west-1)")
        return value

    @field_validator("account_id", mode="before")
    @classmethod
    def _check_account(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # ValueError, not TypeError: pydantic reports only ValueError as a validation error
            raise ValueError(  # noqa: TRY004
                'write the account id as a string, e.g. "012345678901" (it may start with 0)'
            )
        if isinstance(value, str) and not re.fullmatch(r"\d{12}", value):
            raise ValueError("expected the 12 digits of an AWS account id")
        return value

    def secret_values(self) -> list[str]:
        """The secrets botocore's chain would read: the environment's and the profile's."""
        return super().secret_values() + aws_secrets(self.profile, os.environ)


class FabricSqlConfig(HttpTargetConfig):
    """``fabric_sql``: Huawei Cloud DataArts Fabric SQL sessions in ``workspaces`` (ids).

    ``auth = "token"``: an IAM token in ``token_file`` (re-read when it changes);
    ``"aksk"``: request signing with ``access_key``, ``secret_key_file``, ``project_id`` and
    optionally ``security_token_file`` (temporary credentials); ``"password"``: a token
    fetched from IAM at ``iam_url`` with ``domain``, ``username``, ``password_file`` and
    ``project_id``. ``timestamp_zone`` (an IANA zone, no default) says how to read timestamps
    sent without an offset; without it they are unknown.
    """

    auth_schemes: ClassVar[Mapping[str, AuthScheme]] = {
        "token": AuthScheme(required=("token_file",)),
        "aksk": AuthScheme(
            required=("access_key", "secret_key_file", "project_id"),
            optional=("security_token_file",),
        ),
        "password": AuthScheme(
            required=("iam_url", "domain", "username", "password_file", "project_id")
        ),
    }

    workspaces: Workspaces
    auth: Literal["token", "aksk", "password"]
    token_file: Path | None = None
    access_key: str | None = Field(default=None, min_length=1)
    secret_key_file: Path | None = None
    security_token_file: Path | None = None
    project_id: str | None = Field(default=None, min_length=1)
    iam_url: Url | None = None
    domain: str | None = Field(default=None, min_length=1)
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    timestamp_zone: str | None = None

    @field_validator("timestamp_zone")
    @classmethod
    def _check_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"{value!r} is not a known IANA time zone (e.g. Asia/Shanghai)"
            ) from None
        return value


class EssConfig(HttpTargetConfig):
    """``ess``: Oracle Fusion Enterprise Scheduler requests.

    ``auth = "basic"``: ``username`` and ``password_file``; ``"oauth2"``: client credentials
    from ``token_url`` with ``client_id``, ``client_secret_file`` and ``scope``.
    """

    auth_schemes: ClassVar[Mapping[str, AuthScheme]] = {
        "basic": AuthScheme(required=("username", "password_file")),
        "oauth2": AuthScheme(required=("token_url", "client_id", "client_secret_file", "scope")),
    }

    auth: Literal["basic", "oauth2"]
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    token_url: Url | None = None
    client_id: str | None = Field(default=None, min_length=1)
    client_secret_file: Path | None = None
    scope: str | None = Field(default=None, min_length=1)


def resolve_file_keys(raw: Mapping[str, Any], credentials_dir: str | None) -> dict[str, Any]:
    """Every ``*_file`` value, at any depth: ``~`` expanded, then relative ones resolved
    against ``credentials_dir`` when it is set."""
    resolved: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, Mapping):
            value = resolve_file_keys(value, credentials_dir)
        elif isinstance(key, str) and key.endswith("_file") and isinstance(value, str | Path):
            value = _resolve_file(str(value), credentials_dir)
        resolved[key] = value
    return resolved


def _resolve_file(value: str, credentials_dir: str | None) -> str:
    if value.startswith("~"):
        try:
            value = os.path.expanduser(value)
        except RuntimeError:  # no home directory: left as written, and reading it will fail
            return value
    if credentials_dir and value and not os.path.isabs(value):
        return os.path.join(credentials_dir, value)
    return value


def read_secret_file(path: Path) -> list[str]:
    """The secret in ``path`` (stripped), plus each line of a multi-line secret such as a PEM key.

    Nothing when the file cannot be read, is larger than 64 KiB or is not text.
    """
    try:
        if path.stat().st_size > MAX_SECRET_FILE:
            return []
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return []
    lines = [line.strip() for line in text.splitlines()]
    extra = [line for line in lines if len(lines) > 1 and line and not line.startswith("-----")]
    return [text, *extra] if text else []


def oci_profile_secrets(config_file: Path, profile: str) -> list[str]:
    """The secrets an OCI config profile names: ``pass_phrase`` and the contents of its
    ``key_file`` and ``security_token_file`` (the file itself holds ids and paths, not secrets).
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with config_file.open(encoding="utf-8") as handle:
            parser.read_file(handle)
        section = parser.defaults() if profile == "DEFAULT" else parser[profile]
    except (OSError, UnicodeDecodeError, configparser.Error, KeyError):
        return []
    values = [section["pass_phrase"]] if section.get("pass_phrase") else []
    for key in ("key_file", "security_token_file"):
        if named := section.get(key):
            values += read_secret_file(Path(named).expanduser())
    return values


#: Environment variables that hold AWS secrets, and those that name a file holding one.
AWS_SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)
AWS_SECRET_FILE_VARIABLES = (
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)


def aws_secrets(profile: str | None, environ: Mapping[str, str]) -> list[str]:
    """The AWS secrets botocore's credential chain would read at start: the secret variables,
    the token files the environment names, and the secret keys and session token of
    ``profile`` (else ``AWS_PROFILE``, else ``default``) in the shared credentials and config
    files. Temporary credentials botocore fetches later (SSO, STS, metadata) are never
    written anywhere janitor reports from.
    """
    values = [environ[name] for name in AWS_SECRET_VARIABLES if environ.get(name)]
    for name in AWS_SECRET_FILE_VARIABLES:
        if named := environ.get(name):
            values += read_secret_file(Path(named).expanduser())
    wanted = profile or environ.get("AWS_PROFILE") or "default"
    files = (
        (environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", wanted),
        (
            environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
            wanted if wanted == "default" else f"profile {wanted}",
        ),
    )
    for file, section in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with Path(file).expanduser().open(encoding="utf-8") as handle:
                parser.read_file(handle)
            found = parser[section]
        except (OSError, RuntimeError, UnicodeDecodeError, configparser.Error, KeyError):
            continue
        values += [
            found[key]
            for key in ("aws_secret_access_key", "aws_session_token", "aws_security_token")
            if found.get(key)
        ]
    return values
