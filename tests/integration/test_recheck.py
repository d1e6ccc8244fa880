"""The re-check decides again: a change between the listing and the call stops the call.

DESIGN 4.3 and 5 ("Policy evaluation"): right before a destructive call janitor re-reads the
session and decides again on the fresh record with the policies as they are now; anything
changed gives ``skipped_changed``. Each test lands a change in that window on the simulated
Jupyter server and checks what the provider and the operator see: no DELETE reached the
server, and the intent's outcome row is ``skipped_changed`` with a reason naming the change.

* The policies change through the CLI (``janitor policy disable`` / ``policy apply``), right
  after the server answered the listing: the sweep's decisions are taken, the re-check is to
  come. Disabled, edited to no longer match, edited at all (a new version), and shadowed by a
  higher-priority policy that matches and either exempts the session or only previews it
  (DESIGN 5: the first matching policy decides, whatever its mode).
* During a long sweep (one action at a time), a disable after the first DELETE spares every
  session re-checked after it: the policies are re-read within the sweep, not only at its start.
* The session changes, between the listing and its re-check GET, in a field that only the
  re-check comparison sees: ``provider_state`` (the kernel restarting: still ``pending``),
  ``kind`` (the session turned into a console), ``etag`` (a test-only wrapper gives Jupyter an
  ETag computed from the record; the user renames the notebook, which no other compared field
  shows). An untouched session of the same sweep is deleted: the sweep acts where nothing
  changed.

Policy changes land after the listing, not inside the re-check GET: the policies are read
just before that GET (so no database round trip lies between the fresh read and the call,
see test_races.py), and a change landing inside the GET is the residual window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from janitor.clock import FrozenClock
from janitor.model import AuditEvent, AuditKind, Listing, Outcome, Session
from janitor.runtime import Runtime
from janitor.sim.jupyter import NotebookSession
from janitor.store import Store
from janitor.sweep import SweepReport
from tests.conftest import invoke, jupyter_toml
from tests.fakes.faults import IDLE_POLICY, World, list_sessions, one
from tests.fakes.jupyter import Fault

POLICY = IDLE_POLICY["name"]


@pytest.fixture
def world(store: Store, clock: FrozenClock) -> World:
    """The simulated server and the idle-delete policy, on each database."""
    w = World.create(store, clock)
    w.apply()
    return w


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Callable[..., Any]:
    """Run ``janitor -c CONFIG ARGS...`` on the test's database; the result must be exit 0."""
    config = tmp_path / "janitor.toml"
    config.write_text(jupyter_toml(db_url, "http://jupyter.test/"))

    def run(*args: str) -> Any:
        result = invoke("-c", str(config), *args)
        assert result.exit_code == 0, result.output
        return result

    return run


def sweep(world: World, count: int = 1, **kw: Any) -> list[SweepReport]:
    """Run ``count`` sweeps with one runtime, as the daemon does."""
    return asyncio.run(world.sweeps(count, **kw))


def rows_of(world: World, session_id: str, kind: AuditKind) -> list[AuditEvent]:
    """One session's audit rows of one kind, in order."""
    return [r for r in world.events() if r.session_id == session_id and r.kind == kind]


def outcomes(world: World, session_id: str) -> list[Outcome | None]:
    """The outcomes of one session's intents and previews, in order."""
    return [r.outcome for r in rows_of(world, session_id, AuditKind.OUTCOME)]


def deletes(world: World, record_id: str, since: int = 0) -> int:
    """DELETE requests for one record that reached the server."""
    return len(world.transport.matching("DELETE", f"/{record_id}", since=since))


def policy_file(tmp_path: Path, *policies: dict[str, Any]) -> str:
    """A policy YAML file, as an operator writes it."""
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump({"policies": list(policies)}), encoding="utf-8")
    return str(path)


# --- the policies change between the listing and the re-check ----------------------------


def disable(_: Path) -> tuple[str, ...]:
    """``janitor policy disable idle-notebooks``."""
    return ("policy", "disable", POLICY)


def apply(spec: dict[str, Any]) -> Callable[[Path], tuple[str, ...]]:
    """``janitor policy apply -f FILE`` with ``spec`` in the file."""
    return lambda tmp_path: ("policy", "apply", "-f", policy_file(tmp_path, spec))


# the same rule, now sparing reports, put before the old one
SPARING = {**IDLE_POLICY, "name": "spare-reports", "priority": 10, "exempt": {"name": ["report*"]}}
# a new rule for reports, previewed first (dry-run is the default mode): it decides first
PREVIEW = {
    "name": "preview-reports",
    "priority": 10,
    "match": {"name": ["report*"]},
    "action": "delete",
}
NOT_MATCHING = {**IDLE_POLICY, "match": {**IDLE_POLICY["match"], "idle_for": "6h"}}
STILL_MATCHING = {**IDLE_POLICY, "description": "now with a description"}

# (the operator's command, what the re-check says, the outcomes over this and the next sweep)
CHANGES = [
    pytest.param(disable, "no enabled policy applies", [Outcome.SKIPPED_CHANGED], id="disabled"),
    pytest.param(
        apply(NOT_MATCHING),
        "no policy matched",
        [Outcome.SKIPPED_CHANGED],
        id="edited-to-no-longer-match",
    ),
    pytest.param(
        apply(STILL_MATCHING),
        f"policy {POLICY} v2",
        [Outcome.SKIPPED_CHANGED, Outcome.EXECUTED],  # a new version: decided anew next sweep
        id="edited-still-matching",
    ),
    pytest.param(
        apply(SPARING),
        "exempt: name 'report.ipynb' matches ['report*'] (policy spare-reports v1)",
        [Outcome.SKIPPED_CHANGED],
        id="shadowed-by-an-exempting-policy",
    ),
    pytest.param(
        apply(PREVIEW),
        "(policy preview-reports v1)",
        [Outcome.SKIPPED_CHANGED, Outcome.WOULD_ACT],
        id="shadowed-by-a-dry-run-policy",
    ),
]


@pytest.mark.parametrize(("command", "reason", "recorded"), CHANGES)
def test_a_policy_changed_after_the_listing_stops_the_delete(
    world: World,
    cli: Callable[..., Any],
    tmp_path: Path,
    command: Callable[[Path], tuple[str, ...]],
    reason: str,
    recorded: list[Outcome],
) -> None:
    session = world.idle("report.ipynb")
    args = command(tmp_path)
    changed: list[Any] = []
    world.transport.after(list_sessions, lambda: changed.append(cli(*args)))
    in_first_sweep: list[int] = []
    sweep(world, 2, between=lambda i, _: in_first_sweep.append(deletes(world, session.id)))

    assert changed, "the policy change did not land"
    assert in_first_sweep[0] == 0, "a DELETE went out after the policy changed"
    (intent, *_) = rows_of(world, session.id, AuditKind.INTENT)
    assert (intent.policy, intent.policy_version) == (POLICY, 1)
    first = rows_of(world, session.id, AuditKind.OUTCOME)[0]
    assert first.intent_id == intent.id
    assert first.outcome is Outcome.SKIPPED_CHANGED
    assert reason in first.reason, first.reason
    assert outcomes(world, session.id) == recorded
    # the next sweep decides anew with the new policies: a DELETE only if they still say so
    assert deletes(world, session.id) == (1 if Outcome.EXECUTED in recorded else 0)
    assert world.store.audit.pending_intents("nb") == []


def test_a_disable_during_a_long_sweep_spares_the_sessions_rechecked_after_it(
    world: World, cli: Callable[..., Any]
) -> None:
    sessions = [world.idle(f"s{i}.ipynb") for i in range(4)]
    world.target = {"max_concurrency": 1}  # one action at a time: a long sweep
    world.transport.after(lambda m, p: m == "DELETE", lambda: cli("policy", "disable", POLICY))
    sweep(world)

    deleted = [s for s in sessions if world.sim.deletes[s.id]]
    assert len(world.transport.deletes()) == 1
    assert len(deleted) == 1
    for session in sessions:
        if session in deleted:
            assert outcomes(world, session.id) == [Outcome.EXECUTED]
            continue
        (outcome,) = rows_of(world, session.id, AuditKind.OUTCOME)
        assert outcome.outcome is Outcome.SKIPPED_CHANGED
        assert "no enabled policy applies" in outcome.reason
        assert session.id in world.sim.sessions


# --- the session changes between the listing and its re-check ---------------------------

PENDING_POLICY = {
    "name": "stuck-kernels",
    "match": {"state": ["pending"], "idle_for": "2h"},
    "action": "delete",
    "mode": "enforce",
}


def _restart(world: World, session: NotebookSession) -> None:
    """The user restarts the kernel: ``starting`` becomes ``restarting``, both ``pending``."""
    with world.sim.lock:
        world.sim.kernels[session.kernel_id].execution_state = "restarting"


def _to_console(world: World, session: NotebookSession) -> None:
    """The session's type changes (Jupyter's PATCH api/sessions/{id} can do this)."""
    with world.sim.lock:
        world.sim.sessions[session.id].type = "console"


def _rename(world: World, session: NotebookSession) -> None:
    """The user renames the notebook: name and path change, nothing else janitor compares."""
    with world.sim.lock:
        world.sim.sessions[session.id].path = "renamed.ipynb"
        world.sim.sessions[session.id].name = "renamed.ipynb"


def test_a_changed_provider_state_is_skipped_changed(world: World) -> None:
    world.apply(PENDING_POLICY)
    changed = world.idle("restarted.ipynb", state="starting")
    untouched = world.idle("stuck.ipynb", state="starting")
    _before_recheck(world, changed, _restart)
    sweep(world)
    _assert_skipped(world, changed, "provider_state starting → restarting")
    _assert_deleted(world, untouched)


def test_a_changed_kind_is_skipped_changed(world: World) -> None:
    changed = world.idle("a.ipynb")
    untouched = world.idle("b.ipynb")
    _before_recheck(world, changed, _to_console)
    sweep(world)
    _assert_skipped(world, changed, "kind notebook → console")
    _assert_deleted(world, untouched)


class EtagJupyter:
    """Test-only: the real jupyter provider, with an ETag on every record.

    Jupyter has no ETag. This wrapper gives each listed and re-read record one, a digest of
    every field the provider read from the server's record (what an HTTP ETag stands for:
    the record's content), so any change of the record changes it, also one no other compared
    field shows (a rename changes only the name). Everything else is the real provider.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def list_sessions(self) -> Listing:
        """The real listing, with ETags."""
        listing: Listing = await self._inner.list_sessions()
        return replace(listing, sessions=tuple(self._tagged(s) for s in listing.sessions))

    async def get_session(self, session: Session) -> Session | None:
        """The real re-read, with an ETag."""
        fresh: Session | None = await self._inner.get_session(session)
        return self._tagged(fresh) if fresh is not None else None

    @staticmethod
    def _tagged(session: Session) -> Session:
        content = {f.name: getattr(session, f.name) for f in fields(session) if f.name != "etag"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=_plain).encode())
        return replace(session, etag=f'"{digest.hexdigest()[:16]}"')


def _plain(value: object) -> object:
    """A record field as JSON: sets sorted, mappings as dicts, anything else as text."""
    if isinstance(value, set | frozenset):
        return sorted(str(v) for v in value)
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def test_a_changed_etag_is_skipped_changed(world: World) -> None:
    changed = world.idle("a.ipynb")
    untouched = world.idle("b.ipynb")
    _before_recheck(world, changed, _rename)

    def with_etags(rt: Runtime) -> None:
        rt.providers["nb"] = EtagJupyter(rt.providers["nb"])

    sweep(world, setup=with_etags)
    _assert_skipped(world, changed, "etag ")
    _assert_deleted(world, untouched)


def _before_recheck(
    world: World, session: NotebookSession, change: Callable[[World, NotebookSession], None]
) -> None:
    """Land ``change`` just before the session's re-check GET reaches the server."""
    world.transport.add(
        Fault(when=one("GET", "sessions", session.id), before=lambda: change(world, session))
    )


def _assert_skipped(world: World, session: NotebookSession, reason: str) -> None:
    assert deletes(world, session.id) == 0
    assert session.id in world.sim.sessions
    assert world.transport.matching("GET", f"/api/sessions/{session.id}"), "never re-checked"
    (intent,) = rows_of(world, session.id, AuditKind.INTENT)
    (outcome,) = rows_of(world, session.id, AuditKind.OUTCOME)
    assert outcome.intent_id == intent.id
    assert outcome.outcome is Outcome.SKIPPED_CHANGED
    assert reason in outcome.reason, outcome.reason


def _assert_deleted(world: World, session: NotebookSession) -> None:
    assert deletes(world, session.id) == 1
    assert outcomes(world, session.id) == [Outcome.EXECUTED]
