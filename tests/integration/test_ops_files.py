"""The deployment files: the systemd unit, the Dockerfile, the Kubernetes example and the
metric names in docs/operations.md. The linters ``make lint`` runs are run here too (when
installed), so a regression shows in ``make test`` as well.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from janitor import metrics
from janitor.settings import load_config
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "janitor.service"
DOCKERFILE = ROOT / "Dockerfile"
MANIFEST = ROOT / "deploy" / "kubernetes" / "janitor-sidecar.yaml"
OPERATIONS = ROOT / "docs" / "operations.md"
VERIFY_UNIT = ROOT / "scripts" / "verify-unit"


def unit_directives() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit, every value of repeated keys kept in order."""
    directives: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


def janitor_bin() -> Path:
    return Path(sys.executable).parent / "janitor"


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


# --- systemd ------------------------------------------------------------------------


def test_unit_has_the_settings_operations_rely_on() -> None:
    unit = unit_directives()
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["2"],
        "DynamicUser": ["yes"],
        "StateDirectory": ["janitor"],
        "ConfigurationDirectory": ["janitor"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "LoadCredential": ["janitor:/etc/janitor/credentials"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    assert "@system-service" in unit["SystemCallFilter"]
    assert unit["WatchdogSec"] == ["60s"]
    assert unit["ExecStart"] == ["/opt/janitor/bin/janitor run"]
    assert unit["ExecStartPre"] == ["-/opt/janitor/bin/janitor db upgrade"]
    assert "JANITOR_CONFIG=/etc/janitor/janitor.toml" in unit["Environment"][0].split()


def test_credential_names_from_the_unit_are_read_by_janitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``LoadCredential=janitor:/etc/janitor/credentials`` produces, janitor reads."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "janitor_database_url").write_text(f"sqlite:///{tmp_path / 'j.db'}\n")
    (creds / "janitor_sentry__dsn").write_text("http://public@127.0.0.1:9/1\n")
    (creds / "janitor_jupyter-token").write_text("t0ken\n")
    config = tmp_path / "janitor.toml"
    config.write_text(
        '[[targets]]\nname = "nb"\nprovider = "jupyter"\n'
        'base_url = "http://127.0.0.1:8888/"\ntoken_file = "janitor_jupyter-token"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    loaded = load_config(str(config))
    assert loaded.settings.database_url is not None
    assert loaded.settings.database_url.get_secret_value() == f"sqlite:///{tmp_path / 'j.db'}"
    assert loaded.settings.sentry.dsn is not None
    assert loaded.targets[0].token_file == creds / "janitor_jupyter-token"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_verify_unit_passes() -> None:
    result = run(VERIFY_UNIT, env={**os.environ, "JANITOR_BIN": str(janitor_bin())})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: clean" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_verify_unit_fails_on_any_warning(tmp_path: Path) -> None:
    broken = tmp_path / "janitor.service"
    broken.write_text(
        UNIT.read_text(encoding="utf-8").replace(
            "ProtectSystem=strict", "ProtectSystem=strikt\nBogusDirective=yes"
        ),
        encoding="utf-8",
    )
    result = run(VERIFY_UNIT, broken, env={**os.environ, "JANITOR_BIN": str(janitor_bin())})
    assert result.returncode == 1
    assert "Unknown key 'BogusDirective'" in result.stderr
    assert "strikt" in result.stderr


# --- container ----------------------------------------------------------------------


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(hadolint() is None, reason="hadolint missing")
def test_hadolint_has_no_findings() -> None:
    result = run(str(hadolint()), DOCKERFILE)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.append((keyword.upper(), " ".join(rest.split())))
    return instructions


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    values = {}
    for keyword, rest in instructions:
        values.setdefault(keyword, []).append(rest)
    assert "PYTHON_IMAGE=python:3.11-slim-bookworm" in values["ARG"]
    assert values["FROM"] == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert values["USER"] == ["10001:10001"]
    assert json.loads(values["ENTRYPOINT"][0]) == ["janitor"]
    assert json.loads(values["CMD"][0]) == ["run"]
    assert values["EXPOSE"] == ["9465"]
    assert values["VOLUME"] == ['["/var/lib/janitor"]']
    assert values["HEALTHCHECK"][0].endswith('CMD ["janitor", "healthcheck"]')
    env = " ".join(values["ENV"])
    assert "JANITOR_LISTEN=0.0.0.0:9465" in env
    assert "STATE_DIRECTORY=/var/lib/janitor" in env
    assert "migrations/ migrations/" in values["COPY"]


def test_dockerignore_keeps_what_the_build_copies() -> None:
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "**", "exclude everything, then list what the image needs"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {
        source.rstrip("/")
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "janitor", "migrations"}
    assert copied <= included


# --- Kubernetes ---------------------------------------------------------------------


def manifest() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if d]


def by_kind(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [
        d
        for d in manifest()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    return doc


def test_manifest_loads_and_names_its_parts() -> None:
    kinds = sorted(d["kind"] for d in manifest())
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PersistentVolumeClaim", "Secret"]


def test_janitor_is_a_native_sidecar_with_liveness_only() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["janitor-db-upgrade", "janitor-policies", "janitor"]
    setup, policies, sidecar = pod["initContainers"]
    assert "restartPolicy" not in setup, "plain init containers run to completion first"
    assert "restartPolicy" not in policies
    assert setup["args"] == ["db", "upgrade"]
    assert policies["args"][:2] == ["policy", "apply"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"] == ["run"]
    probe = sidecar["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    (port,) = sidecar["ports"]
    assert probe["port"] == port["name"]
    assert port["containerPort"] == 9465
    assert "readinessProbe" not in sidecar, "DESIGN 5: no readiness probe on a sidecar"
    for container in pod["initContainers"]:
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert [c["name"] for c in pod["containers"]] == ["jupyter"]


def test_no_janitor_probe_uses_readyz() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    for container in pod["initContainers"]:
        for key in ("livenessProbe", "readinessProbe", "startupProbe"):
            if key in container:
                assert container[key]["httpGet"]["path"] != "/readyz"


def test_the_token_reaches_both_containers_from_one_secret() -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    secret = by_kind("Secret")["metadata"]["name"]
    (jupyter,) = pod["containers"]
    (token_env,) = [e for e in jupyter["env"] if e["name"] == "JUPYTER_TOKEN"]
    assert token_env["valueFrom"]["secretKeyRef"]["name"] == secret
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret
    sidecar = pod["initContainers"][-1]
    (mount,) = [m for m in sidecar["volumeMounts"] if m["name"] == volume["name"]]
    config = tomllib.loads(by_kind("ConfigMap", "janitor-config")["data"]["janitor.toml"])
    (item,) = volume["secret"]["items"]
    assert config["targets"][0]["token_file"] == f"{mount['mountPath']}/{item['path']}"


def test_configmaps_hold_a_valid_config_and_valid_policies(tmp_path: Path) -> None:
    pod = by_kind("Deployment")["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][-1]
    (env,) = [e for e in sidecar["env"] if e["name"] == "JANITOR_CONFIG"]
    (etc,) = [v for v in pod["volumes"] if v["name"] == "janitor-etc"]
    projected = {
        item["path"]: (source["configMap"]["name"], item["key"])
        for source in etc["projected"]["sources"]
        for item in source["configMap"]["items"]
    }
    assert env["value"] == "/etc/janitor/janitor.toml"
    assert projected["janitor.toml"] == ("janitor-config", "janitor.toml")
    assert pod["initContainers"][1]["args"][-1] == "/etc/janitor/policies"
    assert any(path.startswith("policies/") for path in projected)

    config = tmp_path / "janitor.toml"
    config.write_text(by_kind("ConfigMap", "janitor-config")["data"]["janitor.toml"])
    loaded = load_config(str(config))
    assert [t.name for t in loaded.targets] == ["notebook"]
    policies = tmp_path / "policies"
    policies.mkdir()
    for key, text in by_kind("ConfigMap", "janitor-policies")["data"].items():
        (policies / key).write_text(text, encoding="utf-8")
        assert "mode: enforce" not in text, "the example starts in dry-run"
    result = invoke("-c", str(config), "policy", "validate", "-f", str(policies))
    assert result.exit_code == 0, result.output


# --- docs ---------------------------------------------------------------------------


def exposed_metric_names() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    return names


def test_the_metric_table_in_the_docs_matches_the_registry() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("## 7. Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(janitor_[a-z_]+)`", section, re.MULTILINE))
    assert documented == exposed_metric_names()
