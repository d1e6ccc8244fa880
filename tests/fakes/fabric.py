"""A fake Huawei Cloud DataArts Fabric (SQL sessions) and IAM, served in-process.

``FabricServer`` implements what the API reference documents (provider-apis.md section 3):

* ``GET /v1/workspaces/{ws}/sessions``: ``limit`` (1 to 100, default 10) and ``offset``;
  ``{"sessions": [...], "total": N}``; a page never holds more than ``page_size`` sessions;
* ``GET /v1/workspaces/{ws}/sessions/{id}``: ``{"session_id", "status"}`` only;
* ``GET /v1/workspaces/{ws}/sessions/{id}/statements``: ``limit``/``offset``;
  ``{"records": [...], "total": N}``, the records in no particular order (by a hash of their
  ids, so never by time);
* ``DELETE /v1/workspaces/{ws}/sessions/{id}``: a RUNNING or WAITING session becomes CLOSED,
  200 with an empty body; CLOSED, FAIL and CREATING sessions answer 400; an unknown id 404
  with the 400's ``error_code`` (as documented);
* IAM ``POST /v3/auth/tokens`` (host ``iam.test``): a password identity scoped to the project
  gets a token in ``X-Subject-Token``, valid 24 hours by the server's clock.

Authentication is verified on every Fabric request: an ``X-Auth-Token`` (a static token or an
unexpired IAM one), or an ``SDK-HMAC-SHA256`` signature recomputed with Huawei's own
``huaweicloudsdkcore`` Signer from what arrived (the signed headers as listed, the raw path,
the query decoded without treating ``+`` as a space), with ``X-Sdk-Date`` within 15 minutes of
the real clock, ``X-Project-Id`` signed and equal to the project, and ``X-Security-Token``
signed for temporary credentials. Failures answer 401 with the gateway's bodies.

State machine: ``CREATING → RUNNING | FAIL``, ``RUNNING | WAITING → CLOSED`` (the close API,
or the service: :meth:`FabricServer.end`). Every answer carries ``Date`` and ``X-Request-Id``.
Faults (:class:`Fault`) replace the answer to the next requests of one operation; the
constants below are the bodies Huawei sends for throttling (429 ``APIG.0308``), 408 and 500.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import hmac
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import httpx
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from janitor.clock import Clock
from janitor.model import Action
from janitor.providers.fabric_sql import FabricSqlProvider
from janitor.targets import FabricSqlConfig

THROTTLED = {
    "error_code": "APIG.0308",
    "error_msg": "The throttling threshold has been reached: policy user over ratelimit,"
    "limit:10,time:1 second",
}
TIMED_OUT = {"error_code": "common.00000408", "error_msg": "timeout exception occurred"}
INTERNAL = {"error_code": "common.00000500", "error_msg": "internal error"}
BAD_TOKEN = {"error_code": "APIG.1002", "error_msg": "Incorrect token or token resolution failed"}
BAD_SIGNATURE = {
    "error_code": "APIG.0301",
    "error_msg": "Incorrect IAM authentication information: verify aksk signature fail",
}
NOT_FOUND = {"error_code": "common.01000001", "error_msg": "response status exception, code: 404"}
FABRIC_HOST = "fabric.test"
IAM_HOST = "iam.test"
PROJECT = "0123456789abcdef0123456789abcdef"
SIGNATURE_WINDOW = timedelta(minutes=15)
_AUTHORIZATION = re.compile(
    r"SDK-HMAC-SHA256 Access=([^,\s]+), SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})"
)


@dataclass
class Statement:
    """One statement record."""

    id: str
    status: str
    create_time: datetime
    user: str = "alice"
    content: str = "SELECT 1"


@dataclass
class SqlSession:
    """One SQL session as the service keeps it."""

    workspace: str
    id: str
    status: str
    create_time: datetime
    endpoint_id: str = "ep-0001"
    statements: list[Statement] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The id janitor gives it: ``workspace/session_id``."""
        return f"{self.workspace}/{self.id}"


@dataclass
class Fault:
    """An injected answer for the next ``times`` requests of ``op``.

    ``op``: ``list`` (every sessions page; ``list_next`` those after the first), ``get``,
    ``statements`` (every page; ``statements_next``), ``act`` (the close) or ``iam``. ``error``
    raises that httpx error; with ``after`` the server carries the request out first. ``where``
    narrows it to request paths containing that text; ``raw`` answers those bytes, not JSON.
    """

    op: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw: bytes | None = None
    where: str = ""
    error: type[httpx.HTTPError] | None = None
    after: bool = False
    times: int = 1
    hits: int = 0

    def matches(self, op: str, path: str) -> bool:
        """True for its own op (and later pages of ``list``/``statements``) and path."""
        return (
            self.hits < self.times
            and self.op in (op, op.removesuffix("_next"))
            and self.where in path
        )

    def response(self) -> httpx.Response:
        """The injected answer."""
        headers = {**_headers(), **self.headers}
        if self.raw is not None:
            return httpx.Response(self.status or 500, content=self.raw, headers=headers)
        return httpx.Response(self.status or 500, json=self.body, headers=headers)


@dataclass(frozen=True)
class Key:
    """An access key pair, with a security token for temporary credentials."""

    secret: str
    security_token: str | None = None


@dataclass
class FabricServer:
    """The service: workspaces of SQL sessions, IAM, auth verification and faults."""

    clock: Clock
    workspaces: tuple[str, ...] = ("ws-1", "ws-2")
    tokens: set[str] = field(default_factory=lambda: {"fabric-token"})
    keys: dict[str, Key] = field(default_factory=lambda: {"AKFAKE0001": Key("fake-secret")})
    users: dict[tuple[str, str], str] = field(
        default_factory=lambda: {("acme", "janitor"): "fake-password"}
    )
    project_id: str = PROJECT
    page_size: int = 100
    #: how timestamps are written: "offset" (+08:00), "utc" (Z) or "naive" (Beijing time)
    time_format: str = "offset"
    sessions: dict[str, SqlSession] = field(default_factory=dict)
    issued: dict[str, datetime] = field(default_factory=dict)  # IAM token -> expiry
    closes: Counter[str] = field(default_factory=Counter)  # closes that took effect
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, op)
    targets: list[str] = field(default_factory=list)  # path and query, as sent
    rejected: list[str] = field(default_factory=list)  # why requests failed authentication
    faults: list[Fault] = field(default_factory=list)
    before: dict[str, Callable[[], None]] = field(default_factory=dict)  # op -> run once
    duplicate_once: str | None = None
    short_once: bool = False
    lock: threading.RLock = field(default_factory=threading.RLock)

    # --- driving the service from a test -------------------------------------------------

    def add(
        self,
        workspace: str = "ws-1",
        *,
        age: timedelta = timedelta(hours=3),
        status: str = "RUNNING",
        session_id: str | None = None,
    ) -> SqlSession:
        """A session created ``age`` ago."""
        session = SqlSession(
            workspace=workspace,
            id=session_id or uuid.uuid4().hex[:24],
            status=status,
            create_time=self.clock.now() - age,
        )
        with self.lock:
            self.sessions[session.key] = session
        return session

    def run(
        self,
        key: str,
        *,
        status: str = "SUCCESSFUL",
        ago: timedelta = timedelta(0),
        user: str = "alice",
    ) -> Statement:
        """A statement submitted ``ago`` before now, in ``status``."""
        statement = Statement(
            id=f"stmt-{uuid.uuid4().hex[:16]}",
            status=status,
            create_time=self.clock.now() - ago,
            user=user,
        )
        with self.lock:
            self.sessions[key].statements.append(statement)
        return statement

    def finish(self, key: str, statement_id: str, status: str = "SUCCESSFUL") -> None:
        """A running statement ends."""
        with self.lock:
            for statement in self.sessions[key].statements:
                if statement.id == statement_id:
                    statement.status = status

    def end(self, key: str, status: str = "CLOSED") -> None:
        """The service ends a session by itself (or creation completes: ``RUNNING``)."""
        with self.lock:
            self.sessions[key].status = status

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the server (``list`` counts every page)."""
        ops = {op, f"{op}_next"}
        return sum(1 for _, logged in self.log if logged in ops)

    def transport(self) -> httpx.MockTransport:
        """An in-process transport to the service (and to IAM), for async clients.

        Each answer first yields to the event loop, as a network round trip would, so
        concurrent requests interleave.
        """

        async def handle(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0)
            return self.handle(request)

        return httpx.MockTransport(handle)

    # --- the wire ------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Faults first, then the service's own answer."""
        op = _op(request)
        with self.lock:
            self.log.append((request.method, op))
            self.targets.append(request.url.raw_path.decode("ascii"))
            hook = self.before.pop(op, None)
        if hook is not None:
            hook()
        for fault in self.faults:
            if fault.matches(op, request.url.path):
                fault.hits += 1
                if fault.after:
                    self.answer(request)
                if fault.error is not None:
                    raise fault.error("injected", request=request)
                return fault.response()
        return self.answer(request)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The service's answer."""
        if request.url.host == IAM_HOST:
            return self._iam(request)
        refusal = self._authenticate(request)
        if refusal is not None:
            with self.lock:
                self.rejected.append(refusal)
            body = BAD_SIGNATURE if "authorization" in request.headers else BAD_TOKEN
            return _json(401, body)
        parts = request.url.path.strip("/").split("/")
        if parts[:2] != ["v1", "workspaces"] or len(parts) < 4 or parts[3] != "sessions":
            return _json(404, NOT_FOUND)
        workspace = parts[2]
        if workspace not in self.workspaces:
            return _json(404, NOT_FOUND)
        with self.lock:
            if request.method == "GET" and len(parts) == 4:
                return self._list(request, workspace)
            session = self.sessions.get(f"{workspace}/{parts[4]}") if len(parts) >= 5 else None
            if session is None:
                return _json(404, NOT_FOUND)
            if request.method == "GET" and len(parts) == 5:
                return _json(200, {"session_id": session.id, "status": session.status})
            if request.method == "GET" and parts[5:] == ["statements"]:
                return self._statements(request, session)
            if request.method == "DELETE" and len(parts) == 5:
                return self._close(session)
        return _json(405, {"error_code": "common.00000405", "error_msg": "method not allowed"})

    def _list(self, request: httpx.Request, workspace: str) -> httpx.Response:
        window = _window(request)
        if isinstance(window, httpx.Response):
            return window
        offset, limit = window
        rows = [s for s in self.sessions.values() if s.workspace == workspace]
        wanted = request.url.params.get("session_id")
        if wanted is not None:
            rows = [s for s in rows if s.id == wanted]
        page = [self._model(s) for s in rows[offset : offset + min(limit, self.page_size)]]
        total = len(rows)
        if self.duplicate_once and offset > 0:
            page = [self._model(self.sessions[self.duplicate_once]), *page]
            self.duplicate_once = None
        if self.short_once:
            total += 1
            if offset + min(limit, self.page_size) >= len(rows):
                self.short_once = False
        return _json(200, {"sessions": page, "total": total})

    def _statements(self, request: httpx.Request, session: SqlSession) -> httpx.Response:
        window = _window(request)
        if isinstance(window, httpx.Response):
            return window
        offset, limit = window
        shuffled = sorted(session.statements, key=lambda s: hashlib.sha256(s.id.encode()).digest())
        page = shuffled[offset : offset + min(limit, self.page_size)]
        records = [
            {
                "statement_id": s.id,
                "statement_content": s.content,
                "create_time": self._time(s.create_time),
                "status": s.status,
                "user_name": s.user,
            }
            for s in page
        ]
        return _json(200, {"records": records, "total": len(shuffled)})

    def _close(self, session: SqlSession) -> httpx.Response:
        if session.status in ("RUNNING", "WAITING"):
            session.status = "CLOSED"
            self.closes[session.key] += 1
            return httpx.Response(200, headers=_headers())
        return _json(
            400,
            {
                "error_code": "common.01000001",
                "error_msg": f"session {session.id} is {session.status} and cannot be closed",
                "solution_msg": "Query the session status before closing it.",
            },
        )

    def _model(self, session: SqlSession) -> dict[str, Any]:
        return {
            "session_id": session.id,
            "status": session.status,
            "create_time": self._time(session.create_time),
            "endpoint_info": {"endpoint_id": session.endpoint_id, "name": "sql-endpoint"},
        }

    def _time(self, when: datetime) -> str:
        if self.time_format == "utc":
            return when.astimezone(UTC).isoformat().replace("+00:00", "Z")
        local = when.astimezone(ZoneInfo("Asia/Shanghai"))
        if self.time_format == "naive":
            return local.replace(tzinfo=None).isoformat(sep=" ")
        return local.isoformat()

    # --- authentication ------------------------------------------------------------------

    def _authenticate(self, request: httpx.Request) -> str | None:
        """None when the request is authenticated, else why not."""
        if "authorization" in request.headers:
            return self._verify_signature(request)
        token = request.headers.get("x-auth-token")
        if token is None:
            return "no credentials"
        if token in self.tokens:
            return None
        expires = self.issued.get(token)
        if expires is not None and self.clock.now() < expires:
            return None
        return "unknown or expired token"

    def _verify_signature(self, request: httpx.Request) -> str | None:
        match = _AUTHORIZATION.fullmatch(request.headers["authorization"])
        if match is None:
            return "malformed Authorization header"
        access_key, signed_text, signature = match.groups()
        key = self.keys.get(access_key)
        if key is None:
            return "unknown access key"
        signed = signed_text.split(";")
        missing = [h for h in ("host", "x-sdk-date", "x-project-id") if h not in signed]
        if key.security_token is not None:
            missing += [] if "x-security-token" in signed else ["x-security-token"]
        if missing or any(name not in request.headers for name in signed):
            return f"headers not signed or absent: {missing or signed}"
        try:
            stamp = request.headers["x-sdk-date"].replace("Z", "+0000")
            signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%S%z")
        except ValueError:
            return "malformed X-Sdk-Date"
        if abs(signed_at - datetime.now(UTC)) > SIGNATURE_WINDOW:
            return "X-Sdk-Date outside the 15-minute window"
        if request.headers["x-project-id"] != self.project_id:
            return "X-Project-Id is not the project"
        if key.security_token is not None and (
            request.headers["x-security-token"] != key.security_token
        ):
            return "wrong security token"
        expected = sdk_authorization(request, signed, access_key, key.secret)
        if not hmac.compare_digest(expected.rsplit("=", 1)[1], signature):
            return "signature mismatch"
        return None

    # --- IAM -----------------------------------------------------------------------------

    def _iam(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != "/v3/auth/tokens":
            return _json(404, {"error_code": "IAM.0000", "error_msg": "not found"})
        try:
            auth = json.loads(request.content)["auth"]
            password = auth["identity"]["password"]["user"]
            who = (password["domain"]["name"], password["name"])
            secret = password["password"]
            project = auth["scope"]["project"]["id"]
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error_code": "IAM.0011", "error_msg": "Request body is invalid."})
        known = self.users.get(who)
        if known is None or not hmac.compare_digest(known, secret) or project != self.project_id:
            return _json(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "The username or password is wrong.",
                        "title": "Unauthorized",
                    },
                    "error_code": "IAM.0001",
                    "error_msg": "The username or password is wrong.",
                },
            )
        token = f"MII-iam-{uuid.uuid4().hex}"
        now = self.clock.now()
        with self.lock:
            self.issued[token] = now + timedelta(hours=24)
        body = {
            "token": {
                "expires_at": (now + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "issued_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "methods": ["password"],
                "project": {"id": self.project_id, "name": "cn-north-4"},
                "user": {"name": who[1], "domain": {"name": who[0]}},
            }
        }
        return httpx.Response(201, json=body, headers={**_headers(), "X-Subject-Token": token})


def sdk_authorization(
    request: httpx.Request, signed: list[str], access_key: str, secret_key: str
) -> str:
    """The Authorization header huaweicloudsdkcore's Signer computes for what arrived."""
    raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
    query = [
        (unquote(k), unquote(v))
        for k, _, v in (pair.partition("=") for pair in raw_query.split("&") if pair)
    ]
    sdk_request = SdkRequest(
        method=request.method,
        schema=request.url.scheme,
        host=request.headers["host"],
        resource_path=raw_path,
        query_params=query,
        header_params={name: request.headers[name] for name in signed},
        body=request.content or "",
    )
    Signer(BasicCredentials(access_key, secret_key)).sign(sdk_request)
    return str(sdk_request.header_params["Authorization"])


def _op(request: httpx.Request) -> str:
    if request.url.host == IAM_HOST:
        return "iam"
    parts = request.url.path.strip("/").split("/")
    later = int(request.url.params.get("offset", "0") or "0") > 0
    if request.method == "DELETE":
        return "act"
    if len(parts) == 4:
        return "list_next" if later else "list"
    if parts[5:] == ["statements"]:
        return "statements_next" if later else "statements"
    return "get"


def _window(request: httpx.Request) -> tuple[int, int] | httpx.Response:
    """``(offset, limit)`` of a paged request, or the 400 for values out of range."""
    try:
        limit = int(request.url.params.get("limit", "10"))
        offset = int(request.url.params.get("offset", "0"))
    except ValueError:
        limit = offset = -1
    if not 1 <= limit <= 100 or not 0 <= offset <= 1_000_000_000:
        return _json(
            400,
            {
                "error_code": "common.01000001",
                "error_msg": "failed to read http request, please check your input, code: 400",
            },
        )
    return offset, limit


def _headers() -> dict[str, str]:
    return {
        "date": format_datetime(datetime.now(UTC), usegmt=True),
        "x-request-id": uuid.uuid4().hex,
    }


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, headers=_headers())


# --- targets and credentials ------------------------------------------------------------------


def credentials_dir() -> Path:
    """A private directory for credential files, removed when the test process ends."""
    path = Path(tempfile.mkdtemp(prefix="janitor-fabric-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def fabric_target(auth: str, secrets: Path, *, name: str = "fabric", **keys: Any) -> dict[str, Any]:
    """A ``fabric_sql`` target's keys for ``auth``, its secret files written into ``secrets``."""
    files = {
        "token": {"token_file": "fabric-token"},
        "aksk": {"secret_key_file": "fake-secret"},
        "password": {"password_file": "fake-password"},
    }[auth]
    for key, value in files.items():
        path = secrets / key
        if not path.exists():
            path.write_text(value + "\n", encoding="utf-8")
    scheme_keys: dict[str, Any] = {key: str(secrets / key) for key in files}
    if auth == "aksk":
        scheme_keys |= {"access_key": "AKFAKE0001", "project_id": PROJECT}
    if auth == "password":
        scheme_keys |= {
            "iam_url": f"http://{IAM_HOST}",
            "domain": "acme",
            "username": "janitor",
            "project_id": PROJECT,
        }
    return {
        "name": name,
        "provider": "fabric_sql",
        "base_url": f"http://{FABRIC_HOST}/",
        "workspaces": ["ws-1", "ws-2"],
        "auth": auth,
        **scheme_keys,
        **keys,
    }


def fabric_config(auth: str, secrets: Path, **keys: Any) -> FabricSqlConfig:
    """A validated ``fabric_sql`` target config (see :func:`fabric_target`)."""
    return FabricSqlConfig.model_validate(fabric_target(auth, secrets, **keys))


# --- the contract fake ----------------------------------------------------------------------


class FabricContract:
    """The fake service as the provider contract suite drives it, signing with AK/SK."""

    provider = "fabric_sql"
    action = Action.STOP
    can = frozenset({"pages", "total"})  # no 409, no etags, no native warning
    page_size = 3

    def __init__(self, clock: Clock) -> None:
        self.server = FabricServer(clock=clock, page_size=self.page_size)
        self.secrets = credentials_dir()

    def connect(self, clock: Clock) -> FabricSqlProvider:
        """The provider on the fake, signing every request."""
        config = fabric_config("aksk", self.secrets)
        return FabricSqlProvider.connect(config, clock, transport=self.server.transport())

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A RUNNING session that never ran a statement, created ``idle_for`` ago."""
        return self.server.add("ws-1", age=idle_for).key

    def touch(self, session_id: str) -> None:
        """A statement runs (and finishes) in the session now."""
        self.server.run(session_id)

    def remove(self, session_id: str) -> None:
        """The session vanishes."""
        with self.server.lock:
            del self.server.sessions[session_id]

    def inject(self, op: str, **kw: Any) -> None:
        """An injected answer."""
        self.server.faults.append(Fault(op=op, **kw))

    def duplicate_across_pages(self, session_id: str) -> None:
        """The next later page repeats ``session_id``."""
        self.server.duplicate_once = session_id

    def short_listing(self) -> None:
        """The next listing reports one session more than it delivers."""
        self.server.short_once = True

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the server."""
        return self.server.requests(op)

    def writes(self) -> int:
        """Requests that change state (IAM token requests are not)."""
        return sum(1 for method, op in self.server.log if method != "GET" and op != "iam")

    def effective(self, session_id: str) -> int:
        """Closes that took effect."""
        return self.server.closes[session_id]

    def activity(self, session_id: str) -> datetime | None:
        """The latest statement's create_time, else the session's."""
        session = self.server.sessions[session_id]
        return max([session.create_time, *(s.create_time for s in session.statements)])

    def finish(self, session_id: str) -> None:
        """The close is synchronous: nothing to complete."""

    def shown_name(self, session_id: str) -> str:
        """Sessions have no name: their id."""
        return session_id.partition("/")[2]
