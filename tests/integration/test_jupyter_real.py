"""The jupyter provider against a real Jupyter Server with ipykernel (marker ``jupyter``).

Two servers start once for the module, in parallel (each takes seconds to import):

* ``stock``: a default jupyter_server on ``/``;
* ``aidp``: answers under an AIDP-shaped ``base_url`` and runs with
  ``use_pending_kernels`` and a kernelspec whose executable is missing: the one way found to
  make a real server report ``execution_state: dead`` (a kernel whose start failed, after a
  client tried to connect). A kernel killed with SIGKILL is never reported dead: the server
  restarts it into ``starting`` (see ``test_a_killed_kernel_comes_back_starting``), removes it
  with its session once restarts are exhausted, or keeps reporting ``idle`` with autorestart
  off. ``starting`` is reported only if the server's activity watcher has reconnected to the
  restarted kernel before that kernel announces itself; otherwise the server keeps reporting
  the crashed kernel's last state (jupyter-server/jupyter_server#1395). The harness's kernel
  launcher (:data:`~tests.integration.jupyter_server.KERNEL_LAUNCHER`) gives it that time.

The tests play the users (sessions over REST, code over the kernel websocket) and drive janitor
through its CLI (config file, SQLite database, ``policy apply``, ``sweep``, ``audit list``), or
through :func:`janitor.sweep.run_sweep` where a request must be intercepted. "Idle past
``idle_for``" is real time on the server's clock: policies use ``idle_for: 2s`` and the tests
wait until the kernel's own ``last_activity`` is that old. Each test leaves its server empty.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websocket
from pydantic import SecretStr

from janitor.clock import SystemClock
from janitor.errors import AuthFailed
from janitor.model import Listing
from janitor.providers.jupyter import JupyterConfig, JupyterProvider
from janitor.runtime import Runtime
from janitor.settings import load_config
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import invoke
from tests.integration.jupyter_server import (
    JupyterServer,
    broken_kernelspec,
    start_all,
    stop_all,
)

pytestmark = pytest.mark.jupyter

AIDP_PREFIX = "/20260430/aiDataPlatforms/x/workspaces/y/notebook/"
IDLE_FOR = timedelta(seconds=2)

IDLE_POLICY = """
policies:
  - name: idle-kernels
    priority: 100
    match:
      state: [idle]
      idle_for: 2s
      max_connections: 0
    action: delete
    mode: enforce
"""

DEAD_POLICY = """
policies:
  - name: dead-kernels
    priority: 10
    match:
      state: [dead]
    action: delete
    mode: enforce
"""

PENDING_POLICY = """
policies:
  - name: stuck-starting
    priority: 50
    match:
      state: [pending]
      idle_for: 2s
      max_connections: 0
    action: delete
    mode: enforce
"""


@dataclass
class Servers:
    """The module's two servers."""

    stock: JupyterServer
    aidp: JupyterServer


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Start both servers in parallel; stop them (and their kernels) at the end."""
    started = start_all(
        [
            (tmp_path_factory.mktemp("jupyter-stock"), {}),
            (
                tmp_path_factory.mktemp("jupyter-aidp"),
                {
                    "base_path": AIDP_PREFIX,
                    "extra_args": ("--MappingKernelManager.use_pending_kernels=True",),
                    "kernelspecs": {"broken": broken_kernelspec()},
                    # a server that saw a failed kernel start hangs in its own shutdown
                    "stop_grace": 2.0,
                },
            ),
        ]
    )
    try:
        yield Servers(*started)
    finally:
        stop_all(started)


def _fresh(server: JupyterServer) -> Iterator[JupyterServer]:
    server.clear()
    assert server.sessions() == []
    assert server.kernels() == []
    try:
        yield server
    finally:
        server.clear()


@pytest.fixture
def stock(servers: Servers) -> Iterator[JupyterServer]:
    """The default server, empty at the start and the end of the test."""
    yield from _fresh(servers.stock)


@pytest.fixture
def aidp(servers: Servers) -> Iterator[JupyterServer]:
    """The server under the AIDP-shaped prefix, empty at the start and the end of the test."""
    yield from _fresh(servers.aidp)


class Janitor:
    """janitor's CLI against one jupyter target, with its own config file and database."""

    def __init__(
        self,
        home: Path,
        base_url: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
    ) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{home / 'janitor.db'}"
        secret = f'token_file = "{token_file}"' if token_file else f'token = "{token}"'
        self.config = home / "janitor.toml"
        self.config.write_text(
            f'database_url = "{self.db_url}"\n\n'
            "[[targets]]\n"
            'name = "notebooks"\n'
            'provider = "jupyter"\n'
            f'base_url = "{base_url}"\n'
            f"{secret}\n",
            encoding="utf-8",
        )
        self.policies = home / "policies.yaml"
        self.ok("db", "upgrade")

    def __call__(self, *args: str) -> Any:
        """Run a janitor command with this config."""
        return invoke("-c", str(self.config), *args)

    def ok(self, *args: str) -> Any:
        """Run a command that must succeed."""
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result

    def apply(self, document: str) -> None:
        """Store a policy document."""
        self.policies.write_text(document, encoding="utf-8")
        self.ok("policy", "apply", "-f", str(self.policies))

    def sweep(self, *args: str, expect: int = 0) -> dict[str, Any]:
        """One sweep; returns the JSON summary of the one target."""
        result = self("sweep", "-o", "json", *args)
        assert result.exit_code == expect, result.output
        summary: dict[str, Any] = json.loads(result.stdout)["targets"][0]
        return summary

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail, oldest first."""
        rows: list[dict[str, Any]] = json.loads(self.ok("audit", "list", "-o", "json").stdout)
        return rows

    def outcomes(self) -> dict[str, str]:
        """Session id → outcome of every action row (executed, skipped_changed, ...)."""
        return {
            r["session_id"]: r["outcome"]
            for r in self.audit()
            if r["kind"] == "outcome" and r["outcome"]
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


def ids(items: list[dict[str, Any]]) -> set[str]:
    """The ids of REST models."""
    return {item["id"] for item in items}


# --- deciding on real kernels ---------------------------------------------------------------


def test_enforce_sweep_deletes_the_idle_session_and_spares_busy_and_starting(
    stock: JupyterServer, tmp_path: Path
) -> None:
    idle = stock.create_session("work/idle.ipynb")
    ran = stock.execute(idle["kernel"]["id"], "import sys; print(sys.executable)")
    assert ran.errors == []
    assert ran.stdout.strip() == sys.executable, "python3 runs this environment's ipykernel"
    busy = stock.create_session("work/busy.ipynb")
    stock.execute(busy["kernel"]["id"], "import time; time.sleep(300)", wait=False)
    starting = stock.create_session("work/starting.ipynb")  # no client ever connects
    # both kernels that ran code are idle for longer than idle_for by their last_activity;
    # only its state protects the busy one
    wait_idle_past(stock, [idle["kernel"]["id"], busy["kernel"]["id"]], IDLE_FOR)
    assert stock.wait_settled(idle["kernel"]["id"])["execution_state"] == "idle"
    assert stock.kernel(busy["kernel"]["id"])["execution_state"] == "busy"  # type: ignore[index]
    assert stock.kernel(starting["kernel"]["id"])["execution_state"] == "starting"  # type: ignore[index]

    janitor = Janitor(tmp_path, stock.base_url, token=stock.token)
    janitor.apply(IDLE_POLICY)
    summary = janitor.sweep()

    assert summary["sessions"] == {"idle": 1, "busy": 1, "pending": 1}
    assert summary["outcomes"] == {"executed": 1}
    assert ids(stock.sessions()) == {busy["id"], starting["id"]}
    assert stock.kernel(idle["kernel"]["id"]) is None, "deleting the session shut its kernel"
    assert stock.kernel(busy["kernel"]["id"])["execution_state"] == "busy"  # type: ignore[index]
    rows = janitor.audit()
    assert janitor.outcomes() == {idle["id"]: "executed"}
    skipped = {r["session_id"]: r["reason"] for r in rows if r["kind"] == "skip"}
    assert "state busy" in skipped[busy["id"]]
    assert "state pending" in skipped[starting["id"]]
    intent = next(r for r in rows if r["kind"] == "intent")
    assert intent["session_id"] == idle["id"]
    assert intent["session_name"] == "idle.ipynb"


def test_a_killed_kernel_comes_back_starting_and_only_a_pending_policy_removes_it(
    stock: JupyterServer, tmp_path: Path
) -> None:
    session = stock.create_session("work/crashy.ipynb")
    kernel_id = session["kernel"]["id"]
    pid = int(stock.execute(kernel_id, "import os; print(os.getpid())").stdout)
    before = stock.wait_settled(kernel_id)
    os.kill(pid, signal.SIGKILL)  # the kernel process this test started, e.g. OOM-killed
    stock.wait_for(kernel_id, "starting")  # the server's restarter brings it back
    restarted = stock.wait_settled(kernel_id, quiet=1.0)
    assert restarted["execution_state"] == "starting", "and no client means it stays starting"
    assert restarted["last_activity"] > before["last_activity"]
    janitor = Janitor(tmp_path, stock.base_url, token=stock.token)
    janitor.apply(IDLE_POLICY)
    wait_idle_past(stock, [kernel_id], IDLE_FOR)

    assert janitor.sweep()["outcomes"] == {}, "a starting kernel is not idle"
    assert ids(stock.sessions()) == {session["id"]}
    assert stock.kernel(kernel_id) == restarted

    janitor.apply(PENDING_POLICY)  # an operator's rule for kernels stuck in starting
    assert janitor.sweep()["outcomes"] == {"executed": 1}
    assert stock.sessions() == []


def test_polling_creates_no_activity(stock: JupyterServer, tmp_path: Path) -> None:
    session = stock.create_session("work/watched.ipynb")
    kernel_id = session["kernel"]["id"]
    stock.execute(kernel_id, "x = 1")
    before = stock.wait_settled(kernel_id)
    server_before = stock.status()["last_activity"]
    config = JupyterConfig.model_validate(
        {
            "name": "notebooks",
            "provider": "jupyter",
            "base_url": stock.base_url,
            "token": stock.token,
        }
    )

    async def poll() -> list[Listing]:
        provider = JupyterProvider.connect(config, SystemClock())
        try:
            listings = []
            for _ in range(3):
                listing = await provider.list_sessions()
                listings.append(listing)
                for record in listing.sessions:
                    assert await provider.get_session(record) == record
            return listings
        finally:
            await provider.aclose()

    listings = asyncio.run(poll())
    janitor = Janitor(tmp_path, stock.base_url, token=stock.token)
    janitor.sweep("--dry-run")
    janitor.sweep()

    assert [[r.id for r in listing.sessions] for listing in listings] == [[session["id"]]] * 3
    assert stock.kernel(kernel_id) == before, "janitor's reads moved the kernel"
    assert stock.status()["last_activity"] == server_before, "janitor kept the server alive"
    # the control: the same read without no_track_activity does count as activity
    stock.request("GET", "api/sessions", track=True)
    assert stock.status()["last_activity"] > server_before


class ActivityBeforeRecheck(httpx.AsyncBaseTransport):
    """The real server, reached over HTTP; right before janitor re-reads ``session_id`` (its
    re-check, after the listing and the intent row), a user runs code on that kernel."""

    def __init__(self, server: JupyterServer, session_id: str, kernel_id: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.server = server
        self.recheck_path = f"api/sessions/{session_id}"
        self.kernel_id = kernel_id
        self.fired = False
        self.sent: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request, running code on the kernel first at the re-check."""
        self.sent.append((request.method, request.url.path))
        if (
            not self.fired
            and request.method == "GET"
            and request.url.path.endswith(self.recheck_path)
        ):
            self.fired = True
            await asyncio.to_thread(self.server.execute, self.kernel_id, "y = 2")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the real transport."""
        await self.inner.aclose()


def test_activity_between_listing_and_delete_gives_skipped_changed(
    stock: JupyterServer, tmp_path: Path
) -> None:
    session = stock.create_session("work/late-user.ipynb")
    kernel_id = session["kernel"]["id"]
    stock.execute(kernel_id, "x = 1")
    stock.wait_settled(kernel_id)
    wait_idle_past(stock, [kernel_id], IDLE_FOR)
    janitor = Janitor(tmp_path, stock.base_url, token=stock.token)
    janitor.apply(IDLE_POLICY)

    async def sweep(transport: httpx.AsyncBaseTransport | None) -> SweepReport:
        rt = Runtime.build(
            load_config(str(janitor.config)),
            store=Store.open(janitor.db_url),
            transports={"notebooks": transport} if transport else None,
        )
        try:
            return await run_sweep(rt)
        finally:
            await rt.aclose()

    transport = ActivityBeforeRecheck(stock, session["id"], kernel_id)
    report = asyncio.run(sweep(transport))

    assert transport.fired
    assert report.targets[0].outcomes == {"skipped_changed": 1}
    assert not [m for m, _ in transport.sent if m == "DELETE"], "nothing was deleted"
    assert ids(stock.sessions()) == {session["id"]}
    rows = janitor.audit()
    intent = next(r for r in rows if r["kind"] == "intent")
    outcome = next(r for r in rows if r["kind"] == "outcome")
    assert intent["id"] < outcome["id"]
    assert outcome["intent_id"] == intent["id"]
    assert outcome["outcome"] == "skipped_changed"
    assert "last_activity" in outcome["reason"]

    # once the user is gone for idle_for again, the next sweep deletes it
    wait_idle_past(stock, [kernel_id], IDLE_FOR)
    report = asyncio.run(sweep(None))
    assert report.targets[0].outcomes == {"executed": 1}
    assert stock.sessions() == []


# --- auth -------------------------------------------------------------------------------------


def test_a_wrong_token_is_a_failed_listing_never_an_empty_one(
    stock: JupyterServer, tmp_path: Path
) -> None:
    session = stock.create_session("work/protected.ipynb")
    janitor = Janitor(tmp_path, stock.base_url, token="wrong-token-0123456789")
    janitor.apply(IDLE_POLICY)

    summary = janitor.sweep(expect=1)

    assert summary["listed"] is False
    assert "AuthFailed" in summary["error"] or "403" in summary["error"]
    row = janitor.audit()[-1]
    assert row["kind"] == "list_failed"
    assert row["http_status"] == 403
    assert "wrong-token" not in json.dumps(janitor.audit())
    assert ids(stock.sessions()) == {session["id"]}


def _token_file_provider(server: JupyterServer, token_file: Path) -> JupyterProvider:
    config = JupyterConfig.model_validate(
        {
            "name": "notebooks",
            "provider": "jupyter",
            "base_url": server.base_url,
            "token_file": str(token_file),
        }
    )
    return JupyterProvider.connect(config, SystemClock())


def test_a_rotated_token_file_is_picked_up(stock: JupyterServer, tmp_path: Path) -> None:
    session = stock.create_session("work/rotation.ipynb")
    token_file = tmp_path / "jupyter-token"
    token_file.write_text("an-old-token\n", encoding="utf-8")

    async def scenario() -> Listing:
        provider = _token_file_provider(stock, token_file)
        try:
            with pytest.raises(AuthFailed) as failed:
                await provider.list_sessions()
            assert failed.value.status == 403
            token_file.write_text(stock.token + "\n", encoding="utf-8")  # the operator rotates
            return await provider.list_sessions()
        finally:
            await provider.aclose()

    listing = asyncio.run(scenario())
    assert [r.id for r in listing.sessions] == [session["id"]]


def test_the_token_file_is_reread_after_a_403(stock: JupyterServer, tmp_path: Path) -> None:
    session = stock.create_session("work/reread.ipynb")
    token_file = tmp_path / "jupyter-token"
    stale = "0" * len(stock.token)
    token_file.write_text(stale, encoding="utf-8")

    async def scenario() -> Listing:
        provider = _token_file_provider(stock, token_file)
        try:
            with pytest.raises(AuthFailed):
                await provider.list_sessions()
            # rotated in place: same size, and the mtime put back, so only the 403 tells
            # janitor that the file must be read again
            stat = token_file.stat()
            token_file.write_text(stock.token, encoding="utf-8")
            os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            assert token_file.stat().st_mtime_ns == stat.st_mtime_ns
            return await provider.list_sessions()
        finally:
            await provider.aclose()

    listing = asyncio.run(scenario())
    assert [r.id for r in listing.sessions] == [session["id"]]


def test_a_static_token_is_not_retried_and_never_leaks(
    stock: JupyterServer, tmp_path: Path
) -> None:
    config = JupyterConfig.model_validate(
        {
            "name": "notebooks",
            "provider": "jupyter",
            "base_url": stock.base_url,
            "token": SecretStr("not-the-token-4242"),
        }
    )

    async def scenario() -> str:
        provider = JupyterProvider.connect(config, SystemClock())
        try:
            with pytest.raises(AuthFailed) as failed:
                await provider.list_sessions()
            return str(failed.value)
        finally:
            await provider.aclose()

    message = asyncio.run(scenario())
    assert "403" in message
    assert "not-the-token" not in message


# --- the AIDP-shaped server -------------------------------------------------------------------


def test_base_url_with_a_path_prefix(aidp: JupyterServer, tmp_path: Path) -> None:
    assert aidp.base_url.endswith(AIDP_PREFIX)
    session = aidp.create_session("workspace/prefixed.ipynb")
    kernel_id = session["kernel"]["id"]
    aidp.execute(kernel_id, "x = 1")
    aidp.wait_settled(kernel_id)
    wait_idle_past(aidp, [kernel_id], IDLE_FOR)
    # configured without the trailing slash, as people write it
    janitor = Janitor(tmp_path / "right", aidp.base_url.rstrip("/"), token=aidp.token)
    janitor.apply(IDLE_POLICY)

    assert janitor.sweep()["outcomes"] == {"executed": 1}
    assert aidp.sessions() == []
    assert janitor.outcomes() == {session["id"]: "executed"}

    # the same server without the prefix: a failed listing (404), not an empty one
    root = aidp.base_url[: -len(AIDP_PREFIX)] + "/"
    wrong = Janitor(tmp_path / "wrong", root, token=aidp.token)
    summary = wrong.sweep(expect=1)
    assert summary["listed"] is False
    row = wrong.audit()[-1]
    assert row["kind"] == "list_failed"
    assert row["http_status"] == 404


def test_dead_kernels_are_deleted_by_a_dead_policy(aidp: JupyterServer, tmp_path: Path) -> None:
    dead_session = aidp.create_session("workspace/broken.ipynb", kernel="broken")
    dead_kernel = aidp.start_kernel("broken")
    never_opened = aidp.create_session("workspace/unopened.ipynb", kernel="broken")
    for kernel_id in (dead_session["kernel"]["id"], dead_kernel["id"]):
        assert aidp.kernel(kernel_id)["execution_state"] == "starting"  # type: ignore[index]
        # a notebook tab tries to connect: the server answers 500 and marks the kernel dead
        with pytest.raises(websocket.WebSocketBadStatusException):
            aidp.connect(kernel_id).close()
        model = aidp.wait_for(kernel_id, "dead")
        assert "No such file" in model["reason"]
    unopened_kernel = aidp.kernel(never_opened["kernel"]["id"])
    assert unopened_kernel is not None
    assert unopened_kernel["execution_state"] == "starting"

    janitor = Janitor(tmp_path, aidp.base_url, token=aidp.token)
    janitor.apply(DEAD_POLICY)
    summary = janitor.sweep()

    assert summary["sessions"] == {"dead": 2, "pending": 1}
    assert summary["outcomes"] == {"executed": 2}
    assert janitor.outcomes() == {dead_session["id"]: "executed", dead_kernel["id"]: "executed"}
    assert ids(aidp.sessions()) == {never_opened["id"]}
    assert ids(aidp.kernels()) == {never_opened["kernel"]["id"]}
    kinds = {r["session_id"]: r["session_kind"] for r in janitor.audit() if r["kind"] == "intent"}
    assert kinds == {dead_session["id"]: "notebook", dead_kernel["id"]: "kernel"}
