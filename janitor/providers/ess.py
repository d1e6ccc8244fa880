"""Oracle Enterprise Scheduler (ESS) job requests: stuck requests, cancelled (and force-cancelled).

The ``ess/rest/scheduler/v1`` API of Oracle Fusion Cloud Applications and of SOA Suite's
Enterprise Scheduler, under ``base_url`` (the pod's or server's root). Auth: HTTP Basic
(``username``, ``password_file``) or an OAuth 2.0 bearer token from an IAM identity domain
(client credentials, cached and refreshed: :mod:`janitor.auth.oauth2`). Errors are problem
JSON (``SimpleExceptionDetail``: ``{type, title, status, detail, errorCode}``).

State mapping (``state`` → janitor state):

=========================  =========  =======================================================
ESS state                  state      note
=========================  =========  =======================================================
``WAIT``                   queued     counted from ``requestedStartTime`` when it is later than
                                      ``stateChangeTime`` (a request scheduled for later)
``READY``                  queued
``BLOCKED``                queued     waiting for an incompatible request to finish
``HOLD``                   held       held on purpose: matched only when named
``ERROR_MANUAL_RECOVERY``  held       waits for a person
``PENDING_VALIDATION``     pending
``RUNNING``                busy
``COMPLETED``              busy       the executable finished, post-processing runs
``PAUSED``                 busy       a parent waiting for its sub-requests
``CANCELLING``             stopping   a cancel under way (``force_cancel`` applies here)
``SUCCEEDED`` ``WARNING``  ended      terminal; the listing does not show them
``ERROR`` ``CANCELLED``
``EXPIRED`` ``FINISHED``
``VALIDATION_FAILED``
``SCHEDULE_ENDED``
anything else              unknown    never acted on (``ERROR_AUTO_RETRY``, ``UNKNOWN``, new
                                      states); a cascade onto such a child is blocked
=========================  =========  =======================================================

Naming is consent: ``provider_state: [RUNNING]`` with ``in_state_for: 6h`` matches a stuck
request with no ``state`` key.

Listing. ESS has no listing of unfinished requests; ``GET requests/search/{pageIndex}`` takes
a SCIM filter ``q`` whose one documented operator is ``eq``. So the listing asks
``q=state eq "X"`` for every state not known to be terminal (:data:`QUERIED`), each paged with
``pageIndex`` until an empty page (``orderBy=requestId:asc``: new requests, whose ids are
higher, land on the last page instead of shifting earlier ones), in the order of the life
cycle (:data:`QUERIED`), and then all over again. A request that moves on between two queries
(WAIT → READY → RUNNING) shows up twice: the copy with the later ``stateChangeTime`` wins,
then the later read. One that moves back (HOLD → WAIT after WAIT was asked, a retry going back
to WAIT, a parent resuming from PAUSED) is missed by that pass and found by the second, which
also repeats every paged query whose pages shifted under a request that left its state. A
request is missed only if it moves back during both passes, each time between the two queries
concerned (or its pages shift under it twice); it is listed by the next sweep. (A second pass
in reverse order would be worse: it misses requests that move on, the common case, and a
request just released or retried usually moves on next.)

Page indexes are not documented to start at 0 or 1. janitor starts at 0: if the server counts
from 0 this is right; if it counts from 1 and refuses 0, the listing fails; if it treats 0 as
1, the first two pages are the same and the listing fails; if it answers 0 with an empty page,
janitor notices, because until the server has once answered a page 0 with requests, an empty
page 0 is followed by a look at page 1, and requests there fail the listing. Starting at 1
instead would skip a whole page on a server that counts from 0, with nothing to notice it by.

Record mapping: ``id`` is ``requestId``; ``name`` the last segment of ``jobDefinitionId``;
``kind`` the ``requestType`` (``SINGLETON``, ``JOBSET``, ``SUB_REQUEST``, ...); ``owner`` the
``submitter``; ``parent_id`` the ``parentRequestId``; ``created_at`` the ``submissionTime``;
``state_since`` the ``stateChangeTime`` (for WAIT, the later of it and ``requestedStartTime``,
which may lie in the future: the time in state is then negative and ``in_state_for`` does not
hold); ``last_activity`` the latest of ``submissionTime``, ``processStartTime`` and
``stateChangeTime`` (ESS reports no activity of its own). Labels: ``application``,
``product``, ``job_type`` and ``job_definition`` (the full ``jobDefinitionId``). ESS has no
etag. janitor only reads with GET (the API has no notion of activity a read could touch).

Actions: ``cancel`` (``POST requests/{id}/cancel``): asynchronous, the request stays; a
queued or held request is CANCELLED at once, a running one goes through CANCELLING; a parent's
cancel reaches every child (parents ``cascade``: the parent is cancelled, not each child). It
is allowed only where the record says ``isCancellable``. ``force_cancel``
(``POST requests/{id}/forceCancel``): only for a request in CANCELLING that is asynchronous and
``isForceCancelAllowed`` (ESS wants it CANCELLING for 30 minutes; the policy must say
``provider_state: [CANCELLING]`` and ``in_state_for`` of at least 30m). Answers: 2xx
accepted (settled by later sweeps: CANCELLED is ``executed``, any other end state ``failed``
naming it); 404 already absent; 409 "not now" (``skipped_changed``); 400 "unsupported state"
is looked into with a fresh read: gone is already absent, ended or changed is
``skipped_changed`` naming the state, unchanged is ``failed`` with ESS's detail.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx

from janitor.auth.basic import BasicAuth
from janitor.auth.oauth2 import ClientCredentials
from janitor.clock import Clock
from janitor.errors import ActionRejected, ConfigError, MalformedResponse
from janitor.http import TargetHttp, make_target_http
from janitor.http_errors import PROBLEM_JSON
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers import paging
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kit import ActionSpec, ParentRelation, allowed_actions
from janitor.targets import AdaptiveRate, EssConfig, TargetConfig
from janitor.timestamps import parse_iso

log = logging.getLogger(__name__)

STATES: dict[str, State] = {
    "WAIT": State.QUEUED,
    "READY": State.QUEUED,
    "BLOCKED": State.QUEUED,
    "HOLD": State.HELD,
    "ERROR_MANUAL_RECOVERY": State.HELD,
    "PENDING_VALIDATION": State.PENDING,
    "RUNNING": State.BUSY,
    "COMPLETED": State.BUSY,
    "PAUSED": State.BUSY,
    "CANCELLING": State.STOPPING,
    **dict.fromkeys(
        (
            "SUCCEEDED",
            "WARNING",
            "ERROR",
            "CANCELLED",
            "EXPIRED",
            "VALIDATION_FAILED",
            "FINISHED",
            "SCHEDULE_ENDED",
        ),
        State.ENDED,
    ),
}
#: The states the listing asks for, along the life cycle: every state not known to be
#: terminal, the unknown ones included (a child in one of them protects its parent).
QUERIED: tuple[str, ...] = (
    "PENDING_VALIDATION",
    "WAIT",
    "BLOCKED",
    "READY",
    "HOLD",
    "RUNNING",
    "PAUSED",
    "COMPLETED",
    "CANCELLING",
    "ERROR_AUTO_RETRY",
    "ERROR_MANUAL_RECOVERY",
    "UNKNOWN",
)
SPECS = {
    Action.CANCEL: ActionSpec(
        action=Action.CANCEL,
        applies_to=frozenset(
            {"WAIT", "READY", "BLOCKED", "HOLD", "RUNNING", "COMPLETED", "PAUSED"}
        ),
        removes_record=False,
        end_states=frozenset({"CANCELLED"}),
        transit_states=frozenset({"CANCELLING"}),
        asynchronous=True,
        settle_timeout=timedelta(hours=2),
        cascades=True,
    ),
    Action.FORCE_CANCEL: ActionSpec(
        action=Action.FORCE_CANCEL,
        applies_to=frozenset({"CANCELLING"}),
        removes_record=False,
        end_states=frozenset({"CANCELLED"}),
        transit_states=frozenset({"CANCELLING"}),
        asynchronous=True,
        settle_timeout=timedelta(minutes=30),
    ),
}
API = "ess/rest/scheduler/v1/requests"
#: The first ``pageIndex`` (undocumented; see the module docstring for why 0).
FIRST_PAGE = 0
#: The fields every read asks for (the default field set is not documented).
FIELDS = (
    "requestId",
    "state",
    "submissionTime",
    "requestedStartTime",
    "processStartTime",
    "stateChangeTime",
    "submitter",
    "parentRequestId",
    "absParentRequestId",
    "requestType",
    "isCancellable",
    "isForceCancelAllowed",
    "isAsynchronous",
    "jobDefinitionId",
    "application",
    "product",
    "jobType",
)
_VERBS = {Action.CANCEL: "cancel", Action.FORCE_CANCEL: "forceCancel"}
_LABELS = {
    "application": "application",
    "product": "product",
    "jobType": "job_type",
    "jobDefinitionId": "job_definition",
}
#: Fusion's REST layer wants X-Requested-By on POSTs (CSRF protection); harmless on GETs.
_HEADERS = {"accept": "application/json", "x-requested-by": "janitor"}
#: ``requestedStartTime`` may lie in the future (a request scheduled for later).
_SCHEDULED_AHEAD = timedelta(days=366 * 50)
_OLDEST = datetime.min.replace(tzinfo=UTC)


class EssProvider(ProviderBase):
    """Job requests of one ESS server (a Fusion pod or a SOA Suite domain)."""

    name: ClassVar[str] = "ess"
    specs = SPECS
    parents = ParentRelation.CASCADE
    stable_population = False  # the unfinished requests churn by design
    state_table = STATES
    config_model: ClassVar[type[TargetConfig]] = EssConfig

    def __init__(
        self,
        config: TargetConfig,
        http: TargetHttp,
        clock: Clock,
        *,
        token: ClientCredentials | None = None,
    ) -> None:
        assert isinstance(config, EssConfig)
        self.config = config
        self.http = http
        self.clock = clock
        self._token = token
        #: True once the server answered a page 0 with requests (it counts pages from 0)
        self._zero_based = False

    @classmethod
    def connect(cls, config: TargetConfig, clock: Clock, **http_kw: Any) -> EssProvider:
        """The provider with its HTTP client (``http_kw`` goes to the client factory; its
        ``transport`` serves the OAuth2 token endpoint too)."""
        if not isinstance(config, EssConfig):
            raise ConfigError(f"target {config.name}: not an ess target")
        token = None
        auth: httpx.Auth
        if config.auth == "basic":
            auth = BasicAuth(
                username=_key(config, "username", config.username),
                password_file=_key(config, "password_file", config.password_file),
                target=config.name,
            )
        else:
            token_url = _key(config, "token_url", config.token_url)
            token = ClientCredentials(
                token_url=token_url,
                client_id=_key(config, "client_id", config.client_id),
                client_secret_file=_key(config, "client_secret_file", config.client_secret_file),
                scope=_key(config, "scope", config.scope),
                clock=clock,
                http=make_target_http(
                    target=config.name,
                    base_url=token_url,
                    auth=None,
                    timeout=config.timeout,
                    concurrency=1,
                    rate=_token_rate(config.requests_per_second),
                    transport=http_kw.get("transport"),
                ),
                target=config.name,
            )
            auth = token
        http = make_target_http(
            target=config.name,
            base_url=config.base_url,
            auth=auth,
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            headers=_HEADERS,
            errors=PROBLEM_JSON,
            **http_kw,
        )
        return cls(config, http, clock, token=token)

    async def aclose(self) -> None:
        """Close the API's client and the token endpoint's."""
        try:
            await self.http.aclose()
        finally:
            if self._token is not None:
                await self._token.aclose()

    # --- reading ------------------------------------------------------------------------------

    async def list_sessions(self) -> Listing:
        """Every request in a non-terminal state: the state queries twice over, merged."""
        freshest: dict[str, tuple[tuple[datetime, int], dict[str, Any]]] = {}
        invalid: dict[tuple[str | None, str], InvalidRecord] = {}
        by_pass: list[set[str]] = [set(), set()]
        read = 0
        for number in range(2):
            for state in QUERIED:
                for raw in await self._query(state):
                    read += 1
                    record_id = _request_id(raw)
                    if record_id is None:
                        bad = self._record(raw)
                        assert isinstance(bad, InvalidRecord)
                        invalid[(bad.id, bad.reason)] = bad
                        continue
                    by_pass[number].add(record_id)
                    rank = (self._changed_at(raw), read)
                    if record_id not in freshest or rank > freshest[record_id][0]:
                        freshest[record_id] = (rank, raw)
        late = by_pass[1] - by_pass[0]
        if late:
            log.info(
                "target %s: %d requests were found only by the second pass (submitted or moved "
                "during the first): %s",
                self.config.name,
                len(late),
                ", ".join(sorted(late, key=int)[:10]),
            )
        records: list[Session] = []
        for _, raw in freshest.values():
            record = self._record(raw)
            if isinstance(record, InvalidRecord):
                invalid[(record.id, record.reason)] = record
            else:
                records.append(record)
        records.sort(key=lambda r: int(r.id))
        return Listing(
            sessions=tuple(records),
            invalid=tuple(invalid.values()),
            server_skew=self.http.server_skew,
        )

    async def get_session(self, session: Session) -> Session | None:
        """The fresh request; None when ESS does not know it (404)."""
        path = f"{API}/{_path_id(session.id, self.config.name)}"
        response = await self.http.read("GET", f"{path}?{_query_string(fields=FIELDS)}")
        if response.status_code == 404:
            return None
        record = self._record(self._body(response, f"GET {path}"))
        if isinstance(record, InvalidRecord):
            raise MalformedResponse(f"GET {path}: {record.reason}", target=self.config.name)
        if record.id != session.id:
            raise MalformedResponse(
                f"GET {path}: the answer is request {record.id}", target=self.config.name
            )
        return record

    async def _query(self, state: str) -> list[Any]:
        """Every request ESS lists for ``q=state eq "<state>"``, page after page."""
        q = f'state eq "{state}"'

        async def fetch(index: int) -> paging.Page:
            items = await self._page(q, index, state)
            if index == FIRST_PAGE and items:
                self._zero_based = True
            elif index == FIRST_PAGE and not self._zero_based:
                await self._check_first_page(q, state)
            return paging.Page(items=items, next=None)

        return await paging.collect_until_empty(
            fetch,
            first=FIRST_PAGE,
            key=_request_id,
            target=self.config.name,
            what=f"requests in state {state}",
        )

    async def _check_first_page(self, q: str, state: str) -> None:
        """An empty page 0 from a server not yet seen to count from 0: page 1 must be empty."""
        if await self._page(q, FIRST_PAGE + 1, state):
            raise MalformedResponse(
                f"listing requests in state {state}: pageIndex {FIRST_PAGE} is empty but "
                f"pageIndex {FIRST_PAGE + 1} is not; this server does not count pages from "
                f"{FIRST_PAGE}, so the listing cannot be trusted",
                target=self.config.name,
            )

    async def _page(self, q: str, index: int, state: str) -> list[Any]:
        path = f"{API}/search/{index}"
        query = _query_string(q=q, orderBy="requestId:asc", fields=FIELDS)
        response = await self.http.read("GET", f"{path}?{query}")
        where = f"GET {path} (state {state})"
        body = self._body(response, where)
        items = body.get("items")
        count = body.get("count")
        if items is None and count in (None, 0):
            items = []
        if not isinstance(items, list):
            raise MalformedResponse(f"{where}: items is not a list", target=self.config.name)
        if count is not None and count != len(items):
            raise MalformedResponse(
                f"{where}: count says {count!r} but the page holds {len(items)} items",
                target=self.config.name,
            )
        for raw in items:
            shown = raw.get("state") if isinstance(raw, dict) else None
            if _request_id(raw) is not None and shown != state:
                raise MalformedResponse(
                    f"{where}: the query for state {state} returned request "
                    f"{_request_id(raw)} in state {shown!r}; the server ignores the filter",
                    target=self.config.name,
                )
        return items

    def _body(self, response: httpx.Response, where: str) -> dict[str, Any]:
        """The JSON object of a 200 answer; anything else fails the read."""
        status = response.status_code
        if status != 200:
            raise MalformedResponse(
                f"{where}: expected 200, got {self.http.error_info(response)}",
                target=self.config.name,
                status=status,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise MalformedResponse(
                f"{where}: the body is not a JSON object", target=self.config.name, status=status
            )
        return body

    # --- acting -------------------------------------------------------------------------------

    async def act(self, action: Action, session: Session) -> Receipt:
        """Cancel or force-cancel the request (a parent's cancel reaches its children)."""
        verb = _VERBS.get(action)
        if verb is None:
            raise ActionRejected(f"ess cannot {action}", target=self.config.name)
        path = f"{API}/{_path_id(session.id, self.config.name)}/{verb}"
        response = await self.http.write("POST", path)
        status = response.status_code
        ecid = response.headers.get("x-oracle-dms-ecid")
        if 200 <= status < 300:
            return Receipt(status=status, request_id=ecid, accepted=True)
        info = self.http.error_info(response)
        if status == 404:
            return Receipt(status=status, request_id=ecid, absent=True, detail=str(info))
        if status == 409:
            return Receipt(status=status, request_id=ecid, changed=True, detail=str(info))
        if status == 400:
            return await self._refused(action, session, f"POST {path}: {info}", status, ecid)
        raise ActionRejected(
            f"POST {path}: {info}", target=self.config.name, status=status, request_id=ecid
        )

    async def _refused(
        self, action: Action, session: Session, said: str, status: int, ecid: str | None
    ) -> Receipt:
        """A 400 ("unsupported state"): what the request is now decides what it meant."""
        fresh = await self.get_session(session)
        if fresh is None:
            return Receipt(status=status, request_id=ecid, absent=True, detail=said)
        now = fresh.provider_state
        if fresh.state is State.ENDED:
            return Receipt(
                status=status,
                request_id=ecid,
                changed=True,
                detail=f"the request has already ended: it is {now} ({said})",
            )
        if now != session.provider_state:
            return Receipt(
                status=status,
                request_id=ecid,
                changed=True,
                detail=f"the request is {now} now, no longer {session.provider_state} ({said})",
            )
        raise ActionRejected(
            f"{said} (the request is still {now})",
            target=self.config.name,
            status=status,
            request_id=ecid,
        )

    # --- records ------------------------------------------------------------------------------

    def _changed_at(self, raw: dict[str, Any]) -> datetime:
        """When the copy's state was entered, to tell the fresher of two copies."""
        value, _ = parse_iso(
            raw.get("stateChangeTime"),
            field="stateChangeTime",
            now=self.clock.now(),
            tolerance=self.config.skew_tolerance,
        )
        return value or _OLDEST

    def _record(self, raw: Any) -> Session | InvalidRecord:
        target = self.config.name
        if not isinstance(raw, dict):
            return InvalidRecord(target=target, id=None, reason="request is not a JSON object")
        record_id = _request_id(raw)
        if record_id is None:
            return InvalidRecord(
                target=target,
                id=None,
                reason=f"request without an integer requestId: {_show(raw.get('requestId'))}",
            )
        anomalies: list[str] = []
        provider_state = raw.get("state")
        if not isinstance(provider_state, str):
            anomalies.append(f"state is not a string: {_show(provider_state)}")
            provider_state = _show(provider_state)
        times = {
            name: self._time(raw, name, anomalies)
            for name in ("submissionTime", "processStartTime", "stateChangeTime")
        }
        requested = self._time(raw, "requestedStartTime", anomalies, ahead=_SCHEDULED_AHEAD)
        state_since = times["stateChangeTime"]
        if provider_state == "WAIT" and requested is not None:
            state_since = max(requested, state_since) if state_since else requested
        dated = [value for value in times.values() if value is not None]
        flags = {
            name: _flag(raw, name, anomalies)
            for name in ("isCancellable", "isForceCancelAllowed", "isAsynchronous")
        }
        definition = _text(raw, "jobDefinitionId", anomalies)
        labels = {
            label: value
            for name, label in _LABELS.items()
            if (value := _text(raw, name, anomalies)) is not None
        }
        record = Session(
            target=target,
            provider=self.name,
            id=record_id,
            name=_short_name(definition) or f"request {record_id}",
            kind=_text(raw, "requestType", anomalies) or "request",
            state=STATES.get(provider_state, State.UNKNOWN),
            provider_state=provider_state,
            last_activity=max(dated) if dated else None,
            created_at=times["submissionTime"],
            state_since=state_since,
            owner=_text(raw, "submitter", anomalies),
            labels=labels,
            parent_id=_parent(raw, record_id, anomalies),
            raw=raw,
            anomalies=tuple(anomalies),
        )
        forbidden = []
        if flags["isCancellable"] is not True:
            forbidden.append(Action.CANCEL)
        if flags["isForceCancelAllowed"] is not True or flags["isAsynchronous"] is not True:
            forbidden.append(Action.FORCE_CANCEL)
        return replace(record, actions=allowed_actions(SPECS, record, forbidden=forbidden))

    def _time(
        self,
        raw: dict[str, Any],
        name: str,
        anomalies: list[str],
        *,
        ahead: timedelta | None = None,
    ) -> datetime | None:
        value, problem = parse_iso(
            raw.get(name),
            field=name,
            now=self.clock.now(),
            tolerance=ahead or self.config.skew_tolerance,
        )
        if problem:
            anomalies.append(problem)
        return value


def _key(config: EssConfig, name: str, value: Any) -> Any:
    """A key the auth scheme requires (the config model checked it; say so if not)."""
    if value is None:
        raise ConfigError(f"target {config.name}: {name} is required with auth = {config.auth!r}")
    return value


def _request_id(raw: Any) -> str | None:
    """The request's id as janitor keeps it (the decimal string), or None when unusable."""
    value = raw.get("requestId") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return str(value)


def _path_id(session_id: str, target: str) -> str:
    """``session_id`` for a URL path: ESS ids are integers, anything else is refused."""
    if not session_id.isascii() or not session_id.isdigit():
        raise MalformedResponse(f"{session_id!r} is not an ESS request id", target=target)
    return session_id


def _query_string(**params: str | tuple[str, ...]) -> str:
    """A query string with spaces as ``%20`` (SCIM filters hold spaces and quotes)."""
    pairs = [(k, ",".join(v) if isinstance(v, tuple) else v) for k, v in params.items()]
    return urlencode(pairs, quote_via=quote, safe=",:")


def _parent(raw: dict[str, Any], record_id: str, anomalies: list[str]) -> str | None:
    """``parentRequestId`` (DESIGN 6); a top-level request reports none, 0 or itself."""
    parent = raw.get("parentRequestId")
    if parent is None:
        top = raw.get("absParentRequestId")
        if isinstance(top, int) and not isinstance(top, bool) and top > 0 and str(top) != record_id:
            anomalies.append(
                f"parentRequestId is missing but absParentRequestId is {top}: "
                "the request's own parent is unknown"
            )
            return str(top)
        return None
    if isinstance(parent, bool) or not isinstance(parent, int):
        anomalies.append(f"parentRequestId is not an integer: {_show(parent)}")
        return None
    return str(parent) if parent > 0 and str(parent) != record_id else None


def _flag(raw: dict[str, Any], name: str, anomalies: list[str]) -> bool | None:
    value = raw.get(name)
    if value is None or isinstance(value, bool):
        return value
    anomalies.append(f"{name} is not a boolean: {_show(value)}")
    return None


def _text(raw: dict[str, Any], name: str, anomalies: list[str]) -> str | None:
    value = raw.get(name)
    if value is None or (isinstance(value, str) and value):
        return value
    if value != "":
        anomalies.append(f"{name} is not a string: {_show(value)}")
    return None


def _short_name(definition: str | None) -> str | None:
    """``APXIIMPT`` from ``JobDefinition://oracle/apps/ess/.../APXIIMPT``."""
    if definition is None:
        return None
    tail = definition.rstrip("/").rsplit("/", 1)[-1]
    return tail or None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _token_rate(rate: float | AdaptiveRate) -> float:
    """The token endpoint's fixed rate: an adaptive budget belongs to the ESS API alone (the
    token client shares the target's label, and its answers must not move the API's gauge)."""
    return rate.start if isinstance(rate, AdaptiveRate) else rate
