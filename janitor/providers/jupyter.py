"""Jupyter Server (and JupyterHub single-user servers): sessions and kernels.

Lists ``GET api/kernels`` then ``GET api/sessions`` under ``base_url`` (any path prefix works);
a kernel that no session references becomes a session record of kind ``kernel``. Every
request carries ``no_track_activity=1``, and janitor only uses REST GETs, which never update
a kernel's ``last_activity``: polling never keeps a server alive. Auth: ``Authorization:
token <t>`` from ``token`` or ``token_file`` (Jupyter answers 403 to a bad token).

State mapping (``kernel.execution_state`` → janitor state):

==================  =========  ==================================================
execution_state     state      note
==================  =========  ==================================================
``idle``            idle
``busy``            busy       never acted on unless a policy lists ``busy``
``starting``        pending    stays ``starting`` until a client connects
``restarting``      pending
``autorestarting``  pending
``terminating``     stopping
``dead``            dead
anything else       unknown    never acted on
==================  =========  ==================================================

Record mapping: ``id`` is the session id (kernel id for bare kernels), ``name`` the session
name or path, ``kind`` the session ``type`` (``notebook``, ``console``, ``file``) or
``kernel``, ``last_activity`` and ``connections`` come from the kernel. Jupyter reports no
creation time, owner or etag.

Actions: ``delete`` (``DELETE api/sessions/{id}`` shuts the kernel down and removes the
session; ``DELETE api/kernels/{id}`` for a bare kernel) and ``notify``. 404 means already
gone; 410 ("kernel deleted before session") also means the kernel is gone.
"""

from __future__ import annotations

from typing import Any, ClassVar

from janitor.auth.token import TokenAuth
from janitor.clock import Clock
from janitor.errors import ActionRejected, MalformedResponse
from janitor.http import TargetHttp, make_target_http
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers.base import HttpTargetConfig, Receipt
from janitor.settings import TargetConfig
from janitor.timestamps import parse_iso

STATES: dict[str, State] = {
    "idle": State.IDLE,
    "busy": State.BUSY,
    "starting": State.PENDING,
    "restarting": State.PENDING,
    "autorestarting": State.PENDING,
    "terminating": State.STOPPING,
    "dead": State.DEAD,
}
NO_TRACK = {"no_track_activity": "1"}


class JupyterConfig(HttpTargetConfig):
    """A Jupyter Server target: ``base_url`` plus ``token`` or ``token_file``."""


class JupyterProvider:
    """Talks to one Jupyter Server's REST API."""

    name: ClassVar[str] = "jupyter"
    actions: ClassVar[frozenset[Action]] = frozenset({Action.DELETE, Action.NOTIFY})
    native_warning: ClassVar[bool] = False
    config_model: ClassVar[type[TargetConfig]] = JupyterConfig

    def __init__(self, config: TargetConfig, http: TargetHttp, clock: Clock) -> None:
        assert isinstance(config, JupyterConfig)
        self.config = config
        self.http = http
        self.clock = clock

    @classmethod
    def connect(cls, config: TargetConfig, clock: Clock, **http_kw: Any) -> JupyterProvider:
        """Build the provider with its own HTTP client (``http_kw`` goes to the client factory)."""
        assert isinstance(config, JupyterConfig)
        auth = None
        if config.token is not None or config.token_file is not None:
            auth = TokenAuth(token=config.token, token_file=config.token_file)
        http = make_target_http(
            target=config.name,
            base_url=config.base_url,
            auth=auth,
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            **http_kw,
        )
        return cls(config, http, clock)

    async def list_sessions(self) -> Listing:
        """Kernels first, then sessions, so a session created in between is not missed."""
        kernels = await self._get_list("api/kernels")
        sessions = await self._get_list("api/sessions")
        records: list[Session] = []
        invalid: list[InvalidRecord] = []
        claimed: set[str] = set()
        for raw in sessions:
            result = self._session_record(raw)
            if isinstance(result, InvalidRecord):
                invalid.append(result)
                continue
            records.append(result)
            if result.parent_id:
                claimed.add(result.parent_id)
        for raw in kernels:
            if isinstance(raw, dict) and raw.get("id") in claimed:
                continue
            result = self._kernel_record(raw)
            (invalid if isinstance(result, InvalidRecord) else records).append(result)  # type: ignore[arg-type]
        _check_unique(self.config.name, records)
        return Listing(
            sessions=tuple(records), invalid=tuple(invalid), server_skew=self.http.server_skew
        )

    async def get_session(self, session: Session) -> Session | None:
        """Re-read one session (or bare kernel); None when it is gone."""
        if session.kind == "kernel":
            return await self._get_bare_kernel(session.id)
        response = await self.http.read("GET", f"api/sessions/{session.id}", params=NO_TRACK)
        if response.status_code == 404:
            return None
        result = self._session_record(_json(response, self.config.name))
        if isinstance(result, InvalidRecord):
            raise MalformedResponse(result.reason, target=self.config.name)
        return result

    async def act(self, action: Action, session: Session) -> Receipt:
        """Delete a session (kernel included) or shut down a bare kernel."""
        if action is not Action.DELETE:
            raise ActionRejected(f"jupyter cannot {action}", target=self.config.name)
        collection = "kernels" if session.kind == "kernel" else "sessions"
        response = await self.http.write(
            "DELETE", f"api/{collection}/{session.id}", params=NO_TRACK
        )
        status = response.status_code
        if status in (200, 202, 204):
            return Receipt(status=status)
        if status in (404, 410):
            return Receipt(status=status, absent=True, detail=_message(response))
        raise ActionRejected(
            f"DELETE api/{collection}/{session.id}: {status} {_message(response)}",
            target=self.config.name,
            status=status,
        )

    async def warn(self, session: Session, message: str) -> None:
        """Jupyter has no native warning channel."""
        raise NotImplementedError("jupyter has no native warning channel")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    async def _get_bare_kernel(self, kernel_id: str) -> Session | None:
        response = await self.http.read("GET", f"api/kernels/{kernel_id}", params=NO_TRACK)
        if response.status_code == 404:
            return None
        kernel = self._kernel_record(_json(response, self.config.name))
        if isinstance(kernel, InvalidRecord):
            raise MalformedResponse(kernel.reason, target=self.config.name)
        # A session may have adopted the kernel since the listing: then it is no bare kernel.
        for raw in await self._get_list("api/sessions"):
            if isinstance(raw, dict) and _kernel_of(raw).get("id") == kernel_id:
                return None
        return kernel

    async def _get_list(self, path: str) -> list[Any]:
        response = await self.http.read("GET", path, params=NO_TRACK)
        body = _json(response, self.config.name)
        if response.status_code != 200 or not isinstance(body, list):
            raise MalformedResponse(
                f"GET {path}: expected 200 and a JSON array, got {response.status_code} "
                f"and {type(body).__name__}",
                target=self.config.name,
                status=response.status_code,
            )
        return body

    def _session_record(self, raw: object) -> Session | InvalidRecord:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            return InvalidRecord(
                target=self.config.name, id=_id_of(raw), reason="session record without a string id"
            )
        kernel = raw.get("kernel")
        if not isinstance(kernel, dict):
            return InvalidRecord(
                target=self.config.name,
                id=raw["id"],
                reason="session record without a kernel object",
            )
        name = raw.get("name") or raw.get("path") or raw["id"]
        kind = raw.get("type") if isinstance(raw.get("type"), str) else "notebook"
        return self._record(
            raw["id"], str(name), str(kind), kernel, raw, parent_id=_str_or_none(kernel.get("id"))
        )

    def _kernel_record(self, raw: object) -> Session | InvalidRecord:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            return InvalidRecord(
                target=self.config.name, id=_id_of(raw), reason="kernel record without a string id"
            )
        name = f"{raw.get('name', 'kernel')}-{raw['id'][:8]}"
        return self._record(raw["id"], name, "kernel", raw, raw, parent_id=None)

    def _record(
        self,
        record_id: str,
        name: str,
        kind: str,
        kernel: dict[str, Any],
        raw: dict[str, Any],
        *,
        parent_id: str | None,
    ) -> Session:
        now = self.clock.now()
        anomalies: list[str] = []
        provider_state = kernel.get("execution_state")
        if not isinstance(provider_state, str):
            anomalies.append(f"execution_state is not a string: {provider_state!r}")
            provider_state = repr(provider_state)
        last_activity, problem = parse_iso(
            kernel.get("last_activity"),
            field="last_activity",
            now=now,
            tolerance=self.config.skew_tolerance,
        )
        if problem:
            anomalies.append(problem)
        connections = kernel.get("connections")
        if connections is not None and (
            isinstance(connections, bool) or not isinstance(connections, int) or connections < 0
        ):
            anomalies.append(f"connections is not a count: {connections!r}")
            connections = None
        return Session(
            target=self.config.name,
            provider=self.name,
            id=record_id,
            name=name,
            kind=kind,
            state=STATES.get(provider_state, State.UNKNOWN),
            provider_state=provider_state,
            last_activity=last_activity,
            connections=connections,
            labels={"kernel_name": str(kernel.get("name", ""))},
            parent_id=parent_id,
            raw=raw,
            anomalies=tuple(anomalies),
        )


def _json(response: Any, target: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise MalformedResponse(
            f"{response.request.method} {response.request.url.path}: body is not JSON "
            f"(status {response.status_code})",
            target=target,
            status=response.status_code,
        ) from exc


def _check_unique(target: str, records: list[Session]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise MalformedResponse(f"listing has the id {record.id} twice", target=target)
        seen.add(record.id)


def _kernel_of(raw: dict[str, Any]) -> dict[str, Any]:
    kernel = raw.get("kernel")
    return kernel if isinstance(kernel, dict) else {}


def _id_of(raw: object) -> str | None:
    return str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") is not None else None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _message(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("message", ""))[:200] if isinstance(body, dict) else ""
