"""A fake Oracle Enterprise Scheduler (``ess/rest/scheduler/v1``) with an OAuth2 token endpoint.

``EssServer`` keeps job requests and answers the calls janitor makes, in-process through an
``httpx.MockTransport``, the way the documentation describes them (provider-apis.md section 5,
seed 004):

* ``GET requests/search/{pageIndex}`` with ``q=state eq "X"`` (the one documented operator;
  any other filter is a 400), ``orderBy`` and ``fields`` (only the fields asked for come
  back); pages of ``page_size`` items counted from ``first_page`` (0) until an empty page;
  ``{"items": [...], "count": n}``. A page index below ``first_page`` is refused, or, to play
  a server that counts from 1, answered empty or as the first page (``below_first``);
* ``GET requests/{id}``; ``POST requests/{id}/cancel`` and ``/forceCancel`` with the §5.3
  state machine: a queued or held request is CANCELLED at once, a running one goes to
  CANCELLING and stays there until the test calls :meth:`EssServer.finish` (which ends it
  CANCELLED, or ``cancel_ends_in``, e.g. ERROR); a parent's cancel reaches every descendant
  and the parent ends once they have; a terminal (or otherwise uncancellable) request is a
  400 "Unsupported state for operation"; force cancel only for an asynchronous request
  CANCELLING for 30 minutes; POSTs need ``X-Requested-By``;
* errors as problem JSON (``SimpleExceptionDetail``); a ``Date`` and an ECID header on every
  answer;
* auth: HTTP Basic (``username``/``password``) or a bearer token issued by the token endpoint
  ``POST /oauth2/v1/token`` (client credentials with HTTP Basic client authentication, the
  configured ``scope``), which expires after ``token_lifetime`` on the shared clock and can be
  revoked;
* injected answers (:class:`Fault`) for ``list``, ``list_next``, ``get``, ``act`` and
  ``token``, and a hook to change requests between two pages (churn during a listing).

``EssContract`` drives it for the provider contract suite.
"""

from __future__ import annotations

import atexit
import base64
import functools
import json
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote_plus

import httpx

from janitor.clock import Clock
from janitor.model import Action
from janitor.providers.ess import EssProvider
from janitor.targets import EssConfig

TERMINAL = frozenset(
    {
        "SUCCEEDED",
        "WARNING",
        "ERROR",
        "CANCELLED",
        "EXPIRED",
        "VALIDATION_FAILED",
        "FINISHED",
        "SCHEDULE_ENDED",
    }
)
#: cancelled at once (seed 004: "WAIT, READY, BLOCKED or HOLD")
CANCEL_AT_ONCE = frozenset({"WAIT", "READY", "BLOCKED", "HOLD"})
#: cancelled through CANCELLING ("RUNNING or COMPLETED"; PAUSED: a parent waiting for children)
CANCEL_SLOWLY = frozenset({"RUNNING", "COMPLETED", "PAUSED"})
FORCE_CANCEL_AFTER = timedelta(minutes=30)
API = "/ess/rest/scheduler/v1/requests"
TOKEN_PATH = "/oauth2/v1/token"
DROP = object()  # an override that removes the field
_FILTER = re.compile(r'state eq "([A-Z_]+)"')


@dataclass
class Request:
    """One job request as ESS keeps it."""

    id: int
    definition: str
    state: str
    submitted: datetime
    changed: datetime
    submitter: str = "alice"
    parent: int | None = None
    top: int = 0  # absParentRequestId
    type: str = "SINGLETON"
    started: datetime | None = None
    requested_start: datetime | None = None
    asynchronous: bool = False
    cancellable: bool = True
    application: str = "FinancialsEss"
    cancels: int = 0  # cancels that reached it
    force_cancels: int = 0
    #: fields served instead of the real ones (``DROP`` removes one): malformed records
    overrides: dict[str, Any] = field(default_factory=dict)

    def model(self, now: datetime, fields: list[str] | None) -> dict[str, Any]:
        """RequestDetails, only ``fields`` when given."""
        full: dict[str, Any] = {
            "requestId": self.id,
            "state": self.state,
            "submissionTime": _iso(self.submitted),
            "requestedStartTime": _iso(self.requested_start),
            "processStartTime": _iso(self.started),
            "stateChangeTime": _iso(self.changed),
            "submitter": self.submitter,
            "parentRequestId": self.parent,
            "absParentRequestId": self.top,
            "requestType": self.type,
            "isCancellable": self.cancellable and self.state in CANCEL_AT_ONCE | CANCEL_SLOWLY,
            "isForceCancelAllowed": self.force_cancel_allowed(now),
            "isAsynchronous": self.asynchronous,
            "jobDefinitionId": self.definition,
            "application": self.application,
            "product": "AP",
            "jobType": "JAVA_TYPE",
            "description": f"request {self.id}",
        }
        for name, value in self.overrides.items():
            if value is DROP:
                full.pop(name, None)
            else:
                full[name] = value
        if fields is None:
            return full
        return {name: full[name] for name in fields if name in full}

    def force_cancel_allowed(self, now: datetime) -> bool:
        """ESS's rule: asynchronous, CANCELLING for 30 minutes."""
        return (
            self.asynchronous
            and self.state == "CANCELLING"
            and now - self.changed >= FORCE_CANCEL_AFTER
        )


@dataclass
class Fault:
    """An injected answer for the next ``times`` requests of ``op``."""

    op: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: type[httpx.HTTPError] | None = None
    after: bool = False
    times: int = 1
    hits: int = 0
    html: str | None = None  # a page instead of JSON (a proxy's login page)
    #: runs first; without a status, error or page the server then answers itself
    before: Callable[[], None] | None = None


@dataclass
class EssServer:
    """The scheduler and its identity domain, on one clock."""

    clock: Clock
    page_size: int = 25
    username: str = "janitor-svc"
    password: str = "ess pass:wörd"
    client_id: str = "janitor-client"
    client_secret: str = "client+secret/=="
    scope: str = "urn:opc:resource:fusion:pod1:ess/"
    token_lifetime: timedelta = timedelta(hours=1)
    first_page: int = 0
    below_first: Literal["error", "empty", "clamp"] = "error"
    ignore_filter: bool = False
    cancel_ends_in: str = "CANCELLED"
    requests: dict[int, Request] = field(default_factory=dict)
    tokens: dict[str, datetime] = field(default_factory=dict)  # token -> expiry
    token_requests: int = 0
    log: list[tuple[str, str, str]] = field(default_factory=list)  # (method, op, path?query)
    faults: list[Fault] = field(default_factory=list)
    #: called as ``on_page(state, page_index)`` before a state query's page is answered
    on_page: Callable[[str, int], None] | None = None
    duplicate_once: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)
    _next_id: int = 300_001

    # --- the test's levers ----------------------------------------------------------------

    def add(
        self,
        definition: str = "ImportInvoices",
        *,
        state: str = "RUNNING",
        since: timedelta = timedelta(hours=1),
        submitter: str = "alice",
        parent: Request | None = None,
        asynchronous: bool = False,
        requested_start: datetime | None = None,
        cancellable: bool = True,
        request_type: str | None = None,
    ) -> Request:
        """A request in ``state`` since ``since`` ago (a child of ``parent`` if given)."""
        now = self.clock.now()
        with self.lock:
            request_id = self._next_id
            self._next_id += 1
            request = Request(
                id=request_id,
                definition=f"JobDefinition://oracle/apps/ess/financials/{definition}",
                state=state,
                submitted=now - since - timedelta(minutes=5),
                changed=now - since,
                submitter=submitter,
                parent=parent.id if parent else None,
                top=parent.top if parent else request_id,
                type=request_type or ("SUB_REQUEST" if parent else "SINGLETON"),
                started=now - since if state not in ("WAIT", "READY", "BLOCKED", "HOLD") else None,
                requested_start=requested_start,
                asynchronous=asynchronous,
                cancellable=cancellable,
            )
            if parent is not None and parent.type == "SINGLETON":
                parent.type = "JOBSET"
            self.requests[request_id] = request
        return request

    def set_state(self, request_id: int, state: str) -> None:
        """The request moves to ``state`` now."""
        with self.lock:
            request = self.requests[request_id]
            request.state = state
            request.changed = self.clock.now()

    def touch(self, request_id: int) -> None:
        """The request's job is started again (a retry): a new ``processStartTime``."""
        with self.lock:
            self.requests[request_id].started = self.clock.now()

    def finish(self, request_id: int, state: str | None = None) -> None:
        """A CANCELLING request (and its CANCELLING descendants) ends, in ``state`` or
        ``cancel_ends_in``; parents whose children have all ended follow."""
        end = state or self.cancel_ends_in
        with self.lock:
            for request in [self.requests[request_id], *self.descendants(request_id)]:
                if request.state == "CANCELLING" and not self.children(request.id):
                    self._move(request, end)
            self._settle_parents()

    def remove(self, request_id: int) -> None:
        """The request is purged: ESS no longer knows it."""
        with self.lock:
            del self.requests[request_id]

    def revoke_tokens(self) -> None:
        """Every issued token stops working (the API answers 401)."""
        with self.lock:
            self.tokens.clear()

    def children(self, request_id: int) -> list[Request]:
        """The requests whose parent is ``request_id``."""
        return [r for r in self.requests.values() if r.parent == request_id]

    def descendants(self, request_id: int) -> list[Request]:
        """Every request under ``request_id``."""
        found, queue = [], [request_id]
        while queue:
            children = self.children(queue.pop())
            found += children
            queue += [c.id for c in children]
        return found

    def calls(self, op: str) -> list[str]:
        """The paths (with queries) of the requests of ``op`` that reached the server."""
        return [path for _, logged, path in self.log if logged == op]

    # --- the state machine ----------------------------------------------------------------

    def _move(self, request: Request, state: str) -> None:
        request.state = state
        request.changed = self.clock.now()

    def _settle_parents(self) -> None:
        changed = True
        while changed:
            changed = False
            for request in self.requests.values():
                kids = self.descendants(request.id)
                if (
                    request.state == "CANCELLING"
                    and kids
                    and all(k.state in TERMINAL for k in kids)
                ):
                    self._move(request, "CANCELLED")
                    changed = True

    def _cancel(self, request: Request) -> httpx.Response | None:
        """None when the cancel was taken; else the refusal."""
        if request.state not in CANCEL_AT_ONCE | CANCEL_SLOWLY or not request.cancellable:
            return _problem(
                400,
                "Unsupported state for operation",
                f"Request {request.id} is in state {request.state}; cancel is not supported",
                "ESS-04001",
            )
        for target in [request, *self.descendants(request.id)]:
            if target.state in TERMINAL:
                continue
            target.cancels += 1
            if target.state in CANCEL_AT_ONCE:
                self._move(target, "CANCELLED")
            elif target.state in CANCEL_SLOWLY:
                self._move(target, "CANCELLING")
        self._settle_parents()
        return None

    def _force_cancel(self, request: Request) -> httpx.Response | None:
        if not request.force_cancel_allowed(self.clock.now()):
            return _problem(
                400,
                "Unsupported state for operation",
                f"Request {request.id} cannot be force-cancelled in state {request.state}",
                "ESS-04002",
            )
        request.force_cancels += 1
        self._move(request, "CANCELLED")
        self._settle_parents()
        return None

    # --- HTTP -----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An in-process transport to this server, answering injected faults first."""

        def handle(request: httpx.Request) -> httpx.Response:
            op = _op(request, self.first_page)
            with self.lock:
                self.log.append((request.method, op, _path_and_query(request)))
            for fault in self.faults:
                if fault.hits < fault.times and fault.op in (op, _family(op)):
                    fault.hits += 1
                    if fault.before is not None:
                        fault.before()
                        if fault.status is None and fault.error is None and fault.html is None:
                            break
                    if fault.after:
                        self.answer(request)
                    if fault.error is not None:
                        raise fault.error("injected", request=request)
                    if fault.html is not None:
                        return httpx.Response(
                            fault.status or 200, html=fault.html, headers=_headers()
                        )
                    return httpx.Response(
                        fault.status or 500,
                        json=fault.body,
                        headers={**_headers(), **fault.headers},
                    )
            return self.answer(request)

        return httpx.MockTransport(handle)

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The server's own answer."""
        path = request.url.path
        if path == TOKEN_PATH:
            return self._token(request)
        if not self._authenticated(request):
            return _problem(401, "Unauthorized", "Authentication failed", None)
        if not path.startswith(API):
            return _problem(404, "Not Found", f"No resource at {path}", None)
        parts = path[len(API) :].strip("/").split("/")
        params = parse_qs(request.url.query.decode(), keep_blank_values=True)
        fields = _fields(params)
        with self.lock:
            if request.method == "GET" and len(parts) == 2 and parts[0] == "search":
                return self._search(parts[1], params, fields)
            if not parts[0].isdigit() or int(parts[0]) not in self.requests:
                return _problem(404, "Not Found", f"Request ID {parts[0]} not found", "ESS-04040")
            found = self.requests[int(parts[0])]
            if request.method == "GET" and len(parts) == 1:
                return _ok(found.model(self.clock.now(), fields))
            if request.method == "POST" and len(parts) == 2:
                if not request.headers.get("x-requested-by"):
                    return _problem(400, "Bad Request", "X-Requested-By header missing", None)
                act = {"cancel": self._cancel, "forceCancel": self._force_cancel}.get(parts[1])
                if act is None:
                    return _problem(404, "Not Found", f"No operation {parts[1]}", None)
                refusal = act(found)
                if refusal is not None:
                    return refusal
                href = f"http://ess.test{API}/{found.id}"
                return _ok({"links": [{"rel": "self", "href": href}]})
        return _problem(405, "Method Not Allowed", f"{request.method} {path}", None)

    def _search(
        self, index_text: str, params: dict[str, list[str]], fields: list[str] | None
    ) -> httpx.Response:
        try:
            index = int(index_text)
        except ValueError:
            return _problem(400, "Bad Request", f"pageIndex {index_text!r}", "ESS-04003")
        q = params.get("q", [""])[0]
        match = _FILTER.fullmatch(q)
        if match is None:
            return _problem(400, "Bad Request", f"Unsupported query filter {q!r}", "ESS-04004")
        order = params.get("orderBy", ["requestId:asc"])[0]
        if order not in ("requestId:asc", "requestId:desc"):
            return _problem(400, "Bad Request", f"Unsupported orderBy {order!r}", "ESS-04005")
        if index < self.first_page:
            if self.below_first == "error" or index < 0:
                return _problem(400, "Bad Request", f"Invalid pageIndex {index}", "ESS-04006")
            if self.below_first == "empty":
                return _ok({"items": [], "count": 0})
            index = self.first_page  # "clamp"
        state = match.group(1)
        if self.on_page is not None:
            self.on_page(state, index)
        chosen = sorted(
            (r for r in self.requests.values() if self.ignore_filter or r.state == state),
            key=lambda r: r.id,
            reverse=order.endswith("desc"),
        )
        start = (index - self.first_page) * self.page_size
        page = chosen[start : start + self.page_size]
        if self.duplicate_once is not None and index == self.first_page + 1 and page:
            again = self.requests.get(self.duplicate_once)
            if again is not None and again.state == state:
                page = [again, *page]
                self.duplicate_once = None
        now = self.clock.now()
        items = [r.model(now, fields) for r in page]
        return _ok({"items": items, "count": len(items)})

    def _authenticated(self, request: httpx.Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (user, password) == (self.username, self.password)
        if scheme.lower() == "bearer":
            with self.lock:
                expiry = self.tokens.get(value)
            return expiry is not None and self.clock.now() < expiry
        return False

    def _token(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.token_requests += 1
        if request.method != "POST":
            return _oauth_error(405, "invalid_request")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        try:
            pair = base64.b64decode(value).decode() if scheme.lower() == "basic" else ":"
        except (ValueError, UnicodeDecodeError):
            pair = ":"
        client, _, secret = pair.partition(":")
        if (unquote_plus(client), unquote_plus(secret)) != (self.client_id, self.client_secret):
            return _oauth_error(401, "invalid_client")
        form = parse_qs(request.content.decode())
        if form.get("grant_type") != ["client_credentials"]:
            return _oauth_error(400, "unsupported_grant_type")
        if form.get("scope") != [self.scope]:
            return _oauth_error(400, "invalid_scope")
        token = f"tok-{uuid.uuid4().hex}"
        with self.lock:
            self.tokens[token] = self.clock.now() + self.token_lifetime
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": int(self.token_lifetime.total_seconds()),
            },
            headers=_headers(),
        )


def _op(request: httpx.Request, first_page: int) -> str:
    path = request.url.path
    if path == TOKEN_PATH:
        return "token"
    parts = path[len(API) :].strip("/").split("/") if path.startswith(API) else []
    if request.method == "GET" and len(parts) == 2 and parts[0] == "search":
        index = parts[1]
        return "list_next" if index.lstrip("-").isdigit() and int(index) > first_page else "list"
    if request.method == "GET":
        return "get"
    return "act" if request.method == "POST" else "other"


def _family(op: str) -> str:
    """A ``list`` fault answers every listing request, ``list_next`` ones included."""
    return "list" if op == "list_next" else op


def _path_and_query(request: httpx.Request) -> str:
    query = request.url.query.decode()
    return request.url.path + (f"?{query}" if query else "")


def _fields(params: dict[str, list[str]]) -> list[str] | None:
    raw = params.get("fields")
    if not raw:
        return None
    return [f.strip().strip('"') for f in raw[0].split(",") if f.strip()]


def _headers() -> dict[str, str]:
    return {
        "date": format_datetime(datetime.now(UTC), usegmt=True),
        "x-oracle-dms-ecid": f"ecid-{uuid.uuid4().hex[:16]}",
    }


def _ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body, headers=_headers())


def _problem(status: int, title: str, detail: str, code: str | None) -> httpx.Response:
    """SimpleExceptionDetail."""
    body: dict[str, Any] = {
        "type": f"https://developer.mozilla.org/docs/Web/HTTP/Status/{status}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if code:
        body["errorCode"] = code
    headers = _headers()
    if status == 401:
        headers["www-authenticate"] = 'Basic realm="ess", Bearer'
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def _oauth_error(status: int, error: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": error, "error_description": error.replace("_", " ")},
        headers=_headers(),
    )


def _iso(value: datetime | None) -> str | None:
    """ESS's timestamp form: milliseconds and a numeric offset."""
    if value is None:
        return None
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{value.microsecond // 1000:03d}+0000"
    )


# --- configuration and the contract fake ----------------------------------------------------


def ess_target(
    directory: Path, server: EssServer, *, name: str = "ess", auth: str = "basic", **keys: Any
) -> dict[str, Any]:
    """A target table for ``server``, its secret written into ``directory``."""
    table: dict[str, Any] = {
        "name": name,
        "provider": "ess",
        "base_url": "http://ess.test/",
        "requests_per_second": 1000,  # a listing is ~30 requests: no real-time waits in tests
    }
    if auth == "basic":
        secret = directory / f"{name}-password"
        secret.write_text(server.password + "\n", encoding="utf-8")
        table |= {"auth": "basic", "username": server.username, "password_file": str(secret)}
    else:
        secret = directory / f"{name}-client-secret"
        secret.write_text(server.client_secret + "\n", encoding="utf-8")
        table |= {
            "auth": "oauth2",
            "token_url": f"http://idcs.test{TOKEN_PATH}",
            "client_id": server.client_id,
            "client_secret_file": str(secret),
            "scope": server.scope,
        }
    return table | keys


@functools.cache
def _secrets() -> Path:
    """One directory per test process for the contract fake's secret files."""
    directory = tempfile.mkdtemp(prefix="janitor-ess-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return Path(directory)


class EssContract:
    """The fake ESS as the provider contract suite drives it."""

    provider = "ess"
    action = Action.CANCEL
    can = frozenset({"pages", "409"})  # no total, no etag (no 412), no native warning
    page_size = 3

    def __init__(self, clock: Clock) -> None:
        self.server = EssServer(clock=clock, page_size=self.page_size)

    def connect(self, clock: Clock) -> EssProvider:
        """The ess provider on the fake, with Basic auth."""
        config = EssConfig.model_validate(ess_target(_secrets(), self.server))
        return EssProvider.connect(config, clock, transport=self.server.transport())

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A RUNNING request (cancel applies to it), in that state for ``idle_for``."""
        return str(self.server.add(name, since=idle_for).id)

    def touch(self, session_id: str) -> None:
        """The request's job starts again."""
        self.server.touch(int(session_id))

    def remove(self, session_id: str) -> None:
        """ESS forgets the request."""
        self.server.remove(int(session_id))

    def inject(self, op: str, **kw: Any) -> None:
        """An injected answer."""
        self.server.faults.append(Fault(op=op, **kw))

    def duplicate_across_pages(self, session_id: str) -> None:
        """The next listing's second page repeats the request."""
        self.server.duplicate_once = int(session_id)

    def short_listing(self) -> None:
        """ESS reports no total."""
        raise NotImplementedError

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the server (``list`` includes ``list_next``)."""
        ops = {"list", "list_next"} if op == "list" else {op}
        return sum(1 for _, logged, _ in self.server.log if logged in ops)

    def writes(self) -> int:
        """Requests to the scheduler that change state."""
        return sum(1 for method, op, _ in self.server.log if method != "GET" and op != "token")

    def effective(self, session_id: str) -> int:
        """Cancels that reached the request."""
        return self.server.requests[int(session_id)].cancels

    def activity(self, session_id: str) -> datetime | None:
        """The request's latest dated event."""
        request = self.server.requests[int(session_id)]
        return max(t for t in (request.submitted, request.started, request.changed) if t)

    def finish(self, session_id: str) -> None:
        """The cancel completes."""
        self.server.finish(int(session_id))

    def shown_name(self, session_id: str) -> str:
        """The job definition users see."""
        return self.server.requests[int(session_id)].definition
