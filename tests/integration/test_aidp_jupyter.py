"""The aidp provider against a real Jupyter Server behind the AIDP front (marker ``jupyter``).

One real ``jupyter_server`` with ipykernel runs for the module, mounted at the AIDP base path
(``--ServerApp.base_url=/20260430/aiDataPlatforms/<id>/workspaces/<key>/notebook/``); each test
puts the AIDP front of tests/fakes/aidp.py before it over loopback HTTP
(tests/integration/aidp_proxy.py: signatures checked, ``{"items": [...]}`` paged two at a time,
etags, ``if-match``). janitor runs as its CLI with a config file and an OCI profile, signing
with a key made for the test run. The tests play the users: sessions over Jupyter's REST API,
code over the kernel websocket. Real kernel activity decides; "idle past ``idle_for``" is real
time on the server's clock (policies use ``idle_for: 2s`` and ``grace: 2s``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import invoke
from tests.fakes.aidp import AidpApi, Fault, shared_profile, signing_key
from tests.fakes.oci_signing import TestKey, Verifier, write_profile
from tests.integration.aidp_proxy import BASE_PATH, PLATFORM, WORKSPACE, JupyterBackend
from tests.integration.jupyter_server import JupyterServer, start_all, stop_all

pytestmark = pytest.mark.jupyter

IDLE_FOR = timedelta(seconds=2)
IDLE = """
policies:
  - name: idle-notebooks
    match:
      state: [idle]
      idle_for: 2s
      max_connections: 0
    action: delete
    mode: enforce
"""
GRACE = IDLE.replace("mode: enforce", "mode: enforce\n    grace: 2s")


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """One real Jupyter Server at the AIDP base path for the module."""
    (server,) = start_all([(tmp_path_factory.mktemp("aidp-jupyter"), {"base_path": BASE_PATH})])
    try:
        yield server
    finally:
        stop_all([server])


@dataclass
class Front:
    """The AIDP front before the real server, and what it saw."""

    api: AidpApi
    url: str
    server: JupyterServer


@pytest.fixture
def aidp(jupyter: JupyterServer) -> Iterator[Front]:
    """The front over loopback, trusting janitor's key; the server empty before and after."""
    jupyter.clear()
    verifier = Verifier()
    verifier.trust(signing_key())
    api = AidpApi(backend=JupyterBackend(jupyter), verifier=verifier, platform=PLATFORM, max_page=2)
    try:
        with api.serve() as url:
            yield Front(api=api, url=url, server=jupyter)
    finally:
        jupyter.clear()


class Janitor:
    """janitor's CLI against the front, with its own config file, profile and database."""

    def __init__(self, home: Path, front: Front, *, profile: Path | None = None) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.config = home / "janitor.toml"
        self.config.write_text(
            f'database_url = "sqlite:///{home / "janitor.db"}"\n\n'
            "[[targets]]\n"
            'name = "aidp"\n'
            'provider = "aidp"\n'
            f'base_url = "{front.url}"\n'
            f'ai_data_platform_id = "{PLATFORM}"\n'
            f'workspaces = ["{WORKSPACE}"]\n'
            f'oci_config_file = "{profile or shared_profile()}"\n',
            encoding="utf-8",
        )
        self.policies = home / "policies.yaml"
        self.ok("db", "upgrade")

    def ok(self, *args: str) -> Any:
        """Run a command that must succeed."""
        result = invoke("-c", str(self.config), *args)
        assert result.exit_code == 0, result.output
        return result

    def apply(self, document: str) -> None:
        """Store a policy document."""
        self.policies.write_text(document, encoding="utf-8")
        self.ok("policy", "apply", "-f", str(self.policies))

    def sweep(self, *, expect: int = 0) -> dict[str, Any]:
        """One sweep; the JSON summary of the target."""
        result = invoke("-c", str(self.config), "sweep", "-o", "json")
        assert result.exit_code == expect, result.output
        summary: dict[str, Any] = json.loads(result.stdout)["targets"][0]
        return summary

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first."""
        rows: list[dict[str, Any]] = json.loads(self.ok("audit", "list", "-o", "json").stdout)
        return rows

    def outcomes(self, action: str = "delete") -> dict[str, str]:
        """Session id → outcome of the rows of ``action``."""
        return {
            r["session_id"]: r["outcome"]
            for r in self.audit()
            if r["kind"] == "outcome" and r["action"] == action
        }


def wait_idle_past(server: JupyterServer, kernel_ids: list[str], idle_for: timedelta) -> None:
    """Sleep until every kernel's own ``last_activity`` is more than ``idle_for`` old."""
    for kernel_id in kernel_ids:
        model = server.kernel(kernel_id)
        assert model is not None, f"kernel {kernel_id} is gone"
        last = datetime.fromisoformat(model["last_activity"])
        remaining = (last + idle_for - datetime.now(UTC)).total_seconds()
        if remaining > -0.3:
            time.sleep(remaining + 0.3)


def idle_session(server: JupyterServer, path: str) -> dict[str, Any]:
    """A session whose kernel ran code once and is now idle past ``IDLE_FOR``."""
    session = server.create_session(path)
    kernel_id = session["kernel"]["id"]
    assert server.execute(kernel_id, "x = 1").errors == []
    server.wait_settled(kernel_id)
    wait_idle_past(server, [kernel_id], IDLE_FOR)
    return session


def names(server: JupyterServer) -> dict[str, str]:
    """Session id → name, as Jupyter keeps them."""
    return {s["id"]: s["name"] for s in server.sessions()}


def ref(session: dict[str, Any]) -> str:
    """janitor's id of a session: ``workspace/id``."""
    return f"{WORKSPACE}/{session['id']}"


# --- real activity decides ----------------------------------------------------------------------


def test_real_kernel_activity_decides_what_is_deleted(aidp: Front, tmp_path: Path) -> None:
    server = aidp.server
    busy = server.create_session("work/busy.ipynb")
    server.execute(busy["kernel"]["id"], "import time; time.sleep(300)", wait=False)
    starting = server.create_session("work/starting.ipynb")  # no client ever connects
    idle = idle_session(server, "work/idle.ipynb")
    wait_idle_past(server, [busy["kernel"]["id"]], IDLE_FOR)  # idle by its clock, yet busy
    janitor = Janitor(tmp_path, aidp)
    janitor.apply(IDLE)

    summary = janitor.sweep()

    assert summary["sessions"] == {"idle": 1, "busy": 1, "pending": 1}
    assert summary["outcomes"] == {"executed": 1}
    assert set(names(server)) == {busy["id"], starting["id"]}
    assert server.kernel(idle["kernel"]["id"]) is None, "the session's kernel was shut down"
    assert janitor.outcomes() == {ref(idle): "executed"}
    rows = janitor.audit()
    executed = next(r for r in rows if r["kind"] == "outcome")
    assert executed["http_status"] == 204
    assert executed["provider_request_id"]
    skipped = {r["session_id"]: r["reason"] for r in rows if r["kind"] == "skip"}
    assert "state busy" in skipped[ref(busy)]
    assert "state pending" in skipped[ref(starting)]
    # every request was signed with janitor's key; the listing came in pages of two
    assert set(aidp.api.verifier.verified) == {signing_key().key_id}
    assert aidp.api.requests("list_next")
    [(method, session_id, if_match, etag)] = aidp.api.preconditions
    assert (method, session_id) == ("DELETE", idle["id"])
    assert if_match == etag, "the DELETE carried the etag of the re-check"


def test_polling_creates_no_activity(aidp: Front, tmp_path: Path) -> None:
    server = aidp.server
    session = idle_session(server, "work/watched.ipynb")
    before = server.kernel(session["kernel"]["id"])
    janitor = Janitor(tmp_path, aidp)
    janitor.apply(IDLE.replace("mode: enforce", "mode: dry-run"))

    for _ in range(3):
        janitor.sweep()

    would = {r["session_id"] for r in janitor.audit() if r["outcome"] == "would_act"}
    assert would == {ref(session)}, "it matched: janitor looked at it, three times"
    assert server.kernel(session["kernel"]["id"]) == before, "janitor's reads moved the kernel"
    assert names(server) == {session["id"]: "watched.ipynb"}
    assert aidp.api.preconditions == [], "nothing was written"


# --- the native warning -------------------------------------------------------------------------


def test_a_warned_session_is_renamed_then_deleted_after_the_grace(
    aidp: Front, tmp_path: Path
) -> None:
    server = aidp.server
    session = idle_session(server, "work/Quarterly report (final).ipynb")
    janitor = Janitor(tmp_path, aidp)
    janitor.apply(GRACE)

    janitor.sweep()
    shown = names(server)[session["id"]]
    assert shown.startswith("[idle: cleanup at ")
    assert shown.endswith(" UTC] Quarterly report (final).ipynb")
    assert server.kernel(session["kernel"]["id"]) is not None, "warned, not deleted"

    time.sleep(IDLE_FOR.total_seconds() + 0.5)  # the grace passes; nobody comes back
    janitor.sweep()

    assert names(server) == {}
    assert janitor.outcomes("warn") == {ref(session): "executed"}
    assert janitor.outcomes() == {ref(session): "executed"}
    deleted = next(r for r in janitor.audit() if r["kind"] == "outcome" and r["action"] == "delete")
    assert deleted["session_name"] == "Quarterly report (final).ipynb"
    methods = [(m, if_match == etag) for m, _, if_match, etag in aidp.api.preconditions]
    assert methods == [("PATCH", True), ("DELETE", True)]


def test_the_user_returns_during_the_grace_and_the_name_is_restored(
    aidp: Front, tmp_path: Path
) -> None:
    server = aidp.server
    session = idle_session(server, "work/Ünïcode draft — v2.ipynb")
    original = names(server)[session["id"]]
    janitor = Janitor(tmp_path, aidp)
    janitor.apply(GRACE)
    janitor.sweep()
    assert names(server)[session["id"]] != original

    server.execute(session["kernel"]["id"], "y = 2")  # the user runs a cell
    server.wait_settled(session["kernel"]["id"])
    janitor.sweep()

    assert names(server) == {session["id"]: original}
    assert server.kernel(session["kernel"]["id"]) is not None
    assert janitor.outcomes() == {}
    assert janitor.outcomes("withdraw") == {ref(session): "executed"}
    assert [m for m, *_ in aidp.api.preconditions] == ["PATCH", "PATCH"]


def test_a_rename_between_the_recheck_and_the_delete_is_412_and_skipped(
    aidp: Front, tmp_path: Path
) -> None:
    server = aidp.server
    session = idle_session(server, "work/analysis.ipynb")
    path = f"api/sessions/{session['id']}"

    def user_renames() -> None:
        response = server.request("PATCH", path, json={"name": "analysis (mine)"}, track=True)
        assert response.status_code == 200

    aidp.api.inject(Fault(op="act", before=user_renames))
    janitor = Janitor(tmp_path, aidp)
    janitor.apply(IDLE)

    summary = janitor.sweep()

    assert summary["outcomes"] == {"skipped_changed": 1}
    assert names(server) == {session["id"]: "analysis (mine)"}
    assert server.kernel(session["kernel"]["id"]) is not None
    outcome = next(r for r in janitor.audit() if r["kind"] == "outcome")
    assert outcome["http_status"] == 412
    assert "PreconditionFailed" in outcome["reason"]
    assert len(aidp.api.requests("act")) == 1, "never retried blindly"


def test_an_untrusted_key_is_a_failed_listing(aidp: Front, tmp_path: Path) -> None:
    session = idle_session(aidp.server, "work/protected.ipynb")
    stranger = write_profile(tmp_path / "oci", TestKey.generate())
    janitor = Janitor(tmp_path, aidp, profile=stranger)
    janitor.apply(IDLE)

    summary = janitor.sweep(expect=1)

    assert summary["listed"] is False
    row = janitor.audit()[-1]
    assert row["kind"] == "list_failed"
    assert row["http_status"] == 401
    assert "PRIVATE KEY" not in json.dumps(janitor.audit())
    assert set(names(aidp.server)) == {session["id"]}
