"""AWS Glue interactive sessions, over the JSON 1.1 protocol with SigV4 (``janitor[aws]``).

Every call is ``POST /`` with ``X-Amz-Target: AWSGlue.<Op>`` and a JSON body
(``application/x-amz-json-1.1``), signed by :class:`janitor.auth.sigv4.SigV4Auth` with
botocore's credential chain, and sent through janitor's shared HTTP client (rate limit,
retries, breaker, metrics, the ``Date`` skew check) with the AWS JSON error model: a 400
``ThrottlingException`` is throttling (backed off and retried), ``AccessDeniedException``,
``UnrecognizedClientException`` and ``ExpiredTokenException`` are auth failures. Reads that
are POSTs are still reads (``http.read``): retried on throttling, 5xx and timeouts. Every call
that takes ``RequestOrigin`` sends ``janitor``.

Listing: ``ListSessions`` with ``MaxResults``/``NextToken``, every page (Glue has no total).
For each session: ``GetTags`` on its ARN (``arn:{partition}:glue:{region}:{account}:
session/{Id}``; the account is ``account_id`` or, read once, STS ``GetCallerIdentity``, at
``endpoint_url`` when it is set) gives the labels; when the tags cannot be read (no account,
no permission, an error) the labels are None, so a label exemption exempts (fail closed).
For a ``READY`` session, ``ListStatements`` (every page) gives its activity. The re-check is
``GetSession`` with the same tags and statements reads.

Activity: Glue reports no last activity. ``last_activity`` of a READY session is its latest
statement's ``StartedOn``/``CompletedOn`` (epoch milliseconds), or its ``CreatedOn`` when it
never ran one; a statement ``WAITING``, ``RUNNING`` or ``CANCELLING`` makes it busy. When the
statements cannot be read the session's activity is unknown: its state is ``unknown`` and an
anomaly says why, so no action is taken on it (never idle by default). A ``PROVISIONING``
session has run nothing: its ``last_activity`` is ``CreatedOn``. An ended session's
``last_activity`` and ``state_since`` are ``CompletedOn`` when Glue reports it (else unknown:
``age`` and janitor's own ``in_state_for`` still work). Listing and reading only call List*
and Get* operations, which run no statement: polling never keeps a session alive (Glue's own
``IdleTimeout`` counts from the last statement).

State mapping (``Status`` → janitor state):

================  =========  ====================================================
Status            state      note
================  =========  ====================================================
``PROVISIONING``  pending    starting; no action applies
``READY``         idle       busy while a statement is WAITING, RUNNING or
                             CANCELLING; unknown when the statements cannot be read
``STOPPING``      stopping   a stop under way; no action applies
``STOPPED``       ended      the record stays until deleted; ``delete`` applies
``FAILED``        ended      ``delete`` applies
``TIMEOUT``       ended      Glue stopped it (``IdleTimeout``/``Timeout``);
                             ``delete`` applies
anything else     unknown    never acted on
================  =========  ====================================================

Record mapping: ``id`` and ``name`` are the session ``Id``; ``kind`` is ``Command.Name``
(``glueetl``, ``gluestreaming``), else ``session``; ``owner`` is the session's IAM ``Role``
(Glue reports no user); ``created_at`` is ``CreatedOn`` (epoch seconds). Glue has no etag:
the re-check compares state and activity.

Actions:

* ``stop``: ``StopSession`` on a READY session; asynchronous (``accepted``), settled when the
  session is ``STOPPED`` (the record stays).
* ``delete``: one intent. A READY session is stopped first (``StopSession``; an
  ``IllegalSessionStateException`` there is tolerated: it is stopping already), then
  ``DeleteSession`` at once. If Glue refuses the delete with ``IllegalSessionStateException``
  because the session is still stopping, the outcome is ``accepted``, and settling asks
  janitor to make the delete again (with the kill switch, the lease and an outcome row) once
  the session has stopped. Ended sessions (STOPPED, FAILED, TIMEOUT) are deleted directly.

Errors on an action: ``EntityNotFoundException`` → already absent;
``ConcurrentModificationException`` → changed (``skipped_changed``, decided again next sweep);
``IllegalSessionStateException`` → the session is read again (gone: absent; stopping for a
delete: accepted; otherwise changed, naming the state). Parents: none.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

import httpx

from janitor.auth.sigv4 import AwsCredentials, SigV4Auth
from janitor.clock import Clock
from janitor.errors import ActionRejected, MalformedResponse, ProviderError
from janitor.http import StripTraceHeaders, TargetHttp, make_target_http
from janitor.http_errors import AWS_JSON, ErrorKind
from janitor.model import Action, InvalidRecord, Listing, Outcome, Session, State
from janitor.providers import paging
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kit import ActionSpec, ParentRelation, Settlement, allowed_actions, judge
from janitor.targets import GlueConfig, TargetConfig
from janitor.timestamps import parse_epoch

log = logging.getLogger(__name__)

STATES: dict[str, State] = {
    "PROVISIONING": State.PENDING,
    "READY": State.IDLE,
    "STOPPING": State.STOPPING,
    "STOPPED": State.ENDED,
    "FAILED": State.ENDED,
    "TIMEOUT": State.ENDED,
}
ENDED = frozenset({"STOPPED", "FAILED", "TIMEOUT"})
#: Statement states that mean work is under way or waiting (the session is busy).
BUSY_STATEMENTS = frozenset({"WAITING", "RUNNING", "CANCELLING"})
DONE_STATEMENTS = frozenset({"AVAILABLE", "CANCELLED", "ERROR"})
SETTLE = timedelta(minutes=30)
SPECS = {
    Action.STOP: ActionSpec(
        action=Action.STOP,
        applies_to=frozenset({"READY"}),
        removes_record=False,
        end_states=frozenset({"STOPPED"}),
        transit_states=frozenset({"STOPPING"}),
        asynchronous=True,
        settle_timeout=SETTLE,
    ),
    Action.DELETE: ActionSpec(
        action=Action.DELETE,
        applies_to=frozenset({"READY", *ENDED}),
        transit_states=frozenset({"STOPPING"}),
        settle_timeout=SETTLE,
    ),
}
ORIGIN = "janitor"
CONTENT_TYPE = "application/x-amz-json-1.1"
_ACCOUNT = re.compile(r"<Account>\s*(\d{12})\s*</Account>")


@dataclass(frozen=True, slots=True)
class _Activity:
    """What a session's statements say: busy, the latest dated activity, anomalies."""

    busy: bool
    latest: datetime | None
    anomalies: tuple[str, ...]


class GlueProvider(ProviderBase):
    """Talks to AWS Glue in one region (or at ``endpoint_url``)."""

    name: ClassVar[str] = "glue"
    specs = SPECS
    parents = ParentRelation.NONE
    stable_population = True
    state_table = STATES
    config_model: ClassVar[type[TargetConfig]] = GlueConfig
    #: ``MaxResults`` of ListSessions (Glue allows 1 to 1000).
    page_size: ClassVar[int] = 100

    def __init__(
        self,
        config: TargetConfig,
        http: TargetHttp,
        clock: Clock,
        *,
        credentials: AwsCredentials,
    ) -> None:
        assert isinstance(config, GlueConfig)
        self.config = config
        self.http = http
        self.clock = clock
        self._partition, suffix = partition_of(config.region)
        self._sts_url = config.endpoint_url or f"https://sts.{config.region}.{suffix}/"
        self._sts_auth = StripTraceHeaders(
            SigV4Auth(credentials, region=config.region, service="sts")
        )
        self._region = config.region
        self._account: str | None = config.account_id

    @classmethod
    def connect(
        cls,
        config: TargetConfig,
        clock: Clock,
        *,
        credentials: AwsCredentials | None = None,
        **http_kw: Any,
    ) -> GlueProvider:
        """Build the provider; nothing is sent and no credential is resolved yet.

        ``credentials``: instead of botocore's chain for the target's ``profile`` (tests).
        """
        assert isinstance(config, GlueConfig)
        credentials = credentials or AwsCredentials(profile=config.profile, target=config.name)
        _, suffix = partition_of(config.region)
        http = make_target_http(
            target=config.name,
            base_url=config.endpoint_url or f"https://glue.{config.region}.{suffix}/",
            auth=SigV4Auth(credentials, region=config.region, service="glue"),
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            errors=AWS_JSON,
            **http_kw,
        )
        return cls(config, http, clock, credentials=credentials)

    # --- reading ----------------------------------------------------------------------------

    async def list_sessions(self) -> Listing:
        """Every page of ListSessions, each session with its tags and (READY) statements."""

        async def fetch(cursor: paging.Cursor) -> paging.Page:
            body: dict[str, Any] = {"MaxResults": self.page_size, "RequestOrigin": ORIGIN}
            if cursor is not None:
                body["NextToken"] = cursor
            data = await self._read("ListSessions", body)
            sessions = data.get("Sessions", [])
            if not isinstance(sessions, list):
                raise MalformedResponse(
                    f"ListSessions: Sessions is a JSON {type(sessions).__name__}, not a list",
                    target=self.config.name,
                )
            return paging.Page(items=sessions, next=_token(data))

        raws = await paging.collect(
            fetch, key=_session_id, target=self.config.name, what="sessions"
        )
        await self._resolve_account()
        return self.listing(await asyncio.gather(*(self._record(raw) for raw in raws)))

    async def get_session(self, session: Session) -> Session | None:
        """GetSession (with tags and statements); None when Glue says it does not exist."""
        response = await self._call("GetSession", {"Id": session.id, "RequestOrigin": ORIGIN})
        if response.status_code != 200:
            info = self.http.error_info(response)
            if info.kind is ErrorKind.NOT_FOUND:
                return None
            raise ProviderError(f"GetSession: {info}", target=self.config.name, info=info)
        raw = _json(response, "GetSession", self.config.name).get("Session")
        await self._resolve_account()
        record = await self._record(raw)
        if isinstance(record, InvalidRecord):
            raise MalformedResponse(f"GetSession: {record.reason}", target=self.config.name)
        return record

    async def _record(self, raw: Any) -> Session | InvalidRecord:
        session_id = _session_id(raw)
        if session_id is None:
            return InvalidRecord(
                target=self.config.name, id=None, reason="session without a string Id"
            )
        now, tolerance = self.clock.now(), self.config.skew_tolerance
        status = raw.get("Status")
        anomalies: list[str] = []
        if not isinstance(status, str):
            anomalies.append(f"Status is not a string: {status!r}")
            status = repr(status)
        created, problem = parse_epoch(
            raw.get("CreatedOn"), field="CreatedOn", now=now, tolerance=tolerance
        )
        completed, problem2 = parse_epoch(
            raw.get("CompletedOn"), field="CompletedOn", now=now, tolerance=tolerance
        )
        anomalies += [p for p in (problem, problem2) if p]
        state = STATES.get(status, State.UNKNOWN)
        last_activity: datetime | None = None
        state_since: datetime | None = None
        reads: list[Any] = [self._tags(session_id)]
        if status == "READY":
            reads.append(self._activity(session_id))
        labels, *activity = await asyncio.gather(*reads)
        if status == "READY":
            found: _Activity | str = activity[0]
            if isinstance(found, str):
                state = State.UNKNOWN
                anomalies.append(found)
            else:
                anomalies += found.anomalies
                state = State.BUSY if found.busy else State.IDLE
                last_activity = max((t for t in (found.latest, created) if t), default=None)
        elif status == "PROVISIONING":
            last_activity = created
        elif status in ENDED:
            last_activity = state_since = completed
        command = raw.get("Command")
        kind = command.get("Name") if isinstance(command, dict) else None
        role = raw.get("Role")
        record = Session(
            target=self.config.name,
            provider=self.name,
            id=session_id,
            name=session_id,
            kind=kind if isinstance(kind, str) and kind else "session",
            state=state,
            provider_state=status,
            last_activity=last_activity,
            created_at=created,
            state_since=state_since,
            owner=role if isinstance(role, str) and role else None,
            labels=labels,
            raw=raw,
            anomalies=tuple(anomalies),
        )
        return replace(record, actions=allowed_actions(SPECS, record))

    async def _activity(self, session_id: str) -> _Activity | str:
        """The statements of a READY session, every page; a sentence when they cannot be read."""

        async def fetch(cursor: paging.Cursor) -> paging.Page:
            body: dict[str, Any] = {"SessionId": session_id, "RequestOrigin": ORIGIN}
            if cursor is not None:
                body["NextToken"] = cursor
            data = await self._read("ListStatements", body)
            statements = data.get("Statements", [])
            if not isinstance(statements, list):
                raise MalformedResponse(
                    "ListStatements: Statements is not a list", target=self.config.name
                )
            return paging.Page(items=statements, next=_token(data))

        try:
            raws = await paging.collect(
                fetch, key=_statement_id, target=self.config.name, what="statements"
            )
        except ProviderError as exc:
            log.warning("session %s: statements cannot be read: %s", session_id, exc)
            return f"its statements could not be read, so its activity is unknown: {exc}"
        now, tolerance = self.clock.now(), self.config.skew_tolerance
        busy, latest, anomalies = False, None, []
        for raw in raws:
            if not isinstance(raw, dict):
                anomalies.append(f"a statement is not an object: {raw!r:.80}")
                continue
            state = raw.get("State")
            if state in BUSY_STATEMENTS:
                busy = True
            elif state not in DONE_STATEMENTS:
                anomalies.append(f"statement {raw.get('Id')!r} is in an unknown state {state!r}")
            for name in ("StartedOn", "CompletedOn"):
                when, problem = parse_epoch(
                    raw.get(name),
                    field=f"statement {name}",
                    now=now,
                    tolerance=tolerance,
                    millis=True,
                )
                if problem:
                    anomalies.append(problem)
                elif when is not None and (latest is None or when > latest):
                    latest = when
        return _Activity(busy=busy, latest=latest, anomalies=tuple(anomalies))

    async def _tags(self, session_id: str) -> dict[str, str] | None:
        """The session's tags; None when they cannot be read (label exemptions then exempt)."""
        if self._account is None:
            return None
        arn = f"arn:{self._partition}:glue:{self._region}:{self._account}:session/{session_id}"
        try:
            data = await self._read("GetTags", {"ResourceArn": arn})
        except ProviderError as exc:
            log.warning("session %s: tags cannot be read: %s", session_id, exc)
            return None
        tags = data.get("Tags", {})
        if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
        ):
            log.warning("session %s: GetTags sent tags that are not strings", session_id)
            return None
        return dict(tags)

    async def _resolve_account(self) -> None:
        """The account of the tag ARNs: ``account_id``, else STS GetCallerIdentity (once)."""
        if self._account is not None:
            return
        try:
            response = await self.http.read(
                "POST",
                self._sts_url,
                content=b"Action=GetCallerIdentity&Version=2011-06-15",
                headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
                auth=self._sts_auth,
            )
        except ProviderError as exc:
            log.warning("the account id cannot be read from STS, tags are unknown: %s", exc)
            return
        found = _ACCOUNT.search(response.text) if response.status_code == 200 else None
        if found is None:
            log.warning(
                "STS GetCallerIdentity answered %s without an account id: tags are unknown",
                self.http.error_info(response) if response.status_code != 200 else 200,
            )
            return
        self._account = found.group(1)

    # --- acting -----------------------------------------------------------------------------

    async def act(self, action: Action, session: Session) -> Receipt:
        """Stop the session, or delete it (stopping a READY one first), under one intent."""
        if action is Action.STOP:
            return await self._stop(session)
        if action is not Action.DELETE:
            raise ActionRejected(f"glue cannot {action}", target=self.config.name)
        if session.provider_state == "READY":
            response = await self._call("StopSession", _ids(session), write=True)
            info = self.http.error_info(response)
            if info.kind is ErrorKind.NOT_FOUND:
                return Receipt(status=response.status_code, absent=True, detail=str(info))
            if info.kind is ErrorKind.NOT_NOW:
                return Receipt(status=response.status_code, changed=True, detail=str(info))
            if info.kind not in (None, ErrorKind.INVALID_STATE):
                raise ActionRejected(f"StopSession: {info}", target=self.config.name, info=info)
        response = await self._call("DeleteSession", _ids(session), write=True)
        info = self.http.error_info(response)
        if info.kind is None:
            return Receipt(status=response.status_code, request_id=_request_id(response))
        if info.kind is ErrorKind.INVALID_STATE:
            return await self._refused(session, response, stopping_ok=True)
        return self._receipt(response, "DeleteSession")

    async def _stop(self, session: Session) -> Receipt:
        response = await self._call("StopSession", _ids(session), write=True)
        if response.status_code == 200:
            return Receipt(status=200, accepted=True, request_id=_request_id(response))
        if self.http.error_info(response).kind is ErrorKind.INVALID_STATE:
            return await self._refused(session, response, stopping_ok=False)
        return self._receipt(response, "StopSession")

    async def _refused(
        self, session: Session, response: httpx.Response, *, stopping_ok: bool
    ) -> Receipt:
        """An IllegalSessionStateException: read the session again to say what it means."""
        info = self.http.error_info(response)
        fresh = await self.get_session(session)
        if fresh is None:
            return Receipt(status=response.status_code, absent=True, detail=str(info))
        state = fresh.provider_state
        if stopping_ok and (state == "STOPPING" or state in ENDED):
            return Receipt(
                status=response.status_code,
                accepted=True,
                request_id=_request_id(response),
                detail=f"the session is {state}; it is deleted once it has stopped",
            )
        return Receipt(
            status=response.status_code,
            changed=True,
            detail=f"the session is {state} ({info})",
        )

    def _receipt(self, response: httpx.Response, op: str) -> Receipt:
        info = self.http.error_info(response)
        status = response.status_code
        if info.kind is ErrorKind.NOT_FOUND:
            return Receipt(status=status, absent=True, detail=str(info))
        if info.kind is ErrorKind.NOT_NOW:
            return Receipt(status=status, changed=True, detail=str(info))
        raise ActionRejected(f"{op}: {info}", target=self.config.name, status=status, info=info)

    async def settle(
        self, action: Action, session: Session, *, accepted: bool, waited: timedelta
    ) -> Settlement:
        """A stop settles from the spec; a delete whose session has stopped is made again."""
        if action is not Action.DELETE:
            return await super().settle(action, session, accepted=accepted, waited=waited)
        fresh = await self.get_session(session)
        if fresh is not None and fresh.provider_state in ENDED:
            if accepted and not fresh.anomalies:
                return Settlement(
                    outcome=None,
                    again=True,
                    record=fresh,
                    reason=f"the session is {fresh.provider_state}: deleting it now",
                )
            return Settlement(
                outcome=Outcome.FAILED,
                reason=(
                    f"the session is {fresh.provider_state} but still there: the delete did "
                    "not complete; it will be decided anew"
                ),
            )
        return judge(
            SPECS[Action.DELETE],
            fresh,
            accepted=accepted,
            waited=waited,
            timeout=self.config.settle_timeout,
        )

    # --- the protocol -----------------------------------------------------------------------

    async def _call(self, op: str, body: dict[str, Any], *, write: bool = False) -> httpx.Response:
        """One JSON 1.1 call: ``POST /`` with ``X-Amz-Target: AWSGlue.<op>``."""
        send = self.http.write if write else self.http.read
        return await send(
            "POST",
            "/",
            content=json.dumps(body).encode(),
            headers={"x-amz-target": f"AWSGlue.{op}", "content-type": CONTENT_TYPE},
        )

    async def _read(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON object a read answered; any error answer raises."""
        response = await self._call(op, body)
        if response.status_code != 200:
            info = self.http.error_info(response)
            raise ProviderError(
                f"{op}: {info}",
                target=self.config.name,
                status=response.status_code,
                request_id=_request_id(response),
                info=info,
            )
        return _json(response, op, self.config.name)


@functools.cache
def partition_of(region: str) -> tuple[str, str]:
    """The partition (``aws``, ``aws-cn``, ...) and DNS suffix of ``region``, from botocore."""
    import botocore.loaders  # type: ignore[import-untyped]

    data = botocore.loaders.create_loader().load_data("partitions")
    for partition in data["partitions"]:
        if re.fullmatch(partition["regionRegex"], region):
            return str(partition["outputs"]["name"]), str(partition["outputs"]["dnsSuffix"])
    return "aws", "amazonaws.com"


def _ids(session: Session) -> dict[str, Any]:
    return {"Id": session.id, "RequestOrigin": ORIGIN}


def _session_id(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("Id"), str) and raw["Id"]:
        return str(raw["Id"])
    return None


def _statement_id(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("Id"), int | str):
        return str(raw["Id"])
    return None


def _token(data: dict[str, Any]) -> str | None:
    token = data.get("NextToken")
    return token if isinstance(token, str) and token else None


def _request_id(response: httpx.Response) -> str | None:
    value = response.headers.get("x-amzn-requestid")
    return str(value) if value is not None else None


def _json(response: httpx.Response, op: str, target: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise MalformedResponse(f"{op}: the body is not JSON", target=target) from None
    if not isinstance(body, dict):
        raise MalformedResponse(f"{op}: the body is not a JSON object", target=target)
    return body
