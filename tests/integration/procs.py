"""Real janitor processes for the multi-process tests: start, signal, stop, wait for conditions.

Every process runs ``python -m janitor`` in its own process group (so a signal reaches it and
anything it started), with an environment cleaned of ``JANITOR_*`` and systemd variables
except those the test sets, and its output in a log file under the test's ``tmp_path``.
:class:`Procs` is a context manager: on exit, every process still alive is killed (its whole
group, with SIGKILL), also when the test failed, so no janitor outlives its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.sim.jupyter import JupyterSim, SimServer
from janitor.store import Store
from tests.fakes.daemon import free_port
from tests.integration.crashpoints import CRASH_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")

#: Hang guard for waits in these tests: generous, never a performance assertion.
HANG_GUARD = 180.0

#: Variables a child must not inherit from the developer's shell or from systemd.
_SCRUBBED = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "JOURNAL_STREAM",
    "SENTRY_DSN",
    "LISTEN_FDS",
    "LISTEN_PID",
)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``JANITOR_*`` and systemd variables, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("JANITOR_") and key not in _SCRUBBED
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_until(
    predicate: Callable[[], T],
    *,
    what: str,
    timeout: float = HANG_GUARD,
    interval: float = 0.05,
    procs: Procs | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    ``timeout`` only guards against hangs. With ``procs``, fail early (with the logs) when one
    of its processes died unexpectedly.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if procs is not None:
            procs.check_alive()
        if time.monotonic() > deadline:
            detail = procs.describe() if procs is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{detail}")
        time.sleep(interval)


@dataclass
class Finished:
    """A one-shot command that ran to its end."""

    code: int
    stdout: str
    stderr: str


@dataclass
class JanitorProc:
    """One janitor process (the leader of its own process group)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    out_path: Path
    expect_death: bool = False
    signals: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.popen.pid

    @property
    def running(self) -> bool:
        """True until the process exited."""
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the process wrote to stderr (its log) so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def json_logs(self) -> list[dict[str, Any]]:
        """The JSON log lines (``log_format = "json"``); other lines are ignored."""
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group (nothing happens if it is gone)."""
        self.signals.append(sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> int | None:
        """SIGKILL the group and reap the process; return its exit status."""
        self.expect_death = True
        self.signal(signal.SIGKILL)
        return self.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the exit (SIGCONT first, in case it was stopped)."""
        self.expect_death = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = HANG_GUARD) -> int | None:
        """The exit status; SIGKILL the group when it does not exit within ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(10)
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout:.0f}s and was "
                f"killed\n--- log ---\n{self.log()[-4000:]}"
            ) from None


class Procs:
    """Starts janitor processes and guarantees that none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "procs"
        self.dir.mkdir(exist_ok=True)
        self.all: list[JanitorProc] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def start(
        self,
        config: Path,
        *args: str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> JanitorProc:
        """Start ``python -m janitor -c CONFIG ARGS...`` in a new process group.

        With ``JANITOR_TEST_CRASH_AT`` in ``env``, the CLI runs through
        ``tests.integration.crashpoints``, which injects the crash hooks.
        """
        name = name or f"janitor-{len(self.all)}"
        log_path = self.dir / f"{name}.log"
        out_path = self.dir / f"{name}.out"
        crashing = env is not None and CRASH_ENV in env
        module = "tests.integration.crashpoints" if crashing else "janitor"
        if crashing:  # the child runs in a temporary directory: find ``tests`` from here
            env = {**(env or {}), "PYTHONPATH": str(REPO_ROOT)}
        with log_path.open("wb") as err, out_path.open("wb") as out:
            popen = subprocess.Popen(  # the child keeps its own copies of the descriptors
                [sys.executable, "-m", module, "-c", str(config), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env(env),
                cwd=self.dir,
                start_new_session=True,
            )
        proc = JanitorProc(name=name, popen=popen, log_path=log_path, out_path=out_path)
        self.all.append(proc)
        return proc

    def run(
        self,
        config: Path,
        *args: str,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = HANG_GUARD,
    ) -> Finished:
        """Run a one-shot command (``sweep``, ``audit verify``) to its end."""
        proc = self.start(config, *args, name=name, env=env)
        proc.expect_death = True
        code = proc.wait(timeout)
        assert code is not None
        return Finished(code=code, stdout=proc.stdout(), stderr=proc.log())

    def by_pid(self, pid: int) -> JanitorProc:
        """The process with ``pid``."""
        for proc in self.all:
            if proc.pid == pid:
                return proc
        raise AssertionError(f"pid {pid} is none of ours: {[p.pid for p in self.all]}")

    def check_alive(self) -> None:
        """Fail (with the log) when a process died that was not meant to."""
        for proc in self.all:
            if not proc.expect_death and not proc.running:
                raise AssertionError(
                    f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}\n"
                    f"--- log ---\n{proc.log()[-4000:]}"
                )

    def describe(self) -> str:
        """The tail of every process's log, for failure messages."""
        parts = []
        for proc in self.all:
            state = "running" if proc.running else f"exited {proc.popen.returncode}"
            parts.append(f"--- {proc.name} (pid {proc.pid}, {state}) ---\n{proc.log()[-2000:]}")
        return "\n".join(parts)

    def cleanup(self) -> None:
        """SIGKILL every process group still alive and reap the processes."""
        for proc in self.all:
            if proc.running:
                proc.expect_death = True
                proc.signal(signal.SIGKILL)
        for proc in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
                proc.popen.wait(10)


def holder_pid(holder: str) -> int:
    """The pid inside a lease holder (``host:pid:random``)."""
    return int(holder.rsplit(":", 2)[1])


def iter_json_messages(proc: JanitorProc, logger: str | None = None) -> Iterator[dict[str, Any]]:
    """The JSON log records of ``proc`` (from ``logger`` only, when given)."""
    for record in proc.json_logs():
        if logger is None or record.get("logger") == logger:
            yield record


# --- scenario helpers shared by the replica and crash tests ------------------------------

#: One enforced policy: delete sessions idle for an hour with no connection.
POLICY_YAML = """\
policies:
  - name: idle-notebooks
    priority: 100
    match:
      state: [idle]
      idle_for: 1h
      max_connections: 0
    action: delete
    mode: enforce
"""


@dataclass(frozen=True)
class TargetSpec:
    """One ``[[targets]]`` entry pointing at a served simulator."""

    name: str
    base_url: str
    max_concurrency: int = 8
    requests_per_second: float = 2000.0


def janitor_toml(
    db_url: str,
    targets: list[TargetSpec],
    *,
    listen_port: int | None = None,
    lease_ttl: str = "3s",
    sweep_interval: str = "1s",
    sweep_jitter: str = "0s",
    token: str = "test-token",
) -> str:
    """A config for daemons and one-shot sweeps in these tests.

    The sweep timeout is long (a 1,000-session sweep outlasts a 1 s interval), the log is JSON
    (the tests read it), and the population-drop guard is off: a replica killed mid-sweep
    leaves memory of sessions its successor no longer lists, which is the point of the test.
    """
    lines = [
        f'database_url = "{db_url}"',
        f'sweep_interval = "{sweep_interval}"',
        f'sweep_jitter = "{sweep_jitter}"',
        'sweep_timeout = "300s"',
        f'lease_ttl = "{lease_ttl}"',
        f'listen = "127.0.0.1:{listen_port if listen_port is not None else free_port()}"',
        'log_format = "json"',
        'log_level = "INFO"',
    ]
    for target in targets:
        lines += [
            "",
            "[[targets]]",
            f'name = "{target.name}"',
            'provider = "jupyter"',
            f'base_url = "{target.base_url}"',
            f'token = "{token}"',
            f"max_concurrency = {target.max_concurrency}",
            f"requests_per_second = {target.requests_per_second}",
            "max_population_drop_percent = 100",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Trail:
    """The audit rows of one target, split the way the assertions need them."""

    intents: list[AuditEvent]
    outcomes: list[AuditEvent]

    @classmethod
    def load(cls, store: Store, target: str) -> Trail:
        """Read the target's intents and outcomes."""
        events = store.audit.events(target=target, kinds=["intent", "outcome"])
        return cls(
            intents=[e for e in events if e.kind is AuditKind.INTENT],
            outcomes=[e for e in events if e.kind is AuditKind.OUTCOME],
        )

    def outcomes_of(self, session_id: str) -> list[AuditEvent]:
        """Every outcome row of one session, in order."""
        return [o for o in self.outcomes if o.session_id == session_id]

    def count(self, outcome: Outcome) -> Counter[str]:
        """Outcome rows of one kind per session id."""
        return Counter(o.session_id or "" for o in self.outcomes if o.outcome is outcome)


def assert_trail_closed(store: Store, target: str) -> Trail:
    """No intent without a final outcome, intents in fencing order, the chain verifies.

    "Fencing order": an intent is committed only while its fencing token is current, and a
    takeover increments the token, so intents in commit (id) order have non-decreasing
    tokens: two holders never wrote intents for the same target interleaved.
    """
    assert store.audit.pending_intents(target) == []
    trail = Trail.load(store, target)
    closed = {o.intent_id for o in trail.outcomes if o.outcome is not Outcome.UNKNOWN}
    orphans = [i.id for i in trail.intents if i.id not in closed]
    assert orphans == [], f"intents without an outcome on {target}: {orphans}"
    tokens = [i.fencing_token for i in trail.intents]
    assert None not in tokens
    assert tokens == sorted(tokens, key=lambda t: t or 0), f"intents out of fencing order: {tokens}"
    verified = store.audit.verify()
    assert verified.ok, verified.problems
    return trail


def assert_deleted_once(sim: JupyterSim, ids: set[str]) -> None:
    """Every id got exactly one DELETE, and nothing else got one."""
    with sim.lock:
        deletes = dict(sim.deletes)
        left = set(sim.sessions)
    assert left.isdisjoint(ids), f"{len(left & ids)} sessions were not deleted"
    twice = {k: v for k, v in deletes.items() if v != 1}
    assert twice == {}, f"deleted more than once: {twice}"
    assert set(deletes) == ids


def deletes_so_far(sim: JupyterSim) -> int:
    """How many DELETE requests the simulator answered."""
    with sim.lock:
        return sum(sim.deletes.values())


def served_sim(servers: list[SimServer], sessions: int) -> tuple[JupyterSim, SimServer]:
    """A simulator with ``sessions`` sessions idle for 3h, served on loopback.

    The server is appended to ``servers`` so the test's fixture stops it.
    """
    sim = JupyterSim(token="test-token")
    for n in range(sessions):
        sim.add_session(f"work/idle-{n}.ipynb", idle_for=timedelta(hours=3))
    server = sim.serve()
    servers.append(server)
    return sim, server


def prepare_database(tmp_path: Path, db_url: str) -> None:
    """Create the schema and apply :data:`POLICY_YAML`, through the CLI (in-process)."""
    from tests.conftest import invoke

    config = tmp_path / "setup.toml"
    config.write_text(janitor_toml(db_url, []), encoding="utf-8")
    policies = tmp_path / "policies.yaml"
    policies.write_text(POLICY_YAML, encoding="utf-8")
    result = invoke("-c", str(config), "db", "upgrade")
    assert result.exit_code == 0, result.output
    result = invoke("-c", str(config), "policy", "apply", "-f", str(policies))
    assert result.exit_code == 0, result.output


def audit_verify_cli(config: Path) -> str:
    """``janitor audit verify`` (in-process); asserts success and returns its output."""
    from tests.conftest import invoke

    result = invoke("-c", str(config), "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "audit chain OK" in result.stdout
    return str(result.stdout)


def stop_servers(servers: list[SimServer]) -> None:
    """Stop simulator servers in parallel (each stop waits for its poll interval)."""
    threads = [threading.Thread(target=server.stop) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
