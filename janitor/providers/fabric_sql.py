"""Huawei Cloud DataArts Fabric SQL sessions, in the workspaces of one target.

Lists ``GET v1/workspaces/{ws}/sessions`` under ``base_url`` for each workspace (``limit`` 100,
``offset`` until the reported ``total``); ids are ``workspace/session_id``. For each RUNNING
session it then reads every page of its statement records (``GET .../sessions/{id}/statements``,
``{"records": [...], "total": N}``; the order of the records is not documented, so none is
assumed). janitor sends only GETs to read, which run no statement and so never count as
activity; the one write is the close.

State mapping (``status`` → janitor state):

============  =========  ==========================================================
status        state      note
============  =========  ==========================================================
``RUNNING``   idle       busy while a statement is RUNNING or SUBMITTED; unknown
                         when its statements cannot be read or one has a status the
                         API does not document
``CREATING``  pending    being created (it ends RUNNING or FAIL by itself)
``WAITING``   queued     waiting (semantics undocumented); matched only when named
``CLOSED``    ended      closed by a user, janitor or the service; never closed again
``FAIL``      ended      creation failed
anything      unknown    never acted on
============  =========  ==========================================================

Idleness (DESIGN 6 "Fabric idleness"): the API has no last-activity field, and a statement
record carries only its ``create_time``, not when it finished. So ``activity`` is a fingerprint
of the statement records (their ids and statuses) and ``last_activity`` the latest
``create_time``; the engine counts a session idle from the later of that and the first sweep
that saw the fingerprint, and its idleness is unknown before janitor has seen it once (so on a
fresh install, a session whose statements are all finished waits one ``idle_for`` of
observation). A session that never ran a statement has no fingerprint and is idle since its
``create_time``. The owner is the ``user_name`` of the latest statement.

Timestamps: the format is not documented. ISO-8601 with an offset is read as it is; one without
an offset is read in the target's ``timestamp_zone`` (an IANA zone), and without that key it is
unknown (an anomaly: the session is not acted on).

Record mapping: ``id`` is ``workspace/session_id``, ``name`` the session id, ``kind``
``sql_session``, ``created_at`` the ``create_time``. Labels: ``workspace``, and the scalar
fields of ``endpoint_info`` (``endpoint_id`` ...; the object's fields are not documented).
There are no tags, etags or connection counts. The re-check reads
``GET .../sessions/{id}`` (documented to return only ``session_id`` and ``status``) and the
statements again; ``create_time`` and ``endpoint_info``, which do not change, come from the
listed record.

Action: ``stop`` closes the session (``DELETE .../sessions/{id}``, synchronous, 200 with an
empty body; the record stays, ``CLOSED``). A 404 means already gone; a 400 is re-read: a
session now ``CLOSED`` or ``FAIL`` is ``skipped_changed`` naming its state, anything else a
refusal. Huawei's ``error_code``, ``error_msg`` and ``solution_msg`` go into the audit row.
Throttling (429, ``APIG.0308``), 408 and 5xx are the shared client's: reads are retried, a
close that got a 408 or 5xx is ``unknown`` and reconciled by re-reading. ``delete`` is not
offered: the API has no way to remove a session record.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from janitor.auth.huawei import AkSkAuth, IamPasswordAuth, TokenFileAuth
from janitor.clock import Clock
from janitor.errors import ActionRejected, AuthFailed, MalformedResponse, ProviderError
from janitor.http import TargetHttp, make_target_http
from janitor.http_errors import HUAWEI, ErrorKind
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers import paging
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kit import ActionSpec, ParentRelation, allowed_actions
from janitor.targets import FabricSqlConfig, TargetConfig
from janitor.timestamps import check_aware

STATES: dict[str, State] = {
    "RUNNING": State.IDLE,
    "CREATING": State.PENDING,
    "WAITING": State.QUEUED,
    "CLOSED": State.ENDED,
    "FAIL": State.ENDED,
}
#: Statement statuses that mean the session is working.
ACTIVE_STATEMENTS = frozenset({"RUNNING", "SUBMITTED"})
#: Statement statuses that mean the statement is over.
FINISHED_STATEMENTS = frozenset({"SUCCESSFUL", "FAILED", "CANCELED", "ERROR"})
#: Page size asked for (the API's maximum).
PAGE_LIMIT = 100
#: Session and workspace ids as documented: letters, digits and hyphens (1 to 36; a little
#: slack on the length). Anything else never goes into a URL path.
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
ENDED_STATES = frozenset({"CLOSED", "FAIL"})
SPECS = {
    Action.STOP: ActionSpec(
        action=Action.STOP,
        applies_to=frozenset({"RUNNING", "WAITING"}),
        removes_record=False,
        end_states=frozenset({"CLOSED"}),
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Statements:
    """What a session's statement records say about its activity.

    ``fingerprint`` is None for a session that never ran a statement; ``unreadable`` says
    why the records could not be read (the session's activity is then unknown).
    """

    busy: bool = False
    latest: datetime | None = None
    owner: str | None = None
    fingerprint: str | None = None
    anomalies: tuple[str, ...] = ()
    undocumented: bool = False  # a status the API does not document: busy or not is unknown
    unreadable: str | None = None


class FabricSqlProvider(ProviderBase):
    """DataArts Fabric SQL sessions of the workspaces of one target."""

    name: ClassVar[str] = "fabric_sql"
    specs = SPECS
    parents = ParentRelation.NONE
    stable_population = True
    state_table = STATES
    config_model: ClassVar[type[TargetConfig]] = FabricSqlConfig

    config: FabricSqlConfig

    def __init__(
        self,
        config: TargetConfig,
        http: TargetHttp,
        clock: Clock,
        auth: httpx.Auth | None = None,
    ) -> None:
        assert isinstance(config, FabricSqlConfig)
        self.config = config
        self.http = http
        self.clock = clock
        self._auth = auth
        self._zone: tzinfo | None = (
            zoneinfo.ZoneInfo(config.timestamp_zone) if config.timestamp_zone else None
        )

    @classmethod
    def connect(cls, config: TargetConfig, clock: Clock, **http_kw: Any) -> FabricSqlProvider:
        """Build the provider with its auth scheme and its own HTTP client."""
        assert isinstance(config, FabricSqlConfig)
        auth = _auth(config, clock, http_kw.get("transport"))
        http = make_target_http(
            target=config.name,
            base_url=config.base_url,
            auth=auth,
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            errors=HUAWEI,
            **http_kw,
        )
        return cls(config, http, clock, auth)

    async def aclose(self) -> None:
        """Close the HTTP client (and the IAM client of the password scheme)."""
        await self.http.aclose()
        if isinstance(self._auth, IamPasswordAuth):
            await self._auth.aclose()

    # --- listing -------------------------------------------------------------------------

    async def list_sessions(self) -> Listing:
        """Every session of every workspace, with the statements of the RUNNING ones."""
        listed: list[tuple[str, Any]] = []
        for workspace in self.config.workspaces:
            listed += [(workspace, raw) for raw in await self._list_workspace(workspace)]
        running = [
            (workspace, raw["session_id"])
            for workspace, raw in listed
            if _session_id(raw) and raw.get("status") == "RUNNING"
        ]
        try:
            # an auth failure cancels the other reads: no request outlives the listing
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._statements(ws, sid)) for ws, sid in running]
        except* AuthFailed as failed:
            raise failed.exceptions[0] from None
        statements = {key: task.result() for key, task in zip(running, tasks, strict=True)}
        return self.listing(
            self._record(workspace, raw, statements.get((workspace, _session_id(raw) or "")))
            for workspace, raw in listed
        )

    async def _list_workspace(self, workspace: str) -> list[Any]:
        path = f"v1/workspaces/{quote(workspace, safe='')}/sessions"

        async def fetch(offset: int) -> paging.Page:
            body = await self._read_json(path, {"limit": PAGE_LIMIT, "offset": offset})
            return _page(body, "sessions", path, self.config.name)

        return await paging.collect_offset(
            fetch,
            key=_session_id,
            target=self.config.name,
            what=f"sessions of workspace {workspace}",
        )

    async def _statements(self, workspace: str, session_id: str) -> Statements:
        """The session's statement records, every page; never raises but for auth failures."""
        path = f"{_session_path(workspace, session_id)}/statements"

        async def fetch(offset: int) -> paging.Page:
            body = await self._read_json(path, {"limit": PAGE_LIMIT, "offset": offset})
            return _page(body, "records", path, self.config.name)

        try:
            records = await paging.collect_offset(
                fetch,
                key=_statement_id,
                target=self.config.name,
                what=f"statements of session {workspace}/{session_id}",
            )
        except AuthFailed:
            raise  # credentials or permissions: the listing fails, with the reason
        except ProviderError as exc:
            return Statements(unreadable=f"its statements could not be read: {exc}")
        return self._read_statements(records)

    def _read_statements(self, records: list[Any]) -> Statements:
        if not records:
            return Statements()
        anomalies: list[str] = []
        entries: list[tuple[str, str]] = []
        dated: list[tuple[datetime, str | None]] = []
        busy = undocumented = False
        for raw in records:
            if not isinstance(raw, dict):
                anomalies.append(f"a statement record is not an object: {_short(raw)}")
                continue
            statement_id, status = raw.get("statement_id"), raw.get("status")
            if not isinstance(statement_id, str) or not statement_id:
                anomalies.append("a statement record has no statement_id")
                statement_id = ""
            if not isinstance(status, str) or status not in ACTIVE_STATEMENTS | FINISHED_STATEMENTS:
                anomalies.append(
                    f"statement {statement_id or '?'} has the status {_short(status)}, "
                    "which the API does not document"
                )
                undocumented = True
            busy = busy or status in ACTIVE_STATEMENTS
            entries.append((statement_id, str(status)))
            created, problem = self._time(raw.get("create_time"), "statement create_time")
            if problem:
                anomalies.append(problem)
            elif created is not None:
                user = raw.get("user_name")
                dated.append((created, user if isinstance(user, str) and user else None))
        latest = max(dated, key=lambda item: item[0]) if dated else None
        return Statements(
            busy=busy,
            latest=latest[0] if latest else None,
            owner=latest[1] if latest else None,
            fingerprint=_fingerprint(entries),
            anomalies=tuple(dict.fromkeys(anomalies)),
            undocumented=undocumented,
        )

    # --- records -------------------------------------------------------------------------

    def _record(
        self, workspace: str, raw: Any, statements: Statements | None
    ) -> Session | InvalidRecord:
        sid = _session_id(raw)
        if sid is None:
            return InvalidRecord(
                target=self.config.name,
                id=None,
                reason=f"a session of workspace {workspace} has no valid session_id "
                f"(letters, digits and hyphens): {_short(raw)}",
            )
        anomalies: list[str] = []
        provider_state = raw.get("status")
        if not isinstance(provider_state, str):
            anomalies.append(f"status is not a string: {_short(provider_state)}")
            provider_state = repr(provider_state)
        state = STATES.get(provider_state, State.UNKNOWN)
        created, problem = self._time(raw.get("create_time"), "create_time")
        if problem:
            anomalies.append(problem)
        last_activity: datetime | None = None
        fingerprint = owner = None
        if provider_state == "RUNNING":
            if statements is None or statements.unreadable:
                anomalies.append(
                    statements.unreadable
                    if statements and statements.unreadable
                    else "its statements were not read"
                )
                state = State.UNKNOWN
            else:
                anomalies += statements.anomalies
                fingerprint, owner = statements.fingerprint, statements.owner
                if statements.undocumented:
                    state = State.UNKNOWN
                elif statements.busy:
                    state = State.BUSY
                if fingerprint is None:
                    last_activity = created  # never ran a statement: idle since created
                elif statements.latest is not None:
                    last_activity = max(filter(None, (created, statements.latest)))
        record = Session(
            target=self.config.name,
            provider=self.name,
            id=f"{workspace}/{sid}",
            name=sid,
            kind="sql_session",
            state=state,
            provider_state=provider_state,
            last_activity=last_activity,
            created_at=created,
            owner=owner,
            labels=_labels(workspace, raw.get("endpoint_info")),
            raw=raw,
            anomalies=tuple(anomalies),
            activity=fingerprint,
        )
        return replace(record, actions=allowed_actions(SPECS, record))

    def _time(self, value: object, field: str) -> tuple[datetime | None, str | None]:
        """A timestamp: ISO-8601 with an offset, or without one in ``timestamp_zone``."""
        if value is None:
            return None, None
        if not isinstance(value, str):
            return None, f"{field} is not a string: {_short(value)}"
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None, f"{field} is not a timestamp: {_short(value)}"
        if parsed.tzinfo is None:
            if self._zone is None:
                return None, (
                    f"{field} has no time zone: {_short(value)}; set the target's "
                    "timestamp_zone to say how to read it"
                )
            parsed = parsed.replace(tzinfo=self._zone)
        return check_aware(
            parsed,
            field=field,
            now=self.clock.now(),
            tolerance=self.config.skew_tolerance,
            raw=value,
        )

    # --- the re-check and the close ------------------------------------------------------

    async def get_session(self, session: Session) -> Session | None:
        """The fresh status and statements of ``session``; None once it is gone (404)."""
        workspace, sid = self._split(session.id)
        status = await self._status(workspace, sid)
        if status is None:
            return None
        listed = session.raw if session.raw.get("session_id") == sid else {}
        raw = {**listed, **status}
        statements = (
            await self._statements(workspace, sid) if raw.get("status") == "RUNNING" else None
        )
        result = self._record(workspace, raw, statements)
        if isinstance(result, InvalidRecord):
            raise MalformedResponse(result.reason, target=self.config.name)
        return result

    async def _status(self, workspace: str, sid: str) -> dict[str, Any] | None:
        """``GET .../sessions/{id}``: ``{session_id, status}``; None on 404."""
        path = _session_path(workspace, sid)
        response = await self.http.read("GET", path)
        if response.status_code == 404:
            return None
        body = self._json(response, path)
        if not isinstance(body, dict) or body.get("session_id") not in (sid, None):
            raise MalformedResponse(
                f"GET {path}: expected the session {sid}, got {_short(body)}",
                target=self.config.name,
                status=response.status_code,
            )
        return {**body, "session_id": sid}

    async def act(self, action: Action, session: Session) -> Receipt:
        """Close the session; a 400 is re-read to tell "already closed" from a refusal."""
        if action is not Action.STOP:
            raise ActionRejected(f"fabric_sql cannot {action}", target=self.config.name)
        workspace, sid = self._split(session.id)
        response = await self.http.write("DELETE", _session_path(workspace, sid))
        status = response.status_code
        request_id = response.headers.get("x-request-id")
        if 200 <= status < 300:
            return Receipt(status=status, request_id=request_id)
        info = self.http.error_info(response)
        if status == 404:
            return Receipt(status=status, request_id=request_id, absent=True, detail=str(info))
        if status == 400:
            now = await self._status(workspace, sid)
            if now is None:
                return Receipt(status=status, request_id=request_id, absent=True, detail=str(info))
            if now.get("status") in ENDED_STATES:
                return Receipt(
                    status=status,
                    request_id=request_id,
                    changed=True,
                    detail=f"the session is already {now['status']} ({info})",
                )
            raise ActionRejected(
                f"{info}; the session is {_short(now.get('status'))}",
                target=self.config.name,
                status=status,
                request_id=request_id,
                info=info,
            )
        if info.kind is ErrorKind.NOT_NOW:
            return Receipt(status=status, request_id=request_id, changed=True, detail=str(info))
        raise ActionRejected(
            str(info), target=self.config.name, status=status, request_id=request_id, info=info
        )

    # --- helpers -------------------------------------------------------------------------

    def _split(self, session_id: str) -> tuple[str, str]:
        workspace, _, sid = session_id.partition("/")
        if not _ID.fullmatch(workspace) or not _ID.fullmatch(sid):
            raise MalformedResponse(
                f"{session_id!r} is not a fabric_sql session id (workspace/session_id)",
                target=self.config.name,
            )
        return workspace, sid

    async def _read_json(self, path: str, params: Mapping[str, int]) -> Any:
        response = await self.http.read("GET", path, params=dict(params))
        return self._json(response, path)

    def _json(self, response: httpx.Response, path: str) -> Any:
        if response.status_code != 200:
            # a wrong workspace or base_url: the listing fails, it is never taken as empty
            raise ProviderError(
                f"GET {path}: {self.http.error_info(response)}",
                target=self.config.name,
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
                info=self.http.error_info(response),
            )
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(
                f"GET {path}: the body is not JSON", target=self.config.name, status=200
            ) from None


def _auth(
    config: FabricSqlConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None
) -> httpx.Auth:
    """The target's auth scheme (the config model guarantees each scheme's keys)."""
    if config.auth == "token":
        assert config.token_file is not None
        return TokenFileAuth(config.token_file, target=config.name)
    if config.auth == "aksk":
        assert config.access_key is not None
        assert config.secret_key_file is not None
        return AkSkAuth(
            access_key=config.access_key,
            secret_key_file=config.secret_key_file,
            project_id=config.project_id,
            security_token_file=config.security_token_file,
            target=config.name,
        )
    assert config.iam_url is not None
    assert config.domain is not None
    assert config.username is not None
    assert config.project_id is not None
    assert config.password_file is not None
    return IamPasswordAuth(
        iam_url=config.iam_url,
        domain=config.domain,
        username=config.username,
        password_file=config.password_file,
        project_id=config.project_id,
        clock=clock,
        timeout=config.timeout,
        target=config.name,
        transport=transport,
    )


def _session_path(workspace: str, sid: str) -> str:
    return f"v1/workspaces/{quote(workspace, safe='')}/sessions/{quote(sid, safe='')}"


def _session_id(raw: Any) -> str | None:
    """A listed session's id, or None when it has none a URL may carry."""
    sid = raw.get("session_id") if isinstance(raw, dict) else None
    return sid if isinstance(sid, str) and _ID.fullmatch(sid) else None


def _statement_id(raw: Any) -> str | None:
    sid = raw.get("statement_id") if isinstance(raw, dict) else None
    return sid if isinstance(sid, str) and sid else None


def _page(body: Any, items: str, path: str, target: str) -> paging.Page:
    """One page of ``{items: [...], total: N}``; anything else fails the listing."""
    if not isinstance(body, dict) or not isinstance(body.get(items), list):
        raise MalformedResponse(f"GET {path}: no {items} array in {_short(body)}", target=target)
    total = body.get("total")
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise MalformedResponse(f"GET {path}: total is not a count: {_short(total)}", target=target)
    return paging.Page(items=body[items], next=None, total=total)


def _fingerprint(entries: list[tuple[str, str]]) -> str:
    """The statements janitor can see: how many, and a digest of their ids and statuses."""
    text = "\n".join(f"{sid}\t{status}" for sid, status in sorted(entries))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return f"{len(entries)} statements {digest}"


def _labels(workspace: str, endpoint: Any) -> dict[str, str]:
    labels = {"workspace": workspace}
    if isinstance(endpoint, dict):
        for key, value in endpoint.items():
            if isinstance(key, str) and isinstance(value, str | int | float | bool):
                name = key if key.startswith("endpoint") else f"endpoint_{key}"
                labels[name] = str(value)[:200]
    return labels


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
