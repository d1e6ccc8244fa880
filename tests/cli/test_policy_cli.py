"""``janitor policy ...``: validation with precise messages, versions, export round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import invoke, jupyter_toml

GOOD = """
policies:
  - name: idle-notebooks
    description: Delete kernels idle for 2h with no browser tab open
    priority: 100
    targets: ["notebooks", "aidp-*"]
    match:
      state: [idle]
      idle_for: 2h
      max_connections: 0
    exempt:
      name: ["keep-*"]
    action: delete
    mode: enforce
    grace: 30m
    max_actions_per_sweep: 25
  - name: dead-kernels
    match: {state: dead}
    action: delete
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "janitor.toml"
    path.write_text(jupyter_toml(f"sqlite:///{tmp_path / 'j.db'}", "http://127.0.0.1:9/"))
    return path


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _stored(config: Path) -> list[dict[str, object]]:
    result = invoke("-c", str(config), "policy", "list", "-o", "json")
    if not (config.parent / "j.db").exists():  # nothing was ever stored: not even a database
        assert result.exit_code == 2
        assert "no janitor database at" in result.stderr
        return []
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


@pytest.mark.parametrize(
    ("replace", "by", "message"),
    [
        (
            "    mode: enforce\n",
            "    mode: enforce\n    colour: red\n",
            "policy idle-notebooks: colour: unknown key",
        ),
        (
            "idle_for: 2h",
            "idle_for: two hours",
            "policy idle-notebooks: match.idle_for: invalid duration 'two hours'",
        ),
        (
            "grace: 30m",
            "grace: 30 minutes",
            "policy idle-notebooks: grace: invalid duration '30 minutes'",
        ),
        (
            "state: [idle]",
            "state: [idle, sleepy]",
            "policy idle-notebooks: match.state: expected a list of states from: idle, busy, pending",
        ),
        (
            "action: delete\n    mode",
            "action: stop\n    mode",
            (
                "policy idle-notebooks: action: provider jupyter of target notebooks cannot stop "
                "(it can: delete, notify)"
            ),
        ),
        (
            "action: delete\n    mode",
            "action: explode\n    mode",
            (
                "policy idle-notebooks: action: expected one of: delete, stop, cancel, "
                "force_cancel, notify"
            ),
        ),
        (
            "max_connections: 0",
            "max_conections: 0",
            "policy idle-notebooks: match.max_conections: unknown key (did you mean 'max_connections'?",
        ),
        (
            "name: idle-notebooks",
            "name: Idle_Notebooks",
            "policy Idle_Notebooks: name: String should match pattern",
        ),
        (
            "  - name: dead-kernels",
            "  - name: idle-notebooks",
            "policy idle-notebooks: name: used twice in the document",
        ),
        (
            "max_actions_per_sweep: 25",
            "max_actions_per_sweep: -1",
            "policy idle-notebooks: max_actions_per_sweep: Input should be greater than or equal",
        ),
    ],
)
def test_invalid_policy_exits_2_naming_file_policy_and_field(
    tmp_path: Path, config: Path, replace: str, by: str, message: str
) -> None:
    assert replace in GOOD
    bad = _write(tmp_path, GOOD.replace(replace, by, 1))
    for command in ("validate", "apply"):
        result = invoke("-c", str(config), "policy", command, "-f", str(bad))
        assert result.exit_code == 2, result.output
        assert f"janitor: error: {bad}: {message}" in result.stderr
    assert _stored(config) == [], "nothing is stored from an invalid file"
    assert not (tmp_path / "j.db").exists(), "not even a database is created for it"


def test_yaml_syntax_error_names_the_line(tmp_path: Path, config: Path) -> None:
    bad = _write(tmp_path, "policies:\n  - name: x\n    match: {state: [idle]\n")
    result = invoke("-c", str(config), "policy", "validate", "-f", str(bad))
    assert result.exit_code == 2
    assert f"{bad}: invalid YAML (line" in result.stderr


def test_document_shape_errors(tmp_path: Path, config: Path) -> None:
    result = invoke(
        "-c", str(config), "policy", "validate", "-f", str(_write(tmp_path, "rules: []\n"))
    )
    assert result.exit_code == 2
    assert "policies: Field required" in result.stderr
    assert "rules: unknown key" in result.stderr
    missing = invoke("-c", str(config), "policy", "validate", "-f", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2
    assert "none.yaml: no such file or directory" in missing.stderr


def test_apply_versions_audits_and_is_idempotent(tmp_path: Path, config: Path) -> None:
    good = _write(tmp_path, GOOD)
    assert invoke("-c", str(config), "policy", "validate", "-f", str(good)).exit_code == 0
    first = invoke("-c", str(config), "policy", "apply", "-f", str(good))
    assert first.exit_code == 0, first.output
    assert "idle-notebooks: created (v1)" in first.stdout
    again = invoke("-c", str(config), "policy", "apply", "-f", str(good))
    assert "2 unchanged" in again.stdout
    changed = _write(tmp_path, GOOD.replace("idle_for: 2h", "idle_for: 3h"))
    plan = invoke("-c", str(config), "policy", "apply", "-f", str(changed), "--plan")
    assert "would update idle-notebooks (v1 -> v2, enforce)" in plan.stdout
    assert "+  idle_for: 3h" in plan.stdout
    assert {r["name"]: r["version"] for r in _stored(config)}["idle-notebooks"] == 1
    assert invoke("-c", str(config), "policy", "apply", "-f", str(changed)).exit_code == 0
    history = json.loads(
        invoke("-c", str(config), "policy", "history", "idle-notebooks", "-o", "json").stdout
    )
    assert [(h["version"], h["change"]) for h in history] == [(1, "created"), (2, "updated")]
    audit = json.loads(
        invoke("-c", str(config), "audit", "list", "--kind", "policy_change", "-o", "json").stdout
    )
    assert [(a["policy"], a["policy_version"]) for a in audit] == [
        ("idle-notebooks", 1),
        ("dead-kernels", 1),
        ("idle-notebooks", 2),
    ]
    assert all(a["actor"].endswith("(cli)") for a in audit)


def test_export_round_trips_through_apply(tmp_path: Path, config: Path) -> None:
    assert (
        invoke("-c", str(config), "policy", "apply", "-f", str(_write(tmp_path, GOOD))).exit_code
        == 0
    )
    assert invoke("-c", str(config), "policy", "disable", "dead-kernels").exit_code == 0
    exported = invoke("-c", str(config), "policy", "export")
    assert exported.exit_code == 0
    assert "enabled: false" in exported.stdout
    back = _write(tmp_path, exported.stdout, "exported.yaml")
    result = invoke("-c", str(config), "policy", "apply", "-f", str(back))
    assert "0 changed, 2 unchanged" in result.stdout
    again = invoke("-c", str(config), "policy", "export")
    assert again.stdout == exported.stdout


def test_enable_disable_prune_and_show(tmp_path: Path, config: Path) -> None:
    assert (
        invoke("-c", str(config), "policy", "apply", "-f", str(_write(tmp_path, GOOD))).exit_code
        == 0
    )
    assert (
        "dead-kernels: disabled (v2)"
        in invoke("-c", str(config), "policy", "disable", "dead-kernels").stdout
    )
    assert (
        "already disabled" in invoke("-c", str(config), "policy", "disable", "dead-kernels").stdout
    )
    assert (
        "dead-kernels: enabled (v3)"
        in invoke("-c", str(config), "policy", "enable", "dead-kernels").stdout
    )
    only_one = _write(
        tmp_path,
        "policies:\n" + GOOD.split("policies:\n")[1].split("  - name: dead-kernels")[0],
        "one.yaml",
    )
    pruned = invoke("-c", str(config), "policy", "apply", "-f", str(only_one), "--prune")
    assert "dead-kernels: disabled (v4)" in pruned.stdout
    rows = {r["name"]: r for r in _stored(config)}
    assert rows["dead-kernels"]["enabled"] is False
    shown = invoke("-c", str(config), "policy", "show", "idle-notebooks")
    assert shown.stdout.startswith("# idle-notebooks v1 (enabled")
    assert "idle_for: 2h" in shown.stdout
    missing = invoke("-c", str(config), "policy", "show", "nope")
    assert missing.exit_code == 2
    assert "no policy named 'nope'" in missing.stderr


def test_apply_a_directory(tmp_path: Path, config: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        "policies:\n  - {name: a, match: {state: dead}, action: delete}\n"
    )
    (folder / "b.yml").write_text(
        "policies:\n  - {name: b, match: {state: dead}, action: notify}\n"
    )
    result = invoke("-c", str(config), "policy", "apply", "-f", str(folder))
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in _stored(config)} == {"a", "b"}
    (folder / "c.yaml").write_text(
        "policies:\n  - {name: a, match: {state: dead}, action: delete}\n"
    )
    clash = invoke("-c", str(config), "policy", "validate", "-f", str(folder))
    assert clash.exit_code == 2
    assert "policy a: name: also defined in" in clash.stderr


def test_export_as_json_applies_back_unchanged(tmp_path: Path, config: Path) -> None:
    assert (
        invoke("-c", str(config), "policy", "apply", "-f", str(_write(tmp_path, GOOD))).exit_code
        == 0
    )
    exported = invoke("-c", str(config), "policy", "export", "-o", "json")
    document = json.loads(exported.stdout)
    assert [p["name"] for p in document["policies"]] == ["dead-kernels", "idle-notebooks"]
    back = _write(tmp_path, exported.stdout, "exported.json.yaml")  # JSON is valid YAML
    assert (
        "0 changed, 2 unchanged"
        in invoke("-c", str(config), "policy", "apply", "-f", str(back)).stdout
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "policies:\n  - {name: a, match: {state: dead}, action: delete, grace: 0s}\n",
            "policy a: grace: must be a positive duration; leave grace out",
        ),
        (
            "policies:\n  - {name: a, match: {state: dead}, action: delete, grace: -5}\n",
            "policy a: grace: invalid duration -5: must not be negative",
        ),
        (
            "policies:\n  - {name: a, match: {state: [asleep]}, action: delete}\n",
            (
                "policy a: match.state: expected a list of states from: idle, busy, pending, "
                "queued, held, stopping, dead, ended"
            ),
        ),
        ("rules: []\n", ": rules: unknown key"),
    ],
)
def test_more_validation_messages(tmp_path: Path, config: Path, text: str, message: str) -> None:
    result = invoke("-c", str(config), "policy", "validate", "-f", str(_write(tmp_path, text)))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "policy: policies" not in result.stderr


# --- DESIGN 6: force_cancel, consent by provider_state ------------------------------------


@pytest.mark.parametrize(
    ("match", "message"),
    [
        (
            "{in_state_for: 1h}",
            "force_cancel needs match.provider_state: [CANCELLING] (and nothing else)",
        ),
        (
            "{provider_state: [CANCELLING, RUNNING], in_state_for: 1h}",
            "force_cancel needs match.provider_state: [CANCELLING] (and nothing else)",
        ),
        (
            "{provider_state: [CANCELLING]}",
            "force_cancel needs match.in_state_for of at least 30m",
        ),
        (
            "{provider_state: [CANCELLING], in_state_for: 29m}",
            "force_cancel needs match.in_state_for of at least 30m",
        ),
    ],
)
def test_force_cancel_only_escalates_a_cancel_stuck_for_30m(
    tmp_path: Path, config: Path, match: str, message: str
) -> None:
    text = f"policies:\n  - {{name: force, match: {match}, action: force_cancel}}\n"
    result = invoke("-c", str(config), "policy", "validate", "-f", str(_write(tmp_path, text)))
    assert result.exit_code == 2
    assert f"policy force: action: {message}" in result.stderr


def test_force_cancel_on_a_provider_without_it_is_refused(tmp_path: Path, config: Path) -> None:
    text = (
        "policies:\n  - {name: force, match: {provider_state: [cancelling], in_state_for: 30m},"
        " action: force_cancel}\n"
    )
    result = invoke("-c", str(config), "policy", "validate", "-f", str(_write(tmp_path, text)))
    assert result.exit_code == 2
    assert "provider jupyter of target notebooks cannot force_cancel" in result.stderr


@pytest.mark.parametrize(
    ("provider_states", "warned"),
    [("[busy]", "busy"), ("[starting, idle]", "pending"), ("[idle, dead]", None)],
)
def test_naming_a_busy_like_provider_state_is_consent_and_is_warned_about(
    tmp_path: Path, config: Path, provider_states: str, warned: str | None
) -> None:
    text = (
        f"policies:\n  - {{name: stuck, match: {{provider_state: {provider_states},"
        " in_state_for: 6h}, action: delete}\n"
    )
    result = invoke("-c", str(config), "policy", "validate", "-f", str(_write(tmp_path, text)))
    assert result.exit_code == 0, result.output
    if warned is None:
        assert "warning" not in result.stderr
    else:
        assert (
            f"policy stuck: match.provider_state: names provider states that janitor counts as "
            f"{warned}: this policy acts on {warned} sessions"
        ) in result.stderr
