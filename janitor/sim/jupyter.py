"""A simulated Jupyter Server REST API: sessions and kernels held in memory.

Used by ``janitor demo`` (served over real HTTP on loopback) and by the test suite (served
in-process through ``httpx.MockTransport``, or over HTTP for multi-process tests). It follows
the behaviour of jupyter_server 2.x that janitor relies on: ``GET``/``DELETE`` of
``api/sessions`` and ``api/kernels``, 404 for unknown ids, 403 for a missing or wrong token,
deleting a session shuts its kernel down, a ``Date`` header on every answer. It counts every
DELETE per id, so tests can assert "deleted exactly once".
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from janitor.clock import Clock, SystemClock

_ID = r"(?P<id>\w+-\w+-\w+-\w+-\w+)"
ROUTES = [
    ("GET", re.compile(r"api/sessions"), "list_sessions"),
    ("GET", re.compile(rf"api/sessions/{_ID}"), "get_session"),
    ("DELETE", re.compile(rf"api/sessions/{_ID}"), "delete_session"),
    ("GET", re.compile(r"api/kernels"), "list_kernels"),
    ("GET", re.compile(rf"api/kernels/{_ID}"), "get_kernel"),
    ("DELETE", re.compile(rf"api/kernels/{_ID}"), "delete_kernel"),
]


@dataclass
class Kernel:
    """A kernel: what Jupyter reports as the kernel model."""

    id: str
    name: str
    execution_state: str
    last_activity: datetime
    connections: int = 0

    def model(self) -> dict[str, Any]:
        """The JSON model (``last_activity`` in Jupyter's ISO format with ``Z``)."""
        return {
            "id": self.id,
            "name": self.name,
            "execution_state": self.execution_state,
            "last_activity": iso(self.last_activity),
            "connections": self.connections,
        }


@dataclass
class NotebookSession:
    """A session: a path bound to a kernel."""

    id: str
    path: str
    name: str
    type: str
    kernel_id: str


@dataclass
class Response:
    """What the simulator answers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        """The body as bytes (JSON unless it already is bytes)."""
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


def iso(value: datetime) -> str:
    """Jupyter's timestamp format: ISO 8601 in UTC with a ``Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class JupyterSim:
    """The simulated server's state and request handling (thread-safe)."""

    def __init__(
        self,
        *,
        token: str | None = "sim-token",  # noqa: S107 (a simulator)
        clock: Clock | None = None,
        base_path: str = "/",
    ) -> None:
        self.token = token
        self.clock = clock or SystemClock()
        self.base_path = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        self.kernels: dict[str, Kernel] = {}
        self.sessions: dict[str, NotebookSession] = {}
        self.deletes: Counter[str] = Counter()
        self.date_offset = timedelta(0)  # the server clock's error, sent in its Date header
        self.delete_delay = 0.0  # seconds a DELETE takes (to test shutdown during a call)
        self.delete_started = threading.Event()
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.lock = threading.RLock()

    # --- state changes (what users and kernels do) ---------------------------------

    def add_kernel(
        self,
        *,
        state: str = "idle",
        idle_for: timedelta = timedelta(0),
        connections: int = 0,
        name: str = "python3",
    ) -> Kernel:
        """Start a kernel with no session."""
        kernel = Kernel(
            id=str(uuid.uuid4()),
            name=name,
            execution_state=state,
            last_activity=self.clock.now() - idle_for,
            connections=connections,
        )
        with self.lock:
            self.kernels[kernel.id] = kernel
        return kernel

    def add_session(
        self,
        path: str,
        *,
        state: str = "idle",
        idle_for: timedelta = timedelta(0),
        connections: int = 0,
        kind: str = "notebook",
        kernel: Kernel | None = None,
    ) -> NotebookSession:
        """Open a notebook (or console) with a new kernel, or on ``kernel`` (shared)."""
        kernel = kernel or self.add_kernel(state=state, idle_for=idle_for, connections=connections)
        session = NotebookSession(
            id=str(uuid.uuid4()),
            path=path,
            name=path.rsplit("/", 1)[-1],
            type=kind,
            kernel_id=kernel.id,
        )
        with self.lock:
            self.sessions[session.id] = session
        return session

    def touch(self, kernel_id: str, *, state: str | None = None) -> None:
        """The user ran code: activity now (and optionally a new execution state)."""
        with self.lock:
            kernel = self.kernels[kernel_id]
            kernel.last_activity = self.clock.now()
            if state is not None:
                kernel.execution_state = state

    def kernel_of(self, session_id: str) -> Kernel:
        """The kernel of a session."""
        with self.lock:
            return self.kernels[self.sessions[session_id].kernel_id]

    # --- HTTP -------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> Response:
        """Answer one request (path relative to the server root, with its base path)."""
        with self.lock:
            self.requests.append((method, path, query))
        date = {"Date": format_datetime(datetime.now(UTC) + self.date_offset, usegmt=True)}
        if not path.startswith(self.base_path):
            return Response(404, {"message": "Not Found"}, date)
        relative = path[len(self.base_path) :]
        if self.token is not None and not self._authorized(headers, query):
            return Response(403, {"message": "Forbidden"}, date)
        for route_method, pattern, handler_name in ROUTES:
            match = pattern.fullmatch(relative)
            if match and route_method == method:
                handler: Callable[..., Response] = getattr(self, "_" + handler_name)
                response = handler(**match.groupdict())
                response.headers.update(date)
                return response
        return Response(404, {"message": "Not Found"}, date)

    def _authorized(self, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
        header = headers.get("authorization", "")
        match = re.fullmatch(r"(?i)(token|bearer)\s+(.+)", header.strip())
        given = match.group(2) if match else (query.get("token") or [""])[0]
        return given == self.token

    def _session_model(self, session: NotebookSession) -> dict[str, Any]:
        kernel = self.kernels.get(session.kernel_id)
        return {
            "id": session.id,
            "path": session.path,
            "name": session.name,
            "type": session.type,
            "kernel": kernel.model() if kernel else None,
        }

    def _list_sessions(self) -> Response:
        with self.lock:
            return Response(200, [self._session_model(s) for s in self.sessions.values()])

    def _get_session(self, id: str) -> Response:
        with self.lock:
            session = self.sessions.get(id)
            if session is None:
                return Response(404, {"message": f"Session not found: session_id='{id}'"})
            return Response(200, self._session_model(session))

    def _delete_session(self, id: str) -> Response:
        self._slow_delete()
        with self.lock:
            self.deletes[id] += 1
            session = self.sessions.pop(id, None)
            if session is None:
                return Response(404, {"message": f"Session not found: session_id='{id}'"})
            self.kernels.pop(session.kernel_id, None)
            # Like jupyter_server: another session on that kernel is gone with it (its row
            # is dropped lazily there; listing and GET no longer show it).
            for other in [s for s in self.sessions.values() if s.kernel_id == session.kernel_id]:
                del self.sessions[other.id]
            return Response(204)

    def _slow_delete(self) -> None:
        self.delete_started.set()
        if self.delete_delay:
            time.sleep(self.delete_delay)

    def _list_kernels(self) -> Response:
        with self.lock:
            return Response(200, [k.model() for k in self.kernels.values()])

    def _get_kernel(self, id: str) -> Response:
        with self.lock:
            kernel = self.kernels.get(id)
            if kernel is None:
                return Response(404, {"message": f"Kernel does not exist: {id}"})
            return Response(200, kernel.model())

    def _delete_kernel(self, id: str) -> Response:
        self._slow_delete()
        with self.lock:
            self.deletes[id] += 1
            if self.kernels.pop(id, None) is None:
                return Response(404, {"message": f"Kernel does not exist: {id}"})
            for sid in [s.id for s in self.sessions.values() if s.kernel_id == id]:
                del self.sessions[sid]
            return Response(204)

    # --- serving ------------------------------------------------------------------

    def handle_url(self, method: str, url: str, headers: dict[str, str]) -> Response:
        """Answer a request given its full URL."""
        parts = urlsplit(url)
        return self.handle(method, parts.path, parse_qs(parts.query), headers)

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        """Serve over HTTP on loopback from a daemon thread."""
        return SimServer(self, host, port)


class SimServer:
    """A running HTTP server for a simulator."""

    def __init__(self, sim: JupyterSim, host: str, port: int) -> None:
        handler = _handler_for(sim)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="jupyter-sim", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        """The server's base URL (with the simulator's base path)."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def send_json(
    handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], body: bytes
) -> None:
    """Write one response: the status, ``headers``, and ``body`` as JSON (if any) with its
    length, so the connection stays open for the next request."""
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    if body:
        handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        handler.wfile.write(body)


def _handler_for(sim: JupyterSim) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def send_response(self, code: int, message: str | None = None) -> None:
            """Like the base class, but the Date header comes from the simulator."""
            self.log_request(code)
            self.send_response_only(code, message)

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            response = sim.handle_url(self.command, self.path, headers)
            send_json(self, response.status, response.headers, response.content())

        do_GET = do_DELETE = do_POST = do_PATCH = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the simulator does not log every request."""

    return Handler
