"""``make run`` (``janitor demo``) keeps a user's edits of the demo's policy file."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from janitor.sim.demo import write_files


def test_the_demo_writes_its_policies_once_and_keeps_edits(tmp_path: Path) -> None:
    shipped = (importlib.resources.files("janitor.sim") / "demo-policies.yaml").read_text()
    write_files(tmp_path, "http://127.0.0.1:1", "127.0.0.1:9465")
    policies = tmp_path / "policies.yaml"
    assert policies.read_text() == shipped

    edited = shipped.replace("idle_for: 1h", "idle_for: 4h")
    assert edited != shipped
    policies.write_text(edited)
    write_files(tmp_path, "http://127.0.0.1:2", "127.0.0.1:9465")  # a second `make run`

    assert policies.read_text() == edited, "the user's edit survives a restart"
    assert "http://127.0.0.1:2/" in (tmp_path / "janitor.toml").read_text()
