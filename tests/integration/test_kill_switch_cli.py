"""The kill switch end to end: ``janitor pause`` and ``janitor resume`` against a running daemon.

A real ``janitor run`` process sweeps the simulated Jupyter server over loopback every second;
the operator runs ``janitor pause`` and ``janitor resume`` (a separate process where the pause
must land while the daemon waits on the provider, else in-process through the same CLI: one
interpreter start less). The pause lands at an exact point of a sweep, with no sleep:

* during the sweep's listing: the simulator runs ``janitor pause`` (a real process) before it
  answers the ``GET api/sessions``, so the sweep decides on a listing it read while the pause
  committed.
  No warning (a grace policy's webhook warning) and no destructive call may start after it,
  in that sweep or the next; after ``janitor resume`` the next sweep warns and deletes.
* right after an intent is committed: the daemon stops itself there (the test hook
  ``JANITOR_TEST_CRASH_AT=stop:after_intent``, SIGSTOP), the operator pauses, the daemon is
  continued. The call whose intent was already written must not go out either: its intent
  is closed ``blocked`` and the provider sees neither its re-read nor its DELETE.

What is asserted is what the operator and the users see: the commands' output and exit
codes, the requests the provider received, the webhook's deliveries and the audit rows.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.sim.jupyter import SimServer
from janitor.store import Store
from tests.conftest import invoke
from tests.fakes.served import Hook, HookedSim, ServedWebhook, delete, listing, recheck
from tests.integration.procs import (
    Finished,
    JanitorProc,
    Procs,
    TargetSpec,
    Trail,
    assert_deleted_once,
    assert_trail_closed,
    audit_verify_cli,
    iter_json_messages,
    janitor_toml,
    wait_until,
)

TARGET = "notebooks"
REASON = "incident 7"

#: Notebooks idle for an hour are deleted at once; idle consoles are warned first (grace).
POLICIES = """\
policies:
  - name: warn-consoles
    priority: 10
    match: {kind: [console], state: [idle], idle_for: 1h}
    action: delete
    mode: enforce
    grace: 1h
  - name: idle-notebooks
    priority: 100
    match: {kind: [notebook], state: [idle], idle_for: 1h, max_connections: 0}
    action: delete
    mode: enforce
"""


@pytest.fixture
def dbview(db_url: str) -> Iterator[Store]:
    """The test's own view of the database the processes share."""
    opened = Store.open(db_url)
    yield opened
    opened.close()


@pytest.fixture
def webhook() -> Iterator[ServedWebhook]:
    """The warning channel the daemon posts to."""
    served = ServedWebhook()
    yield served
    served.close()


def _served(serve: list[SimServer]) -> tuple[HookedSim, SimServer]:
    sim = HookedSim(token="test-token")
    server = sim.serve()
    serve.append(server)
    return sim, server


def _prepare(tmp_path: Path, db_url: str, server: SimServer, webhook: ServedWebhook) -> Path:
    """The daemon's config (one action at a time, a lease no pause outlasts), schema, policies."""
    config = tmp_path / "janitor.toml"
    target = TargetSpec(TARGET, server.url + "/", max_concurrency=1)
    text = janitor_toml(db_url, [target], lease_ttl="60s", sweep_interval="1s")
    config.write_text(text + f'\n[notify]\nwebhook_url = "{webhook.url}"\n', encoding="utf-8")
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICIES, encoding="utf-8")
    for args in (("db", "upgrade"), ("policy", "apply", "-f", str(policies))):
        result = invoke("-c", str(config), *args)
        assert result.exit_code == 0, result.output
    return config


def _pause_process(procs: Procs, config: Path) -> Finished:
    """``janitor pause --reason REASON`` in its own process, as the operator types it."""
    return procs.run(config, "pause", "--reason", REASON, name="pause")


def _pause(config: Path) -> None:
    """``janitor pause --reason REASON`` (in-process)."""
    result = invoke("-c", str(config), "pause", "--reason", REASON)
    assert result.exit_code == 0, result.output
    assert "janitor is paused" in result.stdout


def _resume(config: Path) -> None:
    """``janitor resume`` (in-process: the same command, without a second interpreter start)."""
    result = invoke("-c", str(config), "resume")
    assert result.exit_code == 0, result.output
    assert "janitor resumed" in result.stdout


def _messages(daemon: JanitorProc) -> list[str]:
    """The messages of the daemon's JSON log, in order."""
    return [str(r.get("message", "")) for r in iter_json_messages(daemon)]


def _sweeps_finished(daemon: JanitorProc) -> int:
    """How many sweeps the daemon logged the end of."""
    return sum(m.startswith("sweep ") and " finished in " in m for m in _messages(daemon))


def _halted_by_the_pause(daemon: JanitorProc) -> list[str]:
    """The daemon's log lines saying a sweep stopped acting because of this pause."""
    return [m for m in _messages(daemon) if "janitor is paused by" in m and REASON in m]


def _stopped(pid: int) -> bool:
    """True while the process is stopped (SIGSTOP): state ``T`` in /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def _one(store: Store, kind: AuditKind) -> AuditEvent:
    [row] = store.audit.events(kinds=[kind])
    return row


def test_a_pause_landing_in_the_listing_stops_every_warning_and_delete_until_resume(
    procs: Procs,
    serve: list[SimServer],
    webhook: ServedWebhook,
    dbview: Store,
    tmp_path: Path,
    db_url: str,
) -> None:
    sim, server = _served(serve)
    notebook = sim.add_session("work/old.ipynb", idle_for=timedelta(hours=3))
    console = sim.add_session("console-1", kind="console", idle_for=timedelta(hours=3))
    config = _prepare(tmp_path, db_url, server, webhook)
    paused: list[Finished] = []
    sim.hook(Hook(when=listing, before=lambda: paused.append(_pause_process(procs, config))))

    daemon = procs.start(config, "run", name="daemon")
    # the sweep that listed while the pause committed, and the next one, both end paused
    wait_until(lambda: _sweeps_finished(daemon) >= 2, what="two paused sweeps", procs=procs)
    [command] = paused  # it ran inside the first listing
    assert command.code == 0, command.stderr
    assert "janitor is paused" in command.stdout
    assert sim.calls(delete) == [], "no destructive call after the pause"
    assert sim.calls(recheck) == [], "no action even started"
    assert webhook.events("warning") == [], "no warning is delivered while paused"
    assert dbview.audit.events(kinds=["intent", "warn", "outcome"]) == []
    assert len(_halted_by_the_pause(daemon)) >= 2, "every sweep says why it did not act"

    _resume(config)

    def acted() -> bool:
        with sim.lock:
            gone = notebook.id not in sim.sessions
        return gone and len(webhook.events("warning")) == 1

    wait_until(acted, what="the first sweep after resume to warn and delete", procs=procs)
    assert daemon.stop() == 0, daemon.log()[-3000:]

    assert_deleted_once(sim, {notebook.id})
    assert console.id in sim.sessions, "warned: its grace has just begun"
    [warning] = webhook.events("warning")
    assert (warning["session_id"], warning["policy"]) == (console.id, "warn-consoles")
    pause, resume = _one(dbview, AuditKind.PAUSE), _one(dbview, AuditKind.RESUME)
    assert REASON in pause.reason
    trail = assert_trail_closed(dbview, TARGET)
    [warned] = dbview.audit.events(kinds=["warn"])
    assert (pause.id or 0) < (resume.id or 0) < (warned.id or 0)
    assert all((resume.id or 0) < (i.id or 0) for i in trail.intents)
    assert [o.outcome for o in trail.outcomes] == [Outcome.EXECUTED]
    audit_verify_cli(config)


def test_a_pause_right_after_an_intent_was_written_blocks_that_call(
    procs: Procs,
    serve: list[SimServer],
    webhook: ServedWebhook,
    dbview: Store,
    tmp_path: Path,
    db_url: str,
) -> None:
    sim, server = _served(serve)
    ids = {
        sim.add_session(f"work/idle-{n}.ipynb", idle_for=timedelta(hours=3)).id for n in range(3)
    }
    config = _prepare(tmp_path, db_url, server, webhook)

    daemon = procs.start(
        config, "run", name="daemon", env={"JANITOR_TEST_CRASH_AT": "stop:after_intent"}
    )
    wait_until(
        lambda: _stopped(daemon.pid), what="the daemon to stop after its intent", procs=procs
    )
    [intent] = dbview.audit.pending_intents(TARGET)
    assert sim.calls(recheck) == [], "stopped between the intent and the re-check"

    _pause(config)
    daemon.signal(signal.SIGCONT)

    def closed() -> list[AuditEvent]:
        return [o for o in Trail.load(dbview, TARGET).outcomes if o.intent_id == intent.id]

    [outcome] = wait_until(closed, what="the intent to be closed", procs=procs)
    wait_until(lambda: _sweeps_finished(daemon) >= 2, what="a whole paused sweep", procs=procs)
    assert outcome.outcome is Outcome.BLOCKED
    assert "janitor is paused by" in outcome.reason
    assert REASON in outcome.reason
    assert sim.calls(delete) == [], "the call whose intent was written did not go out"
    assert sim.calls(recheck) == [], "it was not even re-read"
    assert [i.id for i in Trail.load(dbview, TARGET).intents] == [intent.id], "no other intent"

    _resume(config)

    def done() -> bool:
        with sim.lock:
            if sim.sessions:
                return False
        return not dbview.audit.pending_intents(TARGET)

    wait_until(done, what="the sweeps after resume to delete everything", procs=procs)
    assert daemon.stop() == 0, daemon.log()[-3000:]
    assert_deleted_once(sim, ids)
    trail = assert_trail_closed(dbview, TARGET)
    resume = _one(dbview, AuditKind.RESUME)
    executed = [o for o in trail.outcomes if o.outcome is Outcome.EXECUTED]
    assert len(executed) == len(ids)
    assert all((resume.id or 0) < (o.id or 0) for o in executed), "deleted only after resume"
    audit_verify_cli(config)
