"""A fake Oracle AI Data Platform notebook API, and its contract fake.

:class:`AidpApi` is the API's front as documented (seeds 000 and 001, provider-apis.md
section 1): the paths ``/20260430/aiDataPlatforms/{id}/workspaces/{key}/notebook/api/sessions``
(list, get, PATCH, DELETE), OCI request signatures verified with the public half of a test key
(:mod:`tests.fakes.oci_signing`; 401 ``NotAuthenticated`` otherwise), the list wrapped in
``{"items": [...]}`` and paged with ``limit`` and ``page``/``opc-next-page``, an ``etag`` on
each session and ``if-match`` honoured on PATCH and DELETE (412 ``PreconditionFailed`` on a
stale one), OCI error bodies ``{code, message}`` (404 ``NotAuthorizedOrNotFound``, 409
``IncorrectState`` for a session still being created), an ``opc-request-id`` and a ``Date`` on
every answer. What it serves comes from a :class:`Backend`:

* :class:`AidpServer` keeps sessions in memory (lifecycle states, the embedded kernel's
  ``execution_state``, ``last_activity`` and ``connections``; a version number behind each
  etag), for provider tests, sweeps on a frozen clock and the contract suite;
* ``tests/integration/aidp_proxy.py`` forwards to a real Jupyter Server mounted at the AIDP
  base path, so real kernel activity decides.

Modes for what a server may do wrong: ``ignore_paging`` (everything in one page, no
``opc-next-page``: fine), ``ignore_page_token`` (honours ``limit``, ignores ``page``, keeps
sending a next page: a listing that never advances), and faults (:class:`Fault`) injected per
operation (``list``, ``list_next``, ``get``, ``act`` = DELETE, ``patch``), e.g. 429 with or
without ``Retry-After``.

The front answers in-process through :meth:`AidpApi.transport` (an httpx transport) or over
loopback HTTP through :meth:`AidpApi.serve` (for janitor run as a CLI).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from janitor.clock import Clock
from janitor.model import Action
from janitor.providers.aidp import AidpProvider
from janitor.targets import AidpConfig
from tests.fakes.oci_signing import TestKey, Verifier, write_profile

PLATFORM = "ocid1.aidataplatform.oc1.iad.aaaatest"
WORKSPACES = ("ws-main", "ws-empty")
_PATH = re.compile(
    r"^/20260430/aiDataPlatforms/(?P<platform>[^/]+)/workspaces/(?P<workspace>[^/]+)"
    r"/notebook/api/sessions(?:/(?P<session>[^/]+))?/?$"
)


@dataclass(frozen=True)
class Answer:
    """A response of the fake: status, headers, JSON body (or none)."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        """The body as sent."""
        return b"" if self.body is None else json.dumps(self.body).encode()


def error(status: int, code: str, message: str) -> Answer:
    """An OCI error answer ``{code, message}``."""
    return Answer(status, {"code": code, "message": message})


@dataclass
class Fault:
    """An injected answer for the next ``times`` requests of ``op``.

    ``before`` runs first (a user's action landing at that moment); with ``after`` the server
    carries the request out before the fault answers (a timeout after sending); ``vanish``
    removes the addressed session before answering (a 404 that is the truth).
    """

    op: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: type[httpx.HTTPError] | None = None
    after: bool = False
    before: Callable[[], None] | None = None
    vanish: bool = False
    times: int = 1
    hits: int = 0


class Backend(Protocol):
    """Where the sessions a front serves live (in memory, or a real Jupyter Server)."""

    def has_workspace(self, workspace: str) -> bool:
        """True for a workspace of the platform."""
        ...

    def models(self, workspace: str) -> list[dict[str, Any]]:
        """The workspace's sessions as AIDP ``Session`` models, in a stable order."""
        ...

    def model(self, workspace: str, session_id: str) -> dict[str, Any] | None:
        """One session's model; None when it does not exist."""
        ...

    def etag(self, workspace: str, session_id: str, model: dict[str, Any]) -> str:
        """The session's current etag."""
        ...

    def rename(self, workspace: str, session_id: str, name: str) -> dict[str, Any] | None:
        """Rename the session; its new model (None: gone)."""
        ...

    def delete(self, workspace: str, session_id: str) -> bool:
        """Delete the session and its kernel; False when it was gone."""
        ...

    def remove(self, workspace: str, session_id: str) -> None:
        """The session vanishes (for a truthful injected 404)."""
        ...


@dataclass
class AidpApi:
    """The documented API in front of a backend: signatures, paging, etags, errors."""

    backend: Backend
    verifier: Verifier
    platform: str = PLATFORM
    max_page: int = 1000  # the most sessions a page holds, whatever the limit asked
    ignore_paging: bool = False
    ignore_page_token: bool = False
    faults: list[Fault] = field(default_factory=list)
    #: (method, op, path, opc-request-id sent) of every request that reached the front
    log: list[tuple[str, str, str, str | None]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    duplicate_next: str | None = None  # session id repeated at the top of the next page
    #: (method, session id, if-match sent, etag then) of every PATCH and DELETE of a session
    preconditions: list[tuple[str, str, str | None, str]] = field(default_factory=list)

    # --- entry points ---------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        """Answer one request (``target`` is the path and query as sent; lower-case headers)."""
        op = _op(method, target)
        with self.lock:
            self.log.append((method, op, urlsplit(target).path, headers.get("opc-request-id")))
        fault = self._fault(op)
        if fault is not None:
            if fault.before is not None:
                fault.before()
            if fault.vanish:
                self._vanish(target)
            if fault.after:
                self._answer(method, target, headers, body)
            if fault.status is not None:
                return self._stamped(Answer(fault.status, fault.body, fault.headers), headers)
        return self._stamped(self._answer(method, target, headers, body), headers)

    def transport(self) -> httpx.MockTransport:
        """An in-process httpx transport to this front (raises injected transport errors)."""

        def handle(request: httpx.Request) -> httpx.Response:
            op = _op(request.method, request.url.raw_path.decode())
            fault = self._peek(op)
            if fault is not None and fault.error is not None:
                self._fault(op)
                with self.lock:
                    self.log.append((request.method, op, request.url.path, None))
                if fault.after:
                    self._answer(
                        request.method, request.url.raw_path.decode(), _lower(request), b""
                    )
                raise fault.error("injected", request=request)
            answer = self.handle(
                request.method, request.url.raw_path.decode(), _lower(request), request.content
            )
            return httpx.Response(answer.status, content=answer.content(), headers=answer.headers)

        return httpx.MockTransport(handle)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve over loopback HTTP; yields the base URL (``http://127.0.0.1:PORT/``)."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="aidp-fake", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()

    # --- helpers for tests ------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        """Add a fault (checked after the ones already there)."""
        with self.lock:
            self.faults.append(fault)
        return fault

    def requests(self, *ops: str, method: str | None = None) -> list[tuple[str, str, str]]:
        """(method, op, path) of the requests of ``ops`` (every op when none is given)."""
        with self.lock:
            return [
                (m, op, path)
                for m, op, path, _ in self.log
                if (not ops or op in ops) and (method is None or m == method)
            ]

    # --- the API --------------------------------------------------------------------------

    def _answer(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Answer:
        problem = self.verifier.check(method, target, headers, body)
        if problem is not None:
            return error(
                401,
                "NotAuthenticated",
                f"The required information to complete "
                f"authentication was not provided or was incorrect ({problem}).",
            )
        url = urlsplit(target)
        route = _PATH.match(unquote(url.path))
        if route is None or route["platform"] != self.platform:
            return _not_found("the resource")
        workspace = route["workspace"]
        if not self.backend.has_workspace(workspace):
            return _not_found(f"workspace {workspace}")
        session_id = route["session"]
        with self.lock:
            if session_id is None:
                if method != "GET":
                    return error(405, "MethodNotAllowed", f"{method} is not allowed here")
                return self._list(workspace, parse_qs(url.query))
            model = self.backend.model(workspace, session_id)
            if model is None:
                return _not_found(f"session {session_id}")
            etag = self.backend.etag(workspace, session_id, model)
            if method == "GET":
                return Answer(200, model, {"etag": etag})
            if method not in ("PATCH", "DELETE"):
                return error(405, "MethodNotAllowed", f"{method} is not allowed here")
            if_match = headers.get("if-match")
            self.preconditions.append((method, session_id, if_match, etag))
            if if_match is not None and if_match != etag:
                return error(
                    412, "PreconditionFailed", "The resource has changed since the etag given."
                )
            if method == "PATCH":
                return self._patch(workspace, session_id, body)
            if model.get("lifecycleState") == "CREATING":
                return error(409, "IncorrectState", "The session is still being created.")
            if not self.backend.delete(workspace, session_id):
                return _not_found(f"session {session_id}")
            return Answer(204)

    def _list(self, workspace: str, query: dict[str, list[str]]) -> Answer:
        models = self.backend.models(workspace)
        etag = hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()[:16]
        if self.ignore_paging:
            return Answer(200, {"items": models}, {"etag": etag})
        try:
            limit = int(query.get("limit", ["100"])[0])
            offset = _offset(query.get("page", [None])[0])
        except ValueError:
            return error(400, "InvalidParameter", "limit or page is not valid")
        if not 1 <= limit <= 1000:
            return error(400, "InvalidParameter", "limit must be between 1 and 1000")
        if self.ignore_page_token:
            offset = 0
        size = min(limit, self.max_page)
        items = models[offset : offset + size]
        if self.duplicate_next and offset > 0:
            repeated = [m for m in models if m["id"] == self.duplicate_next]
            items = repeated + [m for m in items if m["id"] != self.duplicate_next]
            self.duplicate_next = None
        headers = {"etag": etag}
        if offset + size < len(models):
            headers["opc-next-page"] = _token(offset + size)
        return Answer(200, {"items": items}, headers)

    def _patch(self, workspace: str, session_id: str, body: bytes) -> Answer:
        try:
            details = json.loads(body)
        except ValueError:
            return error(400, "InvalidParameter", "the body is not JSON")
        if not isinstance(details, dict) or not isinstance(details.get("name"), str):
            return error(400, "InvalidParameter", "PatchSessionDetails.name must be a string")
        unknown = set(details) - {"id", "name", "path", "type", "kernel", "cluster_id"}
        if unknown:
            return error(400, "InvalidParameter", f"unknown fields {sorted(unknown)}")
        model = self.backend.rename(workspace, session_id, details["name"])
        if model is None:
            return _not_found(f"session {session_id}")
        return Answer(200, model, {"etag": self.backend.etag(workspace, session_id, model)})

    # --- plumbing -------------------------------------------------------------------------

    def _stamped(self, answer: Answer, headers: Mapping[str, str]) -> Answer:
        sent = headers.get("opc-request-id", "")
        request_id = sent if re.fullmatch(r"[\w-]{1,98}", sent) else uuid.uuid4().hex
        return Answer(
            answer.status,
            answer.body,
            {
                "date": format_datetime(datetime.now(UTC), usegmt=True),
                "opc-request-id": f"{request_id}/srv-{uuid.uuid4().hex[:8]}",
                **({"content-type": "application/json"} if answer.body is not None else {}),
                **answer.headers,
            },
        )

    def _peek(self, op: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.op in (op, _family(op)):
                    return fault
        return None

    def _fault(self, op: str) -> Fault | None:
        with self.lock:
            fault = self._peek(op)
            if fault is not None:
                fault.hits += 1
            return fault

    def _vanish(self, target: str) -> None:
        route = _PATH.match(unquote(urlsplit(target).path))
        if route and route["session"]:
            self.backend.remove(route["workspace"], route["session"])


def _not_found(what: str) -> Answer:
    return error(
        404,
        "NotAuthorizedOrNotFound",
        f"Authorization failed or requested resource not found: {what}",
    )


def _op(method: str, target: str) -> str:
    url = urlsplit(target)
    route = _PATH.match(unquote(url.path))
    if route is None:
        return "other"
    if route["session"] is None:
        return "list_next" if "page" in parse_qs(url.query) else "list"
    return {"GET": "get", "DELETE": "act", "PATCH": "patch"}.get(method, "other")


def _family(op: str) -> str:
    """``list`` faults apply to every listing request, ``list_next`` only to later pages."""
    return "list" if op == "list_next" else op


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    text = base64.urlsafe_b64decode(token.encode()).decode()
    if not text.startswith("offset:"):
        raise ValueError(token)
    return int(text.removeprefix("offset:"))


def _lower(request: httpx.Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _handler(api: AidpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = api.handle(self.command, self.path, headers, body)
            content = answer.content()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                if name != "date":  # send_response wrote one
                    self.send_header(name, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _any

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


# --- the in-memory platform ---------------------------------------------------------------------


@dataclass
class FakeSession:
    """One notebook session and its kernel, as the platform keeps them."""

    workspace: str
    id: str
    name: str
    last_activity: datetime
    path: str = ""
    type: str = "notebook"
    lifecycle: str = "ACTIVE"
    kernel_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kernel_name: str = "python3"
    execution_state: str = "idle"
    connections: int = 0
    cluster_id: str | None = "ocid1.cluster.test"
    version: int = 1

    @property
    def ref(self) -> str:
        """janitor's id of the session: ``workspace/id``."""
        return f"{self.workspace}/{self.id}"

    def model(self) -> dict[str, Any]:
        """The ``Session`` JSON the API returns."""
        return {
            "id": self.id,
            "name": self.name,
            "path": self.path or f"/Workspace/{self.name}.ipynb",
            "type": self.type,
            "cluster_id": self.cluster_id,
            "lifecycleState": self.lifecycle,
            "kernel": {
                "id": self.kernel_id,
                "name": self.kernel_name,
                "last_activity": self.last_activity.isoformat().replace("+00:00", "Z"),
                "execution_state": self.execution_state,
                "connections": self.connections,
            },
        }


@dataclass
class AidpServer(AidpApi):
    """The platform in memory: sessions per workspace, behind the documented front."""

    backend: Backend = field(init=False)
    clock: Clock = field(kw_only=True)
    workspaces: tuple[str, ...] = WORKSPACES
    sessions: dict[str, FakeSession] = field(default_factory=dict)  # by ref
    deletes: Counter[str] = field(default_factory=Counter)  # deletes that took effect, by ref

    def __post_init__(self) -> None:
        self.backend = _Memory(self)

    def add(
        self,
        name: str,
        *,
        idle_for: timedelta = timedelta(hours=3),
        workspace: str = WORKSPACES[0],
        **fields: Any,
    ) -> FakeSession:
        """A session idle for ``idle_for`` (``fields`` override the rest)."""
        session = FakeSession(
            workspace=workspace,
            id=str(uuid.uuid4()),
            name=name,
            last_activity=self.clock.now() - idle_for,
            **fields,
        )
        with self.lock:
            self.sessions[session.ref] = session
        return session

    def touch(self, ref: str) -> None:
        """The user runs code in the session now."""
        with self.lock:
            session = self.sessions[ref]
            session.last_activity = self.clock.now()
            session.version += 1

    def user_renames(self, ref: str, name: str) -> None:
        """The user renames the session in the AIDP console."""
        with self.lock:
            session = self.sessions[ref]
            session.name = name
            session.version += 1

    def renames(self) -> int:
        """PATCH requests that reached the platform."""
        return len(self.requests("patch"))


@dataclass
class _Memory:
    server: AidpServer

    def has_workspace(self, workspace: str) -> bool:
        return workspace in self.server.workspaces

    def models(self, workspace: str) -> list[dict[str, Any]]:
        return [s.model() for s in self.server.sessions.values() if s.workspace == workspace]

    def model(self, workspace: str, session_id: str) -> dict[str, Any] | None:
        session = self.server.sessions.get(f"{workspace}/{session_id}")
        return session.model() if session else None

    def etag(self, workspace: str, session_id: str, model: dict[str, Any]) -> str:
        session = self.server.sessions[f"{workspace}/{session_id}"]
        return hashlib.sha1(f"{session.id}:{session.version}".encode()).hexdigest()

    def rename(self, workspace: str, session_id: str, name: str) -> dict[str, Any] | None:
        session = self.server.sessions.get(f"{workspace}/{session_id}")
        if session is None:
            return None
        session.name = name
        session.version += 1
        return session.model()

    def delete(self, workspace: str, session_id: str) -> bool:
        ref = f"{workspace}/{session_id}"
        if self.server.sessions.pop(ref, None) is None:
            return False
        self.server.deletes[ref] += 1
        return True

    def remove(self, workspace: str, session_id: str) -> None:
        self.server.sessions.pop(f"{workspace}/{session_id}", None)


# --- credentials and targets --------------------------------------------------------------------

_SHARED: dict[str, Any] = {}


def signing_key() -> TestKey:
    """One API key for the whole test run (generating RSA keys takes time)."""
    if "key" not in _SHARED:
        _SHARED["key"] = TestKey.generate()
    key: TestKey = _SHARED["key"]
    return key


def shared_profile() -> Path:
    """An OCI config file for :func:`signing_key`, written once per test run (removed at exit)."""
    if "profile" not in _SHARED:
        home = Path(tempfile.mkdtemp(prefix="janitor-aidp-"))
        atexit.register(shutil.rmtree, home, True)
        _SHARED["profile"] = write_profile(home, signing_key())
    profile: Path = _SHARED["profile"]
    return profile


def aidp_config(
    base_url: str, config_file: Path | None, *, name: str = "aidp", **keys: Any
) -> AidpConfig:
    """An ``aidp`` target on the fake platform, signing with the profile in ``config_file``
    (None for principals, which take no file)."""
    files = {"oci_config_file": str(config_file)} if config_file is not None else {}
    return AidpConfig.model_validate(
        {
            "name": name,
            "provider": "aidp",
            "base_url": base_url,
            "ai_data_platform_id": PLATFORM,
            "workspaces": list(WORKSPACES),
            **files,
            **keys,
        }
    )


# --- the contract fake --------------------------------------------------------------------------


class AidpContract:
    """The fake platform as the provider contract suite drives it.

    All sessions are added to the first workspace (the second stays empty), so the paging
    cases see several pages of one workspace and the listing still spans two.
    """

    provider = "aidp"
    action = Action.DELETE
    can = frozenset({"pages", "409", "412", "warn"})  # no "total": AIDP reports none
    page_size = 3

    def __init__(self, clock: Clock) -> None:
        self.key = signing_key()
        self.verifier = Verifier()
        self.verifier.trust(self.key)
        self.server = AidpServer(verifier=self.verifier, clock=clock, max_page=self.page_size)
        self.config_file = shared_profile()

    def connect(self, clock: Clock) -> AidpProvider:
        """The aidp provider on the fake, signing with the test key."""
        config = aidp_config("http://aidp.test/", self.config_file)
        return AidpProvider.connect(config, clock, transport=self.server.transport())

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """An idle ACTIVE session."""
        return self.server.add(name, idle_for=idle_for).ref

    def touch(self, session_id: str) -> None:
        """The user runs code in it."""
        self.server.touch(session_id)

    def remove(self, session_id: str) -> None:
        """The session vanishes."""
        with self.server.lock:
            del self.server.sessions[session_id]

    def inject(self, op: str, **kw: Any) -> None:
        """An injected answer. A 404 on the action is the truth (the session is gone): AIDP's
        ``NotAuthorizedOrNotFound`` can also mean "not permitted", which janitor tells apart
        with a GET; that case is in tests/providers/test_aidp.py."""
        vanish = op == "act" and kw.get("status") == 404
        self.server.inject(Fault(op=op, vanish=vanish, **kw))

    def duplicate_across_pages(self, session_id: str) -> None:
        """The next page repeats a session of the page before."""
        self.server.duplicate_next = session_id.partition("/")[2]

    def short_listing(self) -> None:
        """AIDP reports no total: the contract never asks for this."""
        raise AssertionError("aidp has no total to fall short of")

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the platform."""
        ops = (op, "list_next") if op == "list" else (op,)
        return len(self.server.requests(*ops))

    def writes(self) -> int:
        """Requests that change something."""
        return sum(1 for method, _, _ in self.server.requests() if method not in ("GET", "HEAD"))

    def effective(self, session_id: str) -> int:
        """Deletes that took effect on the session."""
        return self.server.deletes[session_id]

    def activity(self, session_id: str) -> datetime | None:
        """The kernel's last activity."""
        return self.server.sessions[session_id].last_activity

    def finish(self, session_id: str) -> None:
        """The delete is synchronous: nothing to finish."""

    def shown_name(self, session_id: str) -> str:
        """The name users see."""
        return self.server.sessions[session_id].name
