"""Oracle AI Data Platform (AIDP) Workbench: the notebook sessions of an AI Data Platform.

One target is one AI Data Platform (``ai_data_platform_id``) and the ``workspaces`` listed
for it; the API lives under ``base_url``, which is given, never derived (the documented host
``aidp.<region>.oci.oraclecloud.com``, the user guide's extra ``/api`` and the SDK's hosts
disagree). Under it, for each workspace ``W``::

    P = 20260430/aiDataPlatforms/{ai_data_platform_id}/workspaces/{W}/notebook/api
    GET    P/sessions?limit=100[&page=<opc-next-page>]   {"items": [SessionSummary]}
    GET    P/sessions/{id}                              Session, etag header
    PATCH  P/sessions/{id}   if-match, {"name": ...}    the native warning (rename)
    DELETE P/sessions/{id}   if-match                   204: session and kernel deleted

A session's ``id`` is ``W/<session id>`` (DESIGN 6 "Ids"). The listing follows the
``opc-next-page`` header back as ``page`` until it is absent; a server that ignores paging
and returns everything at once is one page; one that ignores ``page`` but keeps answering
with a next page is a failed listing (:mod:`janitor.providers.paging`), never a partial one.
Every request carries a fresh ``opc-request-id`` (unique per HTTP request, retries included);
the one the server returns is the receipt's ``request_id`` and so the audit row's. Requests
are signed by :mod:`janitor.auth.oci` (``janitor[oci]``); errors are read with the OCI error
model (``{code, message}``).

Reading never counts as activity: janitor only sends GETs to list and re-read, and the
kernel's ``last_activity`` moves only with kernel messages (AIDP runs Jupyter Server, whose
REST reads never touch it; checked against a real Jupyter Server behind an AIDP-shaped proxy
in tests/integration/test_aidp_jupyter.py).

State mapping. ``provider_state`` is the kernel's ``execution_state`` while the session is
``ACTIVE``, else the session's ``lifecycleState``:

==================  ==================  =========  ======================================
lifecycleState      execution_state     state      note
==================  ==================  =========  ======================================
``CREATING``        (any)               pending    provider_state ``CREATING``
``FAILED``          (any)               dead       provider_state ``FAILED``: creation
                                                   failed
``ACTIVE``          ``idle``            idle
``ACTIVE``          ``busy``            busy       never acted on unless a policy names it
``ACTIVE``          ``starting``        pending    stays ``starting`` until a client
                                                   connects
``ACTIVE``          ``restarting``      pending
``ACTIVE``          ``autorestarting``  pending
``ACTIVE``          ``terminating``     stopping
``ACTIVE``          ``dead``            dead
``ACTIVE``          anything else       unknown    ``unknown`` included; never acted on
anything else       (any)               unknown    a missing lifecycleState too; never
                                                   acted on
==================  ==================  =========  ======================================

Record mapping: ``name`` is the session's name with janitor's warning prefix stripped (the
prefix is in ``warning``), ``kind`` the session ``type`` (``notebook``, ``file``,
``agentflow``), ``last_activity`` and ``connections`` come from the embedded kernel,
``parent_id`` is the kernel id (several sessions on one kernel: ``shared``, as in Jupyter,
whose DELETE of a session shuts its kernel down under the others). Labels: ``workspace``,
``kernel_name`` and ``cluster_id`` (when reported). AIDP reports **no creation time, no
owner, no tags and no last-modified time**: ``created_at`` and ``owner`` stay None (``age``
counts from janitor's first sighting; ``owner`` is unknown, so it never matches and, in an
exemption, exempts): policies rely on activity, state, name and labels.

Preconditions. Listed records carry no etag (``SessionSummary`` has none; the collection's
``etag`` header is of the whole list), so ``Session.etag`` stays None and the re-check compares
state, activity and connections. The re-check's GET reads the session's etag, kept in the
fresh record's ``raw["etag"]``; the DELETE (and every PATCH) sends it as ``if-match``, so a
session that changed after the re-check is never deleted. A re-read without an etag is never
deleted (``ActionRejected``: janitor deletes AIDP sessions only with a precondition).

Actions: ``delete`` and ``notify`` (the native warning). DELETE answers: 2xx ``executed``;
404 ``NotAuthorizedOrNotFound`` also means "not permitted", so it is confirmed with a GET:
gone → ``already_absent``, still there → ``failed`` ("may not be allowed to delete it");
409 (``IncorrectState``, ``LockConflict``, ``Conflict``: not now) and 412 (the etag moved) →
``skipped_changed``, decided again next sweep, never retried blindly; 429 is retried by the
shared client (with or without ``Retry-After``: a throttled request was not processed); a 5xx
or a timeout after sending → ``unknown``, reconciled by re-reading; any other 4xx ``failed``.

Native warning: ``warn`` re-reads the session (for its etag and its current name) and renames
it to ``[idle: cleanup at 14:30 UTC] <name>`` (a date is added when the action is more than a
day away; a ``notify`` shows ``[idle: may be cleaned up] <name>``) with ``if-match``. A session
that already shows janitor's prefix is not renamed again (never stacked); one that changed since
the listing is not warned (``changed``). ``withdraw(session, original)`` renames it back to
``original`` exactly, with ``if-match``, and only while the name is still janitor's prefix
followed by ``original``; a name the user changed meanwhile is left alone. Only the two exact
prefix forms above are janitor's: a user's own ``[idle: ...]`` name is never stripped.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from janitor.auth.oci import OciAuth, signer_source
from janitor.clock import Clock
from janitor.errors import ActionRejected, ConfigError, MalformedResponse, ProviderError
from janitor.http import TargetHttp, make_target_http
from janitor.http_errors import OCI, ErrorKind
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers import paging
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kernels import kernel_activity
from janitor.providers.kit import ActionSpec, ParentRelation, allowed_actions
from janitor.targets import AidpConfig, TargetConfig

API_VERSION = "20260430"
#: Sessions asked for per page (the server may send fewer).
PAGE_LIMIT = 100

#: provider_state while the session is not ACTIVE: its lifecycleState
LIFECYCLE: dict[str, State] = {
    "CREATING": State.PENDING,
    "FAILED": State.DEAD,
}
#: provider_state while the session is ACTIVE: its kernel's execution_state
KERNEL: dict[str, State] = {
    "idle": State.IDLE,
    "busy": State.BUSY,
    "starting": State.PENDING,
    "restarting": State.PENDING,
    "autorestarting": State.PENDING,
    "terminating": State.STOPPING,
    "dead": State.DEAD,
}
STATES: dict[str, State] = {**LIFECYCLE, **KERNEL}
SPECS = {
    # A deleted session is gone (no DELETED state): every mapped state may be deleted; a
    # CREATING session the platform cannot delete yet answers 409, "not now".
    Action.DELETE: ActionSpec(action=Action.DELETE, applies_to=frozenset(STATES)),
}

#: janitor's warning prefix, in its only two forms (see the module docstring)
PREFIX = re.compile(
    r"^\[idle: (?:cleanup at (?:\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC|may be cleaned up)\] "
)
NOTIFY_PREFIX = "[idle: may be cleaned up] "


class AidpProvider(ProviderBase):
    """The notebook sessions of one AI Data Platform's workspaces."""

    name: ClassVar[str] = "aidp"
    specs = SPECS
    parents = ParentRelation.SHARED
    stable_population = True
    native_warning = True
    state_table = STATES
    config_model: ClassVar[type[TargetConfig]] = AidpConfig

    def __init__(self, config: TargetConfig, http: TargetHttp, clock: Clock) -> None:
        assert isinstance(config, AidpConfig)
        self.config: AidpConfig = config
        self.http = http
        self.clock = clock

    @classmethod
    def connect(cls, config: TargetConfig, clock: Clock, **http_kw: Any) -> AidpProvider:
        """The provider with its own signed HTTP client (no network traffic yet).

        Raises:
            ConfigError: an ``api_key`` or ``security_token`` profile cannot be read.
        """
        assert isinstance(config, AidpConfig)
        try:
            source = signer_source(
                config.auth, config_file=config.oci_config_file, profile=config.oci_profile
            )
        except ConfigError as exc:
            raise ConfigError(f"target {config.name}: {exc}") from None
        hooks = dict(http_kw.pop("event_hooks", None) or {})
        hooks["request"] = [_new_request_id, *hooks.get("request", [])]
        http = make_target_http(
            target=config.name,
            base_url=config.base_url,
            auth=OciAuth(source, target=config.name),
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            errors=OCI,
            event_hooks=hooks,
            **http_kw,
        )
        return cls(config, http, clock)

    # --- reading ------------------------------------------------------------------------------

    async def list_sessions(self) -> Listing:
        """Every session of every workspace (every page), or an error."""
        return self.listing(
            [
                self._record(workspace, raw)
                for workspace in self.config.workspaces
                for raw in await self._list_workspace(workspace)
            ]
        )

    async def _list_workspace(self, workspace: str) -> list[Any]:
        path = self._sessions(workspace)
        what = f"sessions of workspace {workspace}"

        async def fetch(cursor: paging.Cursor) -> paging.Page:
            params: dict[str, str | int] = {"limit": PAGE_LIMIT}
            if cursor is not None:
                params["page"] = str(cursor)
            response = await self.http.read("GET", path, params=params)
            body = self._body(response, f"listing {what}")
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise MalformedResponse(
                    f'listing {what}: expected {{"items": [...]}}, got {_shape(body)}',
                    target=self.config.name,
                    status=response.status_code,
                )
            return paging.Page(items=items, next=response.headers.get("opc-next-page") or None)

        return await paging.collect(fetch, key=_raw_id, target=self.config.name, what=what)

    async def get_session(self, session: Session) -> Session | None:
        """The fresh record (with its etag in ``raw["etag"]``); None when it is gone."""
        workspace, session_id = self._split(session.id)
        body = await self._read(workspace, session_id)
        if body is None:
            return None
        record = self._record(workspace, body)
        if isinstance(record, InvalidRecord):
            raise MalformedResponse(record.reason, target=self.config.name)
        if record.id != session.id:
            raise MalformedResponse(
                f"GET session {session.id} answered with session {record.id}",
                target=self.config.name,
            )
        return record

    async def _read(self, workspace: str, session_id: str) -> dict[str, Any] | None:
        """The session's JSON with the response's etag as ``etag``; None on 404."""
        response = await self.http.read("GET", self._session(workspace, session_id))
        if response.status_code == 404:
            return None
        body = self._body(response, f"reading session {workspace}/{session_id}")
        if not isinstance(body, dict):
            raise MalformedResponse(
                f"reading session {workspace}/{session_id}: expected an object, got {_shape(body)}",
                target=self.config.name,
            )
        return {**body, "etag": response.headers.get("etag")}

    # --- acting -------------------------------------------------------------------------------

    async def act(self, action: Action, session: Session) -> Receipt:
        """Delete the session (and its kernel) with the re-check's etag as ``if-match``."""
        if action is not Action.DELETE:
            raise ActionRejected(f"aidp cannot {action}", target=self.config.name)
        workspace, session_id = self._split(session.id)
        etag = _etag(session)
        response = await self.http.write(
            "DELETE", self._session(workspace, session_id), headers={"if-match": etag}
        )
        return await self._receipt(response, workspace, session_id, f"DELETE {session.id}")

    async def warn(self, session: Session, message: str, *, act_after: datetime | None) -> Receipt:
        """Prefix the session's name (once, with ``if-match``); ``original`` is its name."""
        fresh = await self.get_session(session)
        if fresh is None:
            return Receipt(status=404, absent=True, detail="the session is gone")
        if fresh.warning is not None:
            return Receipt(status=200, original=fresh.name)  # shown already: never stacked
        changed = _changed(session, fresh)
        if changed:
            return Receipt(status=200, changed=True, detail=f"changed since the listing: {changed}")
        receipt = await self._rename(fresh, self._prefix(act_after) + fresh.name)
        if receipt.changed or receipt.absent:
            return receipt
        return replace(receipt, original=fresh.name)

    async def withdraw(self, session: Session, original: str) -> Receipt:
        """Rename back to ``original`` while the name is still janitor's prefix + ``original``."""
        fresh = await self.get_session(session)
        if fresh is None:
            return Receipt(status=404, absent=True, detail="the session is gone")
        if fresh.warning is None or fresh.raw.get("name") != fresh.warning + original:
            return Receipt(
                status=200,
                changed=True,
                detail="the name is no longer janitor's warning followed by the original name",
            )
        return await self._rename(fresh, original)

    async def _rename(self, fresh: Session, name: str) -> Receipt:
        workspace, session_id = self._split(fresh.id)
        response = await self.http.write(
            "PATCH",
            self._session(workspace, session_id),
            json={"name": name},
            headers={"if-match": _etag(fresh)},
        )
        return await self._receipt(response, workspace, session_id, f"PATCH {fresh.id}")

    async def _receipt(
        self, response: httpx.Response, workspace: str, session_id: str, call: str
    ) -> Receipt:
        status = response.status_code
        request_id = response.headers.get("opc-request-id")
        if 200 <= status < 300:
            return Receipt(status=status, request_id=request_id)
        info = self.http.error_info(response)
        if info.kind is ErrorKind.NOT_FOUND:
            # NotAuthorizedOrNotFound also means "not permitted": gone only if a GET agrees
            if await self._read(workspace, session_id) is not None:
                raise ActionRejected(
                    f"{call}: {info}, yet the session is still there: janitor may not be "
                    "allowed to change it (see the IAM policy in docs/providers/aidp.md)",
                    target=self.config.name,
                    status=status,
                    request_id=request_id,
                    info=info,
                )
            return Receipt(status=status, request_id=request_id, absent=True, detail=str(info))
        if info.kind is ErrorKind.NOT_NOW:
            return Receipt(status=status, request_id=request_id, changed=True, detail=str(info))
        raise ActionRejected(
            f"{call}: {info}",
            target=self.config.name,
            status=status,
            request_id=request_id,
            info=info,
        )

    def _prefix(self, act_after: datetime | None) -> str:
        if act_after is None:
            return NOTIFY_PREFIX
        when = act_after.astimezone(UTC)
        if when - self.clock.now() < timedelta(hours=24):
            return f"[idle: cleanup at {when:%H:%M} UTC] "
        return f"[idle: cleanup at {when:%Y-%m-%d %H:%M} UTC] "

    # --- records ------------------------------------------------------------------------------

    def _record(self, workspace: str, raw: object) -> Session | InvalidRecord:
        target = self.config.name
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            found = raw.get("id") if isinstance(raw, dict) else None
            return InvalidRecord(
                target=target,
                id=f"{workspace}/{found}" if found is not None else None,
                reason=f"session record without a string id in workspace {workspace}",
            )
        anomalies: list[str] = []
        kernel = raw.get("kernel")
        if kernel is not None and not isinstance(kernel, dict):
            anomalies.append(f"kernel is not an object: {_shape(kernel)}")
        kernel = kernel if isinstance(kernel, dict) else {}
        provider_state, state = _state(raw.get("lifecycleState"), kernel, anomalies)
        last_activity, connections = kernel_activity(
            kernel,
            field_prefix="kernel.",
            now=self.clock.now(),
            tolerance=self.config.skew_tolerance,
            anomalies=anomalies,
        )
        shown = raw.get("name")
        if not isinstance(shown, str):
            anomalies.append(f"name is not a string: {_shape(shown)}")
            shown = str(raw.get("path") or raw["id"])
        mark = PREFIX.match(shown)
        record = Session(
            target=target,
            provider=self.name,
            id=f"{workspace}/{raw['id']}",
            name=shown[mark.end() :] if mark else shown,
            kind=raw["type"] if isinstance(raw.get("type"), str) else "notebook",
            state=state,
            provider_state=provider_state,
            last_activity=last_activity,
            connections=connections,
            labels=_labels(workspace, raw, kernel),
            parent_id=_text(kernel.get("id")),
            raw=raw,
            anomalies=tuple(anomalies),
            warning=mark.group(0) if mark else None,
        )
        return replace(record, actions=allowed_actions(SPECS, record))

    # --- paths and bodies ---------------------------------------------------------------------

    def _sessions(self, workspace: str) -> str:
        platform = quote(self.config.ai_data_platform_id, safe="")
        return (
            f"{API_VERSION}/aiDataPlatforms/{platform}/workspaces/{quote(workspace, safe='')}"
            "/notebook/api/sessions"
        )

    def _session(self, workspace: str, session_id: str) -> str:
        return f"{self._sessions(workspace)}/{quote(session_id, safe='')}"

    def _split(self, record_id: str) -> tuple[str, str]:
        workspace, _, session_id = record_id.partition("/")
        if not workspace or not session_id:
            raise MalformedResponse(
                f"session id {record_id!r} is not workspace/id", target=self.config.name
            )
        return workspace, session_id

    def _body(self, response: httpx.Response, what: str) -> Any:
        """The JSON of a 200 answer; any other answer fails ``what``."""
        if response.status_code != 200:
            info = self.http.error_info(response)
            hint = ""
            if info.kind is ErrorKind.NOT_FOUND:
                hint = " (the platform or workspace does not exist, or janitor may not read it)"
            raise ProviderError(
                f"{what}: {info}{hint}",
                target=self.config.name,
                status=response.status_code,
                request_id=response.headers.get("opc-request-id"),
                info=info,
            )
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(
                f"{what}: the body is not JSON", target=self.config.name, status=200
            ) from None


def _state(lifecycle: object, kernel: dict[str, Any], anomalies: list[str]) -> tuple[str, State]:
    """``(provider_state, state)`` per the table of the module docstring."""
    if lifecycle != "ACTIVE":
        if not isinstance(lifecycle, str):
            anomalies.append(f"lifecycleState is not a string: {_shape(lifecycle)}")
            return repr(lifecycle), State.UNKNOWN
        return lifecycle, LIFECYCLE.get(lifecycle, State.UNKNOWN)
    execution = kernel.get("execution_state")
    if not isinstance(execution, str):
        anomalies.append(f"an ACTIVE session whose kernel.execution_state is {_shape(execution)}")
        return "ACTIVE", State.UNKNOWN
    return execution, KERNEL.get(execution, State.UNKNOWN)


def _labels(workspace: str, raw: dict[str, Any], kernel: dict[str, Any]) -> dict[str, str]:
    labels = {"workspace": workspace}
    for key, value in (("kernel_name", kernel.get("name")), ("cluster_id", raw.get("cluster_id"))):
        if isinstance(value, str) and value:
            labels[key] = value[:200]
    return labels


def _changed(listed: Session, fresh: Session) -> str:
    """What the user changed between the listing and now ('' if nothing)."""
    changes = [
        f"{name} {getattr(listed, name)} → {getattr(fresh, name)}"
        for name in ("provider_state", "last_activity", "connections")
        if getattr(listed, name) != getattr(fresh, name)
    ]
    if listed.raw.get("name") != fresh.raw.get("name"):
        changes.append("the name")
    return ", ".join(changes)


def _etag(session: Session) -> str:
    """The etag a re-read put in ``raw``; without one, nothing is changed."""
    etag = session.raw.get("etag")
    if not isinstance(etag, str) or not etag:
        raise ActionRejected(
            f"session {session.id}: no etag from a fresh read; janitor changes AIDP sessions "
            "only with if-match",
            target=session.target,
        )
    return etag


def _raw_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and value else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _shape(value: object) -> str:
    return "nothing" if value is None else f"a JSON {type(value).__name__}"


async def _new_request_id(request: httpx.Request) -> None:
    """A fresh ``opc-request-id`` on every request sent (letters and digits only)."""
    request.headers["opc-request-id"] = uuid.uuid4().hex
