"""Target keys of every provider (DESIGN 6 "Stable target keys"), as an operator writes them.

Configurations are loaded from TOML files with ``load_config``, like the CLI does, and the
assertions are on the loaded values and on the error text an operator reads. The provider
modules for aidp, ess, glue and fabric_sql need not exist: their targets validate from the
models in ``janitor.targets`` alone.

Optional extras: ``janitor.providers.EXTRAS`` maps an extra to the module whose presence
proves it is installed. The ``extras`` fixture points every extra at ``json`` (always
installed) so a valid aidp or glue target loads whether or not ``oci``/``botocore`` are in
this environment; the missing-extra tests point it at a module name that does not exist.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from janitor import providers
from janitor.errors import ConfigError
from janitor.observability import sentry
from janitor.settings import Config
from janitor.targets import (
    AidpConfig,
    EssConfig,
    FabricSqlConfig,
    GlueConfig,
    JupyterConfig,
    TargetConfig,
)
from tests.conftest import invoke, write_config

ABSENT_MODULE = "janitor_tests_module_that_is_not_installed"


@pytest.fixture
def extras(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every optional extra counts as installed."""
    for extra in providers.EXTRAS:
        monkeypatch.setitem(providers.EXTRAS, extra, "json")  # type: ignore[index]


@pytest.fixture(autouse=True)
def no_credentials_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def toml(targets: list[dict[str, Any]]) -> str:
    """``[[targets]]`` tables (strings, numbers and lists of strings are enough here)."""
    out = []
    for target in targets:
        out.append("[[targets]]")
        out += [f"{key} = {json.dumps(value)}" for key, value in target.items()]
    return "\n".join(out) + "\n"


def load(tmp_path: Path, *targets: dict[str, Any]) -> Config:
    return write_config(tmp_path / "janitor.toml", toml(list(targets)))


def error(tmp_path: Path, *targets: dict[str, Any]) -> str:
    path = tmp_path / "janitor.toml"
    with pytest.raises(ConfigError) as info:
        write_config(path, toml(list(targets)))
    message = str(info.value)
    assert message.startswith(f"{path}: "), "the file is named"
    return message


def jupyter(**keys: Any) -> dict[str, Any]:
    return {"name": "nb", "provider": "jupyter", "base_url": "http://127.0.0.1:8888/", **keys}


def aidp(**keys: Any) -> dict[str, Any]:
    return {
        "name": "aidp-prod",
        "provider": "aidp",
        "base_url": "https://aidp.eu-frankfurt-1.oci.oraclecloud.com",
        "ai_data_platform_id": "ocid1.aidataplatform.oc1..aaaa",
        "workspaces": ["analytics", "ml"],
        **keys,
    }


def glue(**keys: Any) -> dict[str, Any]:
    return {"name": "glue-eu", "provider": "glue", "region": "eu-west-1", **keys}


def fabric(auth: str = "token", **keys: Any) -> dict[str, Any]:
    base = {
        "name": "fabric",
        "provider": "fabric_sql",
        "base_url": "https://dataarts-fabric.cn-north-4.myhuaweicloud.com",
        "workspaces": ["ws-1"],
        "auth": auth,
    }
    by_scheme: dict[str, dict[str, Any]] = {
        "token": {"token_file": "/run/creds/iam-token"},
        "aksk": {
            "access_key": "AKAKAKAK",
            "secret_key_file": "/run/creds/sk",
            "project_id": "p-1",
        },
        "password": {
            "iam_url": "https://iam.cn-north-4.myhuaweicloud.com",
            "domain": "acme",
            "username": "janitor",
            "password_file": "/run/creds/password",
            "project_id": "p-1",
        },
    }
    return {**base, **by_scheme.get(auth, {}), **keys}


def ess(auth: str = "basic", **keys: Any) -> dict[str, Any]:
    base = {
        "name": "ess",
        "provider": "ess",
        "base_url": "https://fa.example.oraclecloud.com",
        "auth": auth,
    }
    by_scheme: dict[str, dict[str, Any]] = {
        "basic": {"username": "janitor", "password_file": "/run/creds/ess-password"},
        "oauth2": {
            "token_url": "https://idcs.example.com/oauth2/v1/token",
            "client_id": "janitor-client",
            "client_secret_file": "/run/creds/ess-secret",
            "scope": "urn:opc:resource:fa:instanceid=x",
        },
    }
    return {**base, **by_scheme.get(auth, {}), **keys}


def without(raw: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != key}


# --- valid targets -------------------------------------------------------------------------


def test_a_valid_target_of_every_provider_loads_without_its_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extras: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for module in ("aidp", "ess", "glue", "fabric_sql"):  # imported by other tests' fakes
        monkeypatch.delitem(sys.modules, f"janitor.providers.{module}", raising=False)
    config = load(
        tmp_path,
        jupyter(token_file="/run/creds/jupyter-token", settle_timeout="10m"),
        aidp(),
        glue(endpoint_url="http://127.0.0.1:5000", profile="janitor", account_id="012345678901"),
        fabric("aksk", security_token_file="/run/creds/st", timestamp_zone="Asia/Shanghai"),
        ess("oauth2", name="ess-oauth"),
    )
    nb, ai, gl, fa, es = config.targets
    assert isinstance(nb, JupyterConfig)
    assert nb.token_file == Path("/run/creds/jupyter-token")
    assert nb.settle_timeout == timedelta(minutes=10)
    assert isinstance(ai, AidpConfig)
    assert ai.base_url == "https://aidp.eu-frankfurt-1.oci.oraclecloud.com/"
    assert ai.workspaces == ["analytics", "ml"]
    assert ai.settle_timeout is None, "no key: the provider's default applies"
    assert (ai.auth, ai.oci_profile) == ("api_key", "DEFAULT")
    assert ai.oci_config_file == tmp_path / "home" / ".oci" / "config"
    assert isinstance(gl, GlueConfig)
    assert (gl.region, gl.endpoint_url, gl.profile) == (
        "eu-west-1",
        "http://127.0.0.1:5000",
        "janitor",
    )
    assert gl.account_id == "012345678901"
    assert isinstance(fa, FabricSqlConfig)
    assert (fa.auth, fa.access_key, fa.project_id) == ("aksk", "AKAKAKAK", "p-1")
    assert fa.secret_key_file == Path("/run/creds/sk")
    assert fa.security_token_file == Path("/run/creds/st")
    assert fa.timestamp_zone == "Asia/Shanghai"
    assert fa.token_file is None
    assert isinstance(es, EssConfig)
    assert (es.auth, es.client_id, es.scope) == (
        "oauth2",
        "janitor-client",
        "urn:opc:resource:fa:instanceid=x",
    )
    assert es.token_url == "https://idcs.example.com/oauth2/v1/token", "a token URL is kept as is"
    assert es.client_secret_file == Path("/run/creds/ess-secret")
    for module in ("aidp", "ess", "glue", "fabric_sql"):
        assert f"janitor.providers.{module}" not in sys.modules


@pytest.mark.parametrize(
    "target",
    [
        jupyter(),
        jupyter(token="inline-token"),
        aidp(auth="security_token", oci_config_file="/etc/janitor/oci", oci_profile="session"),
        aidp(auth="instance_principal"),
        aidp(auth="resource_principal"),
        glue(),
        fabric("token"),
        fabric("password"),
        ess("basic"),
    ],
    ids=lambda t: f"{t['provider']}-{t.get('auth', '')}",
)
def test_each_scheme_loads_with_its_own_keys(
    tmp_path: Path, extras: None, target: dict[str, Any]
) -> None:
    (loaded,) = load(tmp_path, target).targets
    for key, value in target.items():
        got = getattr(loaded, key)
        if isinstance(got, SecretStr):
            got = got.get_secret_value()
        assert str(got).rstrip("/") == str(value).rstrip("/"), key


# --- invalid targets: the message names the file, the target and the key --------------------


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            without(aidp(), "ai_data_platform_id"),
            "key targets[0] (name='aidp-prod').ai_data_platform_id: Field required",
        ),
        (
            without(aidp(), "workspaces"),
            "key targets[0] (name='aidp-prod').workspaces: Field required",
        ),
        (
            aidp(workspaces=[]),
            "key targets[0] (name='aidp-prod').workspaces: list at least one workspace",
        ),
        (
            aidp(workspaces=["ml", "ml"]),
            "key targets[0] (name='aidp-prod').workspaces: workspace 'ml' is listed twice",
        ),
        (
            aidp(workspaces=["a/b"]),
            "key targets[0] (name='aidp-prod').workspaces: 'a/b' is not a workspace key",
        ),
        (
            aidp(auth="password"),
            (
                "key targets[0] (name='aidp-prod').auth: Input should be 'api_key', "
                "'security_token', 'instance_principal' or 'resource_principal'"
            ),
        ),
        (without(glue(), "region"), "key targets[0] (name='glue-eu').region: Field required"),
        (
            glue(region="Europe"),
            "key targets[0] (name='glue-eu').region: 'Europe' is not an AWS region",
        ),
        (
            glue(account_id="1234"),
            "key targets[0] (name='glue-eu').account_id: expected the 12 digits",
        ),
        (
            glue(account_id=12345678901),
            "key targets[0] (name='glue-eu').account_id: write the account id as a string",
        ),
        (
            glue(endpoint_url="127.0.0.1:5000"),
            "key targets[0] (name='glue-eu').endpoint_url: expected an http:// or https:// URL",
        ),
        (without(fabric(), "auth"), "key targets[0] (name='fabric').auth: Field required"),
        (
            without(fabric(), "token_file"),
            "key targets[0] (name='fabric').token_file: required with auth = \"token\"",
        ),
        (
            without(fabric("aksk"), "secret_key_file"),
            "key targets[0] (name='fabric').secret_key_file: required with auth = \"aksk\"",
        ),
        (
            without(fabric("password"), "iam_url"),
            "key targets[0] (name='fabric').iam_url: required with auth = \"password\"",
        ),
        (
            fabric(timestamp_zone="Mars/Olympus"),
            (
                "key targets[0] (name='fabric').timestamp_zone: 'Mars/Olympus' is not a known IANA "
                "time zone"
            ),
        ),
        (
            fabric(workspaces=[]),
            "key targets[0] (name='fabric').workspaces: list at least one workspace",
        ),
        (without(ess(), "auth"), "key targets[0] (name='ess').auth: Field required"),
        (
            without(ess("oauth2"), "scope"),
            "key targets[0] (name='ess').scope: required with auth = \"oauth2\"",
        ),
        (
            without(ess("basic"), "password_file"),
            "key targets[0] (name='ess').password_file: required with auth = \"basic\"",
        ),
        (
            ess(base_url="fa.example.com"),
            "key targets[0] (name='ess').base_url: expected an http:// or https:// URL",
        ),
        (
            jupyter(token="t0ken", token_file="/run/creds/t"),
            "key targets[0] (name='nb').token_file: give token or token_file, not both",
        ),
        (
            jupyter(settle_timeout="0s"),
            "key targets[0] (name='nb').settle_timeout: must be longer than 0s",
        ),
    ],
)
def test_missing_or_bad_keys_are_named(
    tmp_path: Path, extras: None, target: dict[str, Any], message: str
) -> None:
    assert message in error(tmp_path, target)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            fabric("token", secret_key_file="/run/creds/sk"),
            (
                "key targets[0] (name='fabric').secret_key_file: "
                'belongs to auth = "aksk", not "token"'
            ),
        ),
        (
            fabric("aksk", password_file="/run/creds/pw"),
            (
                "key targets[0] (name='fabric').password_file: "
                'belongs to auth = "password", not "aksk"'
            ),
        ),
        (
            fabric("token", project_id="p-1"),
            (
                "key targets[0] (name='fabric').project_id: "
                'belongs to auth = "aksk" or "password", not "token"'
            ),
        ),
        (
            fabric("password", security_token_file="/run/creds/st"),
            (
                "key targets[0] (name='fabric').security_token_file: "
                'belongs to auth = "aksk", not "password"'
            ),
        ),
        (
            aidp(auth="instance_principal", oci_profile="DEFAULT"),
            (
                "key targets[0] (name='aidp-prod').oci_profile: "
                'belongs to auth = "api_key" or "security_token", not "instance_principal"'
            ),
        ),
        (
            aidp(auth="resource_principal", oci_config_file="/etc/oci"),
            (
                "key targets[0] (name='aidp-prod').oci_config_file: "
                'belongs to auth = "api_key" or "security_token", not "resource_principal"'
            ),
        ),
        (
            ess("basic", client_id="c"),
            'key targets[0] (name=\'ess\').client_id: belongs to auth = "oauth2", not "basic"',
        ),
        (
            ess("oauth2", username="u"),
            'key targets[0] (name=\'ess\').username: belongs to auth = "basic", not "oauth2"',
        ),
    ],
)
def test_a_key_of_another_auth_scheme_is_refused(
    tmp_path: Path, extras: None, target: dict[str, Any], message: str
) -> None:
    assert message in error(tmp_path, target)


def test_every_problem_of_a_target_is_listed(tmp_path: Path, extras: None) -> None:
    message = error(tmp_path, without(fabric("aksk", token_file="/t", username="u"), "project_id"))
    assert message.splitlines() == [
        f"{tmp_path / 'janitor.toml'}: key targets[0] (name='fabric').{line}"
        for line in [
            'project_id: required with auth = "aksk"',
            'token_file: belongs to auth = "token", not "aksk"',
            'username: belongs to auth = "password", not "aksk"',
        ]
    ]


@pytest.mark.parametrize(
    ("target", "key"),
    [
        (jupyter(region="eu-west-1"), "region"),
        (aidp(token_file="/t"), "token_file"),
        (aidp(compartment_id="ocid1.compartment"), "compartment_id"),
        (glue(base_url="http://127.0.0.1:5000"), "base_url"),
        (glue(aws_secret_access_key="abcd"), "aws_secret_access_key"),
        (fabric(token="inline"), "token"),
        (ess(password="inline"), "password"),
    ],
)
def test_unknown_keys_name_the_target(
    tmp_path: Path, extras: None, target: dict[str, Any], key: str
) -> None:
    message = error(tmp_path, target)
    assert f"key targets[0] (name='{target['name']}').{key}: unknown key" in message


# --- secrets --------------------------------------------------------------------------------

SECRET = "s3cret-value-4711"


@pytest.mark.parametrize(
    "target",
    [
        jupyter(token=[SECRET]),
        jupyter(token=SECRET, token_file=SECRET),
        jupyter(base_url=SECRET),
        fabric("token", secret_key_file=SECRET),
        fabric("aksk", access_key=SECRET, secret_key=SECRET),
        fabric("password", iam_url=SECRET, password_file=[SECRET]),
        ess("basic", password_file=SECRET, client_secret_file=SECRET),
        ess("oauth2", token_url=f"https://u:{SECRET}@idcs.example.com", scope=""),
        ess("oauth2", client_secret=SECRET),
        glue(endpoint_url=f"ftp://u:{SECRET}@h", account_id=SECRET),
        aidp(oci_profile=[SECRET], auth=SECRET),
    ],
    ids=lambda t: f"{t['provider']}-{t.get('auth', '')}",
)
def test_secret_values_never_appear_in_errors(
    tmp_path: Path, extras: None, target: dict[str, Any]
) -> None:
    message = error(tmp_path, target)
    assert SECRET not in message
    assert "s3cret" not in message


# --- *_file keys: ~ and $CREDENTIALS_DIRECTORY ----------------------------------------------

FILE_KEYS = [
    (jupyter(token_file="jupyter-token"), "token_file"),
    (aidp(oci_config_file="oci-config"), "oci_config_file"),
    (fabric("token", token_file="iam-token"), "token_file"),
    (fabric("aksk", secret_key_file="sk"), "secret_key_file"),
    (fabric("aksk", security_token_file="st"), "security_token_file"),
    (fabric("password", password_file="pw"), "password_file"),
    (ess("basic", password_file="ess-pw"), "password_file"),
    (ess("oauth2", client_secret_file="ess-secret"), "client_secret_file"),
]


@pytest.mark.parametrize(("target", "key"), FILE_KEYS)
def test_a_relative_file_resolves_against_the_credentials_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extras: None,
    target: dict[str, Any],
    key: str,
) -> None:
    creds = tmp_path / "credentials"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    (loaded,) = load(tmp_path, target).targets
    assert getattr(loaded, key) == creds / target[key]


@pytest.mark.parametrize(("target", "key"), FILE_KEYS)
def test_file_keys_expand_home_and_keep_absolute_paths(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extras: None,
    target: dict[str, Any],
    key: str,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "credentials"))
    (loaded,) = load(tmp_path, {**target, key: "~/secrets/x"}).targets
    assert getattr(loaded, key) == tmp_path / "home" / "secrets" / "x"
    (loaded,) = load(tmp_path, {**target, key: "/etc/janitor/x"}).targets
    assert getattr(loaded, key) == Path("/etc/janitor/x")


def test_without_a_credentials_directory_a_relative_file_stays_relative(
    tmp_path: Path, extras: None
) -> None:
    (loaded,) = load(tmp_path, fabric("aksk", secret_key_file="sk")).targets
    assert loaded.secret_key_file == Path("sk")  # type: ignore[attr-defined]


def test_secrets_of_collects_every_secret_file_and_the_oci_profile_secrets(
    tmp_path: Path, extras: None
) -> None:
    def secret_file(name: str, content: str) -> str:
        path = tmp_path / name
        path.write_text(content + "\n", encoding="utf-8")
        return str(path)

    key_body = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"]
    pem = "\n".join(["-----BEGIN PRIVATE KEY-----", *key_body, "-----END PRIVATE KEY-----"])
    oci_config = secret_file(
        "oci-config",
        "\n".join(
            [
                "[DEFAULT]",
                "tenancy=ocid1.tenancy.oc1..tenancy-id",
                f"key_file={secret_file('oci-key.pem', pem)}",
                "pass_phrase=oci-pass-phrase-1",
                "[session]",
                f"security_token_file={secret_file('oci-session', 'oci-session-token-2')}",
            ]
        ),
    )
    config = load(
        tmp_path,
        jupyter(token_file=secret_file("jt", "jupyter-token-3")),
        jupyter(name="nb2", token="inline-token-4"),
        aidp(oci_config_file=oci_config, auth="security_token", oci_profile="session"),
        fabric(
            "aksk",
            secret_key_file=secret_file("sk", "fabric-sk-5"),
            security_token_file=secret_file("st", "fabric-st-6"),
        ),
        fabric("password", name="fabric2", password_file=secret_file("pw", "fabric-pw-7")),
        ess("basic", password_file=secret_file("ep", "ess-pw-8")),
        ess("oauth2", name="ess2", client_secret_file=secret_file("cs", "ess-cs-9")),
        fabric("token", name="fabric3", token_file=secret_file("it", "iam-token-10")),
    )
    secrets = sentry.secrets_of(config)
    for expected in [
        "jupyter-token-3",
        "inline-token-4",
        "oci-pass-phrase-1",  # the profile inherits DEFAULT's key_file and pass_phrase
        pem,
        *key_body,
        "oci-session-token-2",
        "fabric-sk-5",
        "fabric-st-6",
        "fabric-pw-7",
        "ess-pw-8",
        "ess-cs-9",
        "iam-token-10",
    ]:
        assert expected in secrets
    assert not [s for s in secrets if "tenancy-id" in s], "the OCI config holds no secret itself"
    assert "-----BEGIN PRIVATE KEY-----" not in secrets, "PEM armour is not a secret"


def test_a_principal_target_reads_no_oci_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extras: None
) -> None:
    oci_config = tmp_path / "home" / ".oci" / "config"
    oci_config.parent.mkdir(parents=True)
    oci_config.write_text("[DEFAULT]\npass_phrase=unused-pass-phrase\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert "unused-pass-phrase" in sentry.secrets_of(load(tmp_path, aidp()))
    config = load(tmp_path, aidp(auth="instance_principal"))
    assert "unused-pass-phrase" not in sentry.secrets_of(config)


# --- optional extras and providers not written yet ------------------------------------------


@pytest.mark.parametrize(
    ("target", "extra"),
    [(aidp(), "oci"), (glue(), "aws")],
)
def test_a_missing_extra_is_a_config_error_naming_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extras: None,
    target: dict[str, Any],
    extra: str,
) -> None:
    monkeypatch.setitem(providers.EXTRAS, extra, ABSENT_MODULE)  # type: ignore[index]
    name, provider = target["name"], target["provider"]
    expected = (
        f"target {name}: provider {provider} needs the optional extra janitor[{extra}]: "
        f"pip install 'janitor[{extra}]'"
    )
    assert error(tmp_path, jupyter(), target).endswith(expected)
    path = tmp_path / "janitor.toml"
    result = invoke("-c", str(path), "policy", "list")
    assert result.exit_code == 2
    assert expected in result.stderr


def test_the_real_extras_are_looked_up_by_their_modules() -> None:
    assert providers.EXTRAS == {"oci": "oci", "aws": "botocore"}
    assert {p: e.extra for p, e in providers.PROVIDERS.items()} == {
        "jupyter": None,
        "aidp": "oci",
        "ess": None,
        "glue": "aws",
        "fabric_sql": None,
    }


def test_a_provider_whose_module_is_missing_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        providers.PROVIDERS,  # type: ignore[arg-type]
        "phantom",
        providers.Entry(JupyterConfig, "janitor.providers.phantom:PhantomProvider", None),
    )
    assert providers.config_model("phantom") is JupyterConfig
    with pytest.raises(ConfigError) as info:
        providers.load_provider("phantom")
    assert str(info.value) == (
        "provider phantom is not available in this version of janitor "
        "(module janitor.providers.phantom does not exist)"
    )


def test_the_registry_and_the_jupyter_provider_agree() -> None:
    factory = providers.load_provider("jupyter")
    assert factory.config_model is providers.config_model("jupyter") is JupyterConfig


# --- the rules every model follows ----------------------------------------------------------

SECRET_NAMES = {"token", "password", "secret_key", "client_secret", "pass_phrase"}


@pytest.mark.parametrize("provider", sorted(providers.PROVIDERS))
def test_secrets_are_secretstr_or_files(provider: str) -> None:
    model: type[TargetConfig] = providers.config_model(provider)
    for name, field in model.model_fields.items():
        annotation = str(field.annotation)
        if name.endswith("_file"):
            assert "Path" in annotation, f"{provider}.{name} must be a Path"
        elif name in SECRET_NAMES:
            assert "SecretStr" in annotation, f"{provider}.{name} must be a SecretStr"
        assert "dict" not in annotation, f"{provider}.{name}: target keys are flat"
    for scheme in model.auth_schemes.values():
        assert scheme.keys <= set(model.model_fields), f"{provider}: scheme keys are fields"
