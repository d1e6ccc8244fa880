"""A fake AWS Glue (interactive sessions) and STS, served in-process, for what moto lacks.

``GlueServer`` speaks the JSON 1.1 protocol (``POST /``, ``X-Amz-Target: AWSGlue.<Op>``) and
STS's query protocol (``Action=GetCallerIdentity``), and implements what janitor relies on:

* SigV4 verification, re-derived here independently of botocore (the canonical request, the
  derived key, the signature) for a known access key, secret and session token; a bad
  signature is a 400 ``InvalidSignatureException`` (STS: 403 ``SignatureDoesNotMatch``);
* the session state machine: ``PROVISIONING`` → ``READY`` (:meth:`GlueServer.ready`) →
  ``STOPPING`` (StopSession) → ``STOPPED`` (:meth:`GlueServer.finish`, or at once with
  ``stop_at_once``); ``FAILED`` and ``TIMEOUT`` can be set; StopSession outside READY and
  DeleteSession outside the ended states answer ``IllegalSessionStateException``;
* statements (``ListStatements``, paged by ``NextToken``, epoch-millisecond times), tags
  (``GetTags`` on the session ARN of the server's account), ``ListSessions`` paged by an
  opaque ``NextToken`` with at most ``page_size`` sessions a page whatever ``MaxResults`` says;
* errors as Glue sends them: HTTP 400 with ``{"__type": ..., "message": ...}`` (throttling
  included: a 400 ``ThrottlingException``), 500 ``InternalServiceException``; every response
  carries a ``Date`` header and an ``x-amzn-RequestId``.

``GlueContract`` drives it for the provider contract suite. The contract injects HTTP statuses;
Glue never answers 401, 403, 404, 409 or 429, so those are translated into the 400 bodies Glue
sends instead (:data:`CONTRACT_ERRORS`): 401 ``UnrecognizedClientException``, 403
``AccessDeniedException``, 404 ``EntityNotFoundException``, 409
``ConcurrentModificationException``, 429 ``ThrottlingException`` (with the injected headers,
so ``Retry-After`` still applies).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import botocore.credentials
import httpx

from janitor.auth.sigv4 import AwsCredentials
from janitor.clock import Clock
from janitor.model import Action
from janitor.providers.glue import GlueProvider
from janitor.targets import GlueConfig

ACCESS_KEY = "AKIDEXAMPLE0000GLUE"
SECRET_KEY = "glue-fake-secret-key/0123456789abcdefEXAMPLE"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
ENDPOINT = "http://glue.test"
CONTRACT_ERRORS = {
    401: "UnrecognizedClientException",
    403: "AccessDeniedException",
    404: "EntityNotFoundException",
    409: "ConcurrentModificationException",
    429: "ThrottlingException",
}
ENDED = ("STOPPED", "FAILED", "TIMEOUT")


def glue_config(name: str = "glue", **keys: Any) -> GlueConfig:
    """A glue target at the fake's endpoint."""
    return GlueConfig.model_validate(
        {"name": name, "provider": "glue", "region": REGION, "endpoint_url": ENDPOINT, **keys}
    )


def static_credentials(token: str | None = None) -> AwsCredentials:
    """The fake's credentials, without botocore's chain."""
    return AwsCredentials(
        profile=None,
        target="glue",
        static=botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY, token),
    )


def _millis(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


@dataclass
class Statement:
    """One statement of a session."""

    id: int
    state: str
    started_on: datetime | None
    completed_on: datetime | None

    def model(self) -> dict[str, Any]:
        """As ListStatements returns it (times in epoch milliseconds)."""
        body: dict[str, Any] = {"Id": self.id, "State": self.state, "Code": "df.count()"}
        if self.started_on is not None:
            body["StartedOn"] = _millis(self.started_on)
        if self.completed_on is not None:
            body["CompletedOn"] = _millis(self.completed_on)
        return body


@dataclass
class GlueSession:
    """One interactive session as Glue keeps it."""

    id: str
    status: str
    created_on: datetime
    role: str = "arn:aws:iam::123456789012:role/GlueInteractive"
    completed_on: datetime | None = None
    statements: list[Statement] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    def model(self) -> dict[str, Any]:
        """As GetSession/ListSessions return it (times in epoch seconds)."""
        body: dict[str, Any] = {
            "Id": self.id,
            "CreatedOn": self.created_on.timestamp(),
            "Status": self.status,
            "Role": self.role,
            "Command": {"Name": "glueetl", "PythonVersion": "3"},
            "GlueVersion": "4.0",
            "IdleTimeout": 2880,
        }
        if self.completed_on is not None:
            body["CompletedOn"] = self.completed_on.timestamp()
        return body


@dataclass
class Fault:
    """An injected answer for the next ``times`` requests of ``op``.

    ``op``: ``list`` (every ListSessions), ``list_next`` (ListSessions with a NextToken),
    ``get``, ``act`` (StopSession and DeleteSession), ``stop``, ``delete``, ``statements``,
    ``tags``, ``sts``. ``code``: a Glue error type for a 400 body (``status`` defaults to 400).
    """

    op: str
    status: int | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: type[httpx.HTTPError] | None = None
    after: bool = False
    times: int = 1
    hits: int = 0


class SignatureError(Exception):
    """The request's SigV4 signature does not verify."""


@dataclass
class GlueServer:
    """Glue's interactive sessions in one account and region, plus STS GetCallerIdentity."""

    clock: Clock
    page_size: int = 3
    statement_page_size: int = 2
    token: str | None = None  # the session token the credentials must carry
    stop_at_once: bool = False  # StopSession goes straight to STOPPED
    sessions: dict[str, GlueSession] = field(default_factory=dict)
    stops: Counter[str] = field(default_factory=Counter)
    deletes: Counter[str] = field(default_factory=Counter)
    #: every request that reached the server: (op, the JSON or form body)
    log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    duplicate_once: str | None = None

    # --- the state machine, driven by tests -------------------------------------------------

    def add(
        self,
        session_id: str,
        *,
        age: timedelta = timedelta(hours=3),
        status: str = "READY",
        tags: dict[str, str] | None = None,
    ) -> GlueSession:
        """A session created ``age`` ago."""
        session = GlueSession(
            id=session_id, status=status, created_on=self.clock.now() - age, tags=tags or {}
        )
        with self.lock:
            self.sessions[session_id] = session
        return session

    def ready(self, session_id: str) -> None:
        """A provisioning session is ready."""
        with self.lock:
            self.sessions[session_id].status = "READY"

    def run(
        self, session_id: str, *, state: str = "AVAILABLE", ago: timedelta = timedelta(0)
    ) -> None:
        """The user runs a statement (finished ``ago``, or still ``state``)."""
        with self.lock:
            session = self.sessions[session_id]
            when = self.clock.now() - ago
            done = state in ("AVAILABLE", "CANCELLED", "ERROR")
            session.statements.append(
                Statement(
                    id=len(session.statements),
                    state=state,
                    started_on=when if state != "WAITING" else None,
                    completed_on=when if done else None,
                )
            )

    def finish(self, session_id: str, status: str = "STOPPED") -> None:
        """A stopping session reaches ``status``."""
        with self.lock:
            session = self.sessions[session_id]
            if session.status == "STOPPING":
                session.status = status
                session.completed_on = self.clock.now()

    def end(self, session_id: str, status: str) -> None:
        """The session ends by itself (FAILED, TIMEOUT) or was stopped long ago."""
        with self.lock:
            session = self.sessions[session_id]
            session.status = status
            session.completed_on = self.clock.now()

    def ops(self, *names: str) -> list[str]:
        """The operations that reached the server, in order (only ``names`` if given)."""
        return [op for op, _ in self.log if not names or op in names]

    # --- the wire -----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An in-process transport to this server, answering injected faults first."""

        def handle(request: httpx.Request) -> httpx.Response:
            op, body = _operation(request)
            with self.lock:
                self.log.append((op, body))
                fault = self._fault(op, body)
            if fault is not None:
                if fault.after:
                    self.answer(request)
                if fault.error is not None:
                    raise fault.error("injected", request=request)
                status = fault.status or 400
                payload = fault.body
                if fault.code is not None:
                    payload = {"__type": fault.code, "message": f"injected {fault.code}"}
                return httpx.Response(
                    status,
                    json=payload,
                    headers={**_headers(), **fault.headers},
                )
            return self.answer(request)

        return httpx.MockTransport(handle)

    def _fault(self, op: str, body: dict[str, Any]) -> Fault | None:
        names = {op, _CONTRACT_OPS.get(op, "")}
        if op == "ListSessions":
            names.add("list_next" if body.get("NextToken") else "")
        for fault in self.faults:
            if fault.hits < fault.times and fault.op in names:
                fault.hits += 1
                return fault
        return None

    def answer(self, request: httpx.Request) -> httpx.Response:
        """Glue's (or STS's) own answer."""
        op, body = _operation(request)
        try:
            self._verify(request, "sts" if op == "sts" else "glue")
        except SignatureError as exc:
            if op == "sts":
                return _sts_error(403, "SignatureDoesNotMatch", str(exc))
            return _error("InvalidSignatureException", str(exc))
        if op == "sts":
            return httpx.Response(
                200,
                text=(
                    '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                    f"<GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/janitor</Arn>"
                    f"<UserId>AIDAEXAMPLE</UserId><Account>{ACCOUNT}</Account>"
                    "</GetCallerIdentityResult></GetCallerIdentityResponse>"
                ),
                headers={**_headers(), "content-type": "text/xml"},
            )
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return _error("UnknownOperationException", f"no operation {op}")
        with self.lock:
            result: httpx.Response = handler(body)
            return result

    def _verify(self, request: httpx.Request, service: str) -> None:
        verify_sigv4(
            request,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            service=service,
            token=self.token,
        )

    # --- operations (called under the lock) -------------------------------------------------

    def _op_ListSessions(self, body: dict[str, Any]) -> httpx.Response:
        ids = list(self.sessions)
        offset = _offset(body.get("NextToken"))
        if offset is None:
            return _error("InvalidInputException", "bad NextToken")
        size = min(int(body.get("MaxResults") or 100), self.page_size)
        page = ids[offset : offset + size]
        items = [self.sessions[i].model() for i in page]
        if self.duplicate_once and offset > 0:
            items = [self.sessions[self.duplicate_once].model(), *items]
            self.duplicate_once = None
        out: dict[str, Any] = {"Ids": [i.get("Id") for i in items], "Sessions": items}
        if offset + size < len(ids):
            out["NextToken"] = _token_for(offset + size)
        return _ok(out)

    def _op_GetSession(self, body: dict[str, Any]) -> httpx.Response:
        session = self.sessions.get(str(body.get("Id")))
        if session is None:
            return _error("EntityNotFoundException", f"Session {body.get('Id')} not found.")
        return _ok({"Session": session.model()})

    def _op_ListStatements(self, body: dict[str, Any]) -> httpx.Response:
        session = self.sessions.get(str(body.get("SessionId")))
        if session is None:
            return _error("EntityNotFoundException", "Session not found.")
        offset = _offset(body.get("NextToken"))
        if offset is None:
            return _error("InvalidInputException", "bad NextToken")
        page = session.statements[offset : offset + self.statement_page_size]
        out: dict[str, Any] = {"Statements": [s.model() for s in page]}
        if offset + self.statement_page_size < len(session.statements):
            out["NextToken"] = _token_for(offset + self.statement_page_size)
        return _ok(out)

    def _op_GetTags(self, body: dict[str, Any]) -> httpx.Response:
        arn = str(body.get("ResourceArn"))
        prefix = f"arn:aws:glue:{REGION}:{ACCOUNT}:session/"
        session = self.sessions.get(arn.removeprefix(prefix)) if arn.startswith(prefix) else None
        if session is None:
            return _error("EntityNotFoundException", f"{arn} not found.")
        return _ok({"Tags": dict(session.tags)})

    def _op_StopSession(self, body: dict[str, Any]) -> httpx.Response:
        session = self.sessions.get(str(body.get("Id")))
        if session is None:
            return _error("EntityNotFoundException", f"Session {body.get('Id')} not found.")
        if session.status != "READY":
            return _error("IllegalSessionStateException", f"Session is in {session.status} status")
        session.status = "STOPPING"
        self.stops[session.id] += 1
        if self.stop_at_once:
            self.finish(session.id)
        return _ok({"Id": session.id})

    def _op_DeleteSession(self, body: dict[str, Any]) -> httpx.Response:
        session = self.sessions.get(str(body.get("Id")))
        if session is None:
            return _error("EntityNotFoundException", f"Session {body.get('Id')} not found.")
        if session.status not in ENDED:
            return _error("IllegalSessionStateException", f"Session is in {session.status} status")
        del self.sessions[session.id]
        self.deletes[session.id] += 1
        return _ok({"Id": session.id})


_CONTRACT_OPS = {
    "ListSessions": "list",
    "GetSession": "get",
    "StopSession": "act",
    "DeleteSession": "act",
    "ListStatements": "statements",
    "GetTags": "tags",
}


def _operation(request: httpx.Request) -> tuple[str, dict[str, Any]]:
    target = request.headers.get("x-amz-target", "")
    content = request.content.decode()
    if not target:
        form = dict(parse_qsl(content))
        return ("sts" if form.get("Action") == "GetCallerIdentity" else "unknown"), form
    body = json.loads(content) if content else {}
    return target.removeprefix("AWSGlue."), body if isinstance(body, dict) else {}


def _headers() -> dict[str, str]:
    return {
        "date": format_datetime(datetime.now(UTC), usegmt=True),
        "x-amzn-requestid": str(uuid.uuid4()),
    }


def _ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        200,
        content=json.dumps(body).encode(),
        headers={**_headers(), "content-type": "application/x-amz-json-1.1"},
    )


def _error(code: str, message: str, status: int = 400) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps({"__type": code, "message": message}).encode(),
        headers={**_headers(), "content-type": "application/x-amz-json-1.1"},
    )


def _sts_error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        text=f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></ErrorResponse>",
        headers={**_headers(), "content-type": "text/xml"},
    )


def _token_for(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset, "n": uuid.uuid4().hex}).encode()).decode()


def _offset(token: Any) -> int | None:
    if not token:
        return 0
    try:
        return int(json.loads(base64.b64decode(str(token)))["offset"])
    except (ValueError, KeyError, TypeError):
        return None


# --- SigV4, checked independently of botocore -----------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def verify_sigv4(
    request: httpx.Request,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    token: str | None = None,
) -> None:
    """Re-derive the request's SigV4 signature from what was received.

    Raises:
        SignatureError: the signature, the key, the scope or the session token is wrong.
    """
    authorization = request.headers.get("authorization", "")
    algorithm, _, rest = authorization.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise SignatureError("not signed with AWS4-HMAC-SHA256")
    parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
    key_id, date, scope_region, scope_service, terminal = parts["Credential"].split("/")
    if key_id != access_key:
        raise SignatureError(f"unknown access key {key_id}")
    if (scope_region, scope_service, terminal) != (region, service, "aws4_request"):
        raise SignatureError(f"wrong scope {scope_region}/{scope_service}/{terminal}")
    if request.headers.get("x-amz-security-token") != token:
        raise SignatureError("wrong or missing session token")
    amz_date = request.headers.get("x-amz-date", "")
    if not amz_date.startswith(date):
        raise SignatureError("x-amz-date does not match the credential scope")
    signed = parts["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        raise SignatureError("host and x-amz-date must be signed")
    headers = "".join(f"{name}:{' '.join(request.headers[name].split())}\n" for name in signed)
    query = "&".join(
        sorted(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in parse_qsl(request.url.query.decode(), keep_blank_values=True)
        )
    )
    if "+" in request.url.query.decode():
        raise SignatureError("a '+' in the query: AWS reads it as a space")
    canonical = "\n".join(
        [
            request.method,
            quote(request.url.path or "/", safe="/-_.~"),
            query,
            headers,
            parts["SignedHeaders"],
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{date}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(("AWS4" + secret_key).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["Signature"]):
        raise SignatureError("the signature does not match")


# --- the contract fake --------------------------------------------------------------------


class GlueContract:
    """The fake Glue as the provider contract suite drives it (the action is ``stop``)."""

    provider = "glue"
    action = Action.STOP
    can = frozenset({"pages", "409"})
    page_size = 3

    def __init__(self, clock: Clock) -> None:
        self.server = GlueServer(clock=clock, page_size=self.page_size)

    def connect(self, clock: Clock) -> GlueProvider:
        """The glue provider on the fake, with the fake's credentials."""
        return GlueProvider.connect(
            glue_config(),
            clock,
            credentials=static_credentials(),
            transport=self.server.transport(),
        )

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A READY session created ``idle_for`` ago that never ran a statement."""
        return self.server.add(name, age=idle_for).id

    def touch(self, session_id: str) -> None:
        """The user runs a statement now."""
        self.server.run(session_id)

    def remove(self, session_id: str) -> None:
        """The session is deleted by someone else."""
        with self.server.lock:
            del self.server.sessions[session_id]

    def inject(
        self,
        op: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        error: type[httpx.HTTPError] | None = None,
        after: bool = False,
        times: int = 1,
    ) -> None:
        """An injected answer; statuses Glue never sends become its 400 errors."""
        code = CONTRACT_ERRORS.get(status) if status is not None else None
        self.server.faults.append(
            Fault(
                op=op,
                status=400 if code else status,
                code=code,
                headers=headers or {},
                body=body,
                error=error,
                after=after,
                times=times,
            )
        )

    def duplicate_across_pages(self, session_id: str) -> None:
        """The second page repeats a session of the first."""
        self.server.duplicate_once = session_id

    def short_listing(self) -> None:
        """Glue reports no total: never called (``total`` is not in ``can``)."""
        raise NotImplementedError

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the server."""
        ops = {"list": ("ListSessions",), "get": ("GetSession",), "act": ("StopSession",)}
        if op == "list_next":
            return sum(1 for o, b in self.server.log if o == "ListSessions" and b.get("NextToken"))
        return len(self.server.ops(*ops[op]))

    def writes(self) -> int:
        """StopSession and DeleteSession requests."""
        return len(self.server.ops("StopSession", "DeleteSession"))

    def effective(self, session_id: str) -> int:
        """Stops that took effect."""
        return self.server.stops[session_id]

    def activity(self, session_id: str) -> datetime | None:
        """The latest statement's time, else the creation time."""
        session = self.server.sessions[session_id]
        times = [s.completed_on or s.started_on for s in session.statements]
        return max([t for t in times if t is not None], default=session.created_on)

    def finish(self, session_id: str) -> None:
        """The stop completes."""
        self.server.finish(session_id)

    def shown_name(self, session_id: str) -> str:
        """The session id (Glue has no separate name)."""
        return session_id
