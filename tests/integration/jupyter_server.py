"""A real Jupyter Server with ipykernel, started on a free loopback port for integration tests.

:meth:`JupyterServer.start` launches ``python -m jupyter_server`` (this interpreter, so the
venv's jupyter_server and ipykernel) with a random token, a private root directory and private
``JUPYTER_*``/``IPYTHONDIR``/``TMPDIR`` directories, so neither the user's configuration nor
system-wide Jupyter config files take part (``JUPYTER_NO_CONFIG``). The ``python3`` kernelspec
is written into a directory first on ``JUPYTER_PATH`` and runs this interpreter's ipykernel
(through :data:`KERNEL_LAUNCHER`: a kernel the server restarts announces itself only once the
server had time to reconnect to it).
Servers start in parallel (:func:`start_all`), and without ``rfc3987_syntax`` (an optional
jsonschema helper that compiles grammars for seconds at import): about 1 s instead of 6.
:meth:`JupyterServer.stop` shuts the server down (SIGTERM, SIGKILL after a grace) and then
kills any kernel process it left behind; should pytest itself be killed, a parent-death signal
(Linux) stops the server, and ipykernel exits with its parent: no process outlives the tests.

The helpers play the user's part: they create sessions and kernels over REST and run code on a
kernel over its websocket channel (the Jupyter messaging protocol, as a browser tab does). Every
helper request carries ``no_track_activity=1`` so that the helpers themselves never move the
server-wide ``last_activity``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import websocket

from tests.fakes.daemon import free_port

NO_TRACK = {"no_track_activity": "1"}
START_TIMEOUT = 60.0  # hang guard for the server to answer /api/status
CALL_TIMEOUT = 30.0  # hang guard for one REST call or websocket read
STOP_GRACE = 10.0  # SIGTERM, then SIGKILL after this many seconds


#: Runs in the server's process before it becomes jupyter_server: on Linux, ask the kernel to
#: send SIGTERM when the test process dies (even by SIGKILL), so no server outlives pytest;
#: its kernels follow it (ipykernel exits when its parent does).
LAUNCHER = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass  # not Linux: stop() still ends the server
if os.getppid() != int(os.environ["JANITOR_TEST_PARENT_PID"]):
    sys.exit("the test process is gone")
os.execv(sys.executable, [sys.executable, "-m", "jupyter_server", *sys.argv[1:]])
"""


#: How long a restarted kernel waits between binding its sockets and announcing itself; the
#: server's IOPub subscribers retry their connection every 0.1-0.2 s (libzmq's reconnect
#: interval and its jitter), so this leaves them several attempts even on a loaded machine.
RESTART_ANNOUNCE_DELAY = 1.5

#: The ``python3`` kernel: ipykernel's own launcher, except that a kernel started again under
#: the same connection file (the server's restarter bringing back a crashed kernel, on the same
#: ports) sleeps before ``kernel.start()``, which publishes its one ``status: starting``.
#:
#: Why: jupyter_server learns a kernel's ``execution_state`` only from the IOPub messages its
#: activity watcher receives. After a crash, that watcher's SUB socket keeps retrying the old
#: port; the new ipykernel binds it and publishes ``starting`` 0.1-0.4 s later (measured here),
#: and IOPub replays nothing to a subscriber that connects after that. When the watcher loses
#: that race (a late retry, a busy machine) the server keeps reporting the dead kernel's last
#: state (``idle``, ``busy``) for good, as in jupyter-server/jupyter_server#1395. A real kernel
#: with a heavier environment takes seconds to start; without this delay the outcome of a
#: restart depended on scheduling (the tests run before, the machine's load), not on the test.
KERNEL_LAUNCHER = """
import os, sys, time
from pathlib import Path

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]  # as ipykernel_launcher does

from ipykernel.kernelapp import IPKernelApp


class TestKernelApp(IPKernelApp):
    def start(self):
        started = Path(self.abs_connection_file + ".started")
        if started.exists():  # a restart: let the server's watchers reconnect first
            time.sleep(float(os.environ["JANITOR_TEST_RESTART_ANNOUNCE_DELAY"]))
        started.touch()
        super().start()


TestKernelApp.launch_instance()
"""


def python_kernelspec() -> dict[str, Any]:
    """The ``python3`` kernelspec, bound to this interpreter's ipykernel."""
    return {
        "argv": [sys.executable, "-c", KERNEL_LAUNCHER, "-f", "{connection_file}"],
        "env": {"JANITOR_TEST_RESTART_ANNOUNCE_DELAY": str(RESTART_ANNOUNCE_DELAY)},
        "display_name": "Python 3 (janitor tests)",
        "language": "python",
        "metadata": {"debugger": False},
    }


def broken_kernelspec() -> dict[str, Any]:
    """A kernelspec whose executable does not exist: its kernels fail to start."""
    return {
        "argv": ["/nonexistent/janitor-test/python", "-f", "{connection_file}"],
        "display_name": "Broken (janitor tests)",
        "language": "python",
    }


@dataclass
class Execution:
    """What a kernel printed while running one ``execute_request``."""

    stdout: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class JupyterServer:
    """A running ``jupyter_server`` subprocess and helpers that act like its users."""

    base_url: str  # http://127.0.0.1:PORT/<base path>/, with a trailing slash
    token: str
    process: subprocess.Popen[bytes]
    home: Path
    log_path: Path
    options: dict[str, Any] = field(default_factory=dict)

    # --- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(cls, home: Path, **options: Any) -> JupyterServer:
        """Launch one server (see :meth:`launch`) and wait until it answers."""
        return start_all([(home, options)])[0]

    @classmethod
    def launch(
        cls,
        home: Path,
        *,
        base_path: str = "/",
        extra_args: tuple[str, ...] = (),
        kernelspecs: dict[str, dict[str, Any]] | None = None,
        stop_grace: float = STOP_GRACE,
    ) -> JupyterServer:
        """Start ``python -m jupyter_server`` under ``home``; :meth:`wait_ready` waits for it.

        ``stop_grace`` is how long :meth:`stop` waits after SIGTERM before it kills.
        """
        specs = {"python3": python_kernelspec(), **(kernelspecs or {})}
        env = _private_environment(home, specs)
        base_path = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        token = uuid.uuid4().hex
        port = free_port()
        log_path = home / f"server-{port}.log"
        args = [
            sys.executable,
            "-c",
            LAUNCHER,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={home / 'root'}",
            f"--ServerApp.base_url={base_path}",
            "--allow-root",
            *extra_args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=home,
            )
        return cls(
            base_url=f"http://127.0.0.1:{port}{base_path}",
            token=token,
            process=process,
            home=home,
            log_path=log_path,
            options={
                "base_path": base_path,
                "extra_args": extra_args,
                "kernelspecs": kernelspecs,
                "stop_grace": stop_grace,
            },
        )

    def wait_ready(self) -> bool:
        """True once ``GET api/status`` answers; False if the server exited (port taken?)."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with self._client(timeout=2.0) as client:
                    if client.get("api/status", params=NO_TRACK).status_code == 200:
                        return True
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"jupyter_server did not answer in {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and every kernel process it started; idempotent."""
        stop_all([self])

    def terminate(self) -> list[int]:
        """Ask the server to shut down (SIGTERM); return its kernel processes' ids."""
        kernels = _children(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return kernels

    def reap(self, kernels: list[int]) -> None:
        """Wait for the server to exit (SIGKILL after a grace), then kill leftover kernels."""
        try:
            self.process.wait(self.options.get("stop_grace", STOP_GRACE))
        except subprocess.TimeoutExpired:
            # jupyter_server can hang in shutdown (e.g. after a kernel failed to start).
            self.process.kill()
            self.process.wait(STOP_GRACE)
        for pid in kernels:
            _kill_if_kernel(pid)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server's log, for failure messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- REST ----------------------------------------------------------------------------

    def _client(self, timeout: float = CALL_TIMEOUT) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"token {self.token}"},
            timeout=timeout,
            trust_env=False,
        )

    def request(self, method: str, path: str, *, track: bool = False, **kw: Any) -> httpx.Response:
        """One REST call; ``no_track_activity=1`` unless ``track``."""
        params = dict(kw.pop("params", {}))
        if not track:
            params.update(NO_TRACK)
        with self._client() as client:
            return client.request(method, path, params=params, **kw)

    def _ok(self, method: str, path: str, **kw: Any) -> Any:
        response = self.request(method, path, **kw)
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    def create_session(self, path: str, *, kernel: str = "python3") -> dict[str, Any]:
        """Open a notebook session with a new kernel (``POST api/sessions``)."""
        body = {"path": path, "type": "notebook", "name": path.rsplit("/", 1)[-1]}
        model: dict[str, Any] = self._ok(
            "POST", "api/sessions", json={**body, "kernel": {"name": kernel}}
        )
        return model

    def start_kernel(self, name: str = "python3") -> dict[str, Any]:
        """Start a kernel that no session references (``POST api/kernels``)."""
        model: dict[str, Any] = self._ok("POST", "api/kernels", json={"name": name})
        return model

    def sessions(self) -> list[dict[str, Any]]:
        """``GET api/sessions``."""
        models: list[dict[str, Any]] = self._ok("GET", "api/sessions")
        return models

    def kernels(self) -> list[dict[str, Any]]:
        """``GET api/kernels``."""
        models: list[dict[str, Any]] = self._ok("GET", "api/kernels")
        return models

    def kernel(self, kernel_id: str) -> dict[str, Any] | None:
        """One kernel's model, or None when it does not exist."""
        response = self.request("GET", f"api/kernels/{kernel_id}")
        if response.status_code == 404:
            return None
        model: dict[str, Any] = response.json()
        return model

    def status(self) -> dict[str, Any]:
        """``GET api/status``: the server-wide ``last_activity``."""
        model: dict[str, Any] = self._ok("GET", "api/status")
        return model

    def clear(self) -> None:
        """Delete every session and kernel (between tests); busy kernels are interrupted first
        so that their shutdown does not wait for the running code."""
        for kernel in self.kernels():
            if kernel["execution_state"] == "busy":
                self.request("POST", f"api/kernels/{kernel['id']}/interrupt")
        for session in self.sessions():
            self.request("DELETE", f"api/sessions/{session['id']}")
        for kernel in self.kernels():
            self.request("DELETE", f"api/kernels/{kernel['id']}")

    def wait_for(self, kernel_id: str, state: str) -> dict[str, Any]:
        """Poll until the kernel reports ``execution_state == state``."""
        deadline = time.monotonic() + CALL_TIMEOUT
        model = None
        while time.monotonic() < deadline:
            model = self.kernel(kernel_id)
            if model is not None and model["execution_state"] == state:
                return model
            time.sleep(0.05)
        raise TimeoutError(f"kernel {kernel_id} never became {state}: {model}")

    def wait_settled(self, kernel_id: str, quiet: float = 0.5) -> dict[str, Any]:
        """Poll until the kernel's model stops changing for ``quiet`` seconds."""
        deadline = time.monotonic() + CALL_TIMEOUT
        model = self.kernel(kernel_id)
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            fresh = self.kernel(kernel_id)
            if fresh != model:
                model, stable_since = fresh, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                assert model is not None
                return model
        raise TimeoutError(f"kernel {kernel_id} kept changing: {model}")

    # --- websocket (what a browser tab does) ----------------------------------------------

    def channels_url(self, kernel_id: str) -> str:
        """The websocket URL of a kernel's channels."""
        return "ws" + self.base_url[len("http") :] + f"api/kernels/{kernel_id}/channels"

    def connect(self, kernel_id: str) -> websocket.WebSocket:
        """Open a websocket to the kernel, as a notebook tab does (raises if refused)."""
        return websocket.create_connection(
            f"{self.channels_url(kernel_id)}?session_id={uuid.uuid4().hex}",
            header=[f"Authorization: token {self.token}"],
            timeout=CALL_TIMEOUT,
        )

    def execute(self, kernel_id: str, code: str, *, wait: bool = True) -> Execution:
        """Run ``code`` on the kernel over its websocket.

        With ``wait``, return once the kernel is idle again after the request; without, return
        as soon as the kernel reports busy on it (the code keeps running after we hang up).
        """
        ws = self.connect(kernel_id)
        try:
            message = _message(
                "execute_request",
                {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            )
            ws.send(json.dumps(message))
            return _collect(ws, message["header"]["msg_id"], until="idle" if wait else "busy")
        finally:
            ws.close()


def start_all(requests: list[tuple[Path, dict[str, Any]]]) -> list[JupyterServer]:
    """Launch several servers at once (each takes seconds to import) and wait for all.

    ``requests`` are ``(home, options of JupyterServer.launch)``. A server that exits before
    answering (its port was taken in the meantime) is relaunched on another port, twice at
    most. On any failure every server launched so far is stopped before the error propagates.
    """
    servers = [JupyterServer.launch(home, **options) for home, options in requests]
    try:
        for index, server in enumerate(servers):
            for _ in range(2):
                if server.wait_ready():
                    break
                server.stop()
                server = servers[index] = JupyterServer.launch(server.home, **server.options)
            else:
                if not server.wait_ready():
                    raise RuntimeError(f"jupyter_server did not start:\n{server.log_tail()}")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: list[JupyterServer]) -> None:
    """Stop servers in parallel: SIGTERM them all, then wait for each and reap its kernels."""
    kernels = [server.terminate() for server in servers]
    for server, pids in zip(servers, kernels, strict=True):
        server.reap(pids)


def _message(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": uuid.uuid4().hex,
            "username": "janitor-test",
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def _collect(ws: websocket.WebSocket, msg_id: str, *, until: str) -> Execution:
    result = Execution()
    while True:
        raw = ws.recv()
        if not raw:
            raise ConnectionError("the kernel websocket closed before the request finished")
        message = json.loads(raw)
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream" and content.get("name") == "stdout":
            result.stdout += content["text"]
        elif kind == "error":
            result.errors.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == until:
            return result


def _private_environment(home: Path, specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Environment variables that keep the server away from the user's Jupyter files."""
    dirs = {
        name: home / sub
        for name, sub in (
            ("JUPYTER_RUNTIME_DIR", "runtime"),
            ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_CONFIG_DIR", "config"),
            ("IPYTHONDIR", "ipython"),
            ("TMPDIR", "tmp"),
            ("JUPYTER_PATH", "path"),
        )
    }
    for directory in (*dirs.values(), home / "root"):
        directory.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        spec_dir = dirs["JUPYTER_PATH"] / "kernels" / name
        spec_dir.mkdir(parents=True, exist_ok=True)
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    # jsonschema imports rfc3987_syntax when it is installed, which compiles dozens of lark
    # grammars at import (seconds per server); the servers validate no URI formats we need.
    stubs = home / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "rfc3987_syntax.py").write_text(
        'raise ImportError("rfc3987_syntax is left out of test servers: slow to import")\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update({name: str(path) for name, path in dirs.items()})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stubs), os.environ.get("PYTHONPATH")]))
    env["JUPYTER_NO_CONFIG"] = "1"  # no user or system config files
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env["JANITOR_TEST_PARENT_PID"] = str(os.getpid())
    return env


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the kernels), from /proc; empty where there is no /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the command name may contain spaces and parentheses: split after the last ')'
            fields = entry.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.parent.name))
    return found


def _kill_if_kernel(pid: int) -> None:
    """SIGKILL a leftover kernel process we started (checked by its command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return  # already gone
    if b"ipykernel" in cmdline:  # KERNEL_LAUNCHER imports ipykernel.kernelapp
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
