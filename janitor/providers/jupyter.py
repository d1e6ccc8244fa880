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
``starting``        pending    stays ``starting`` until a client connects, also
                               after an automatic restart of a crashed kernel
``restarting``      pending
``autorestarting``  pending
``terminating``     stopping
``dead``            dead       a kernel that failed to start, once a client
                               tried to connect (pending kernels)
anything else       unknown    never acted on
==================  =========  ==================================================

What a real jupyter_server 2.x reports (verified against 2.21 with ipykernel 7): a kernel
stays ``starting`` with no client; ``last_activity`` moves only with kernel IOPub traffic
(executing code, kernel start and restart), never with REST reads, websocket connects or the
``kernel_info`` handshake. A kernel whose process dies is restarted by the server and comes
back ``starting`` with a fresh ``last_activity`` (a policy that lists ``pending`` cleans such
kernels up); when its restarts are exhausted it is removed with its session (the listing no
longer shows it); with ``autorestart`` off it keeps reporting ``idle``. ``dead`` appears only
for a kernel whose start failed (``use_pending_kernels``), after a client tried to connect;
its model then carries a ``reason``, kept in the ``kernel_reason`` label.

Record mapping: ``id`` is the session id (kernel id for bare kernels), ``name`` the session
name or path, ``kind`` the session ``type`` (``notebook``, ``console``, ``file``) or
``kernel``, ``last_activity`` and ``connections`` come from the kernel, ``parent_id`` is the
session's kernel id. Labels: ``kernel_name`` (the kernelspec), and ``kernel_reason`` when Jupyter
reports why a kernel failed. Jupyter reports no creation time, owner or etag, so the re-check
compares state, activity and connections. Several sessions can share one kernel (a notebook and
its console): deleting one of them shuts the kernel down under the others. ``raw`` is empty: the kernel
model's fields are all mapped above, the session model gives the name and kind, and nothing
reads more of it, so a large listing holds no copy of its JSON.

Actions: ``delete`` (``DELETE api/sessions/{id}`` shuts the kernel down and removes the
session; ``DELETE api/kernels/{id}`` for a bare kernel) and ``notify``. 404 means already
gone; 410 ("kernel deleted before session") also means the kernel is gone.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, ClassVar

from janitor.auth.token import TokenAuth
from janitor.clock import Clock
from janitor.errors import ActionRejected, MalformedResponse
from janitor.http import TargetHttp, make_target_http
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kernels import kernel_activity
from janitor.providers.kit import ActionSpec, ParentRelation, allowed_actions
from janitor.targets import JupyterConfig, TargetConfig

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
SPECS = {
    Action.DELETE: ActionSpec(action=Action.DELETE, applies_to=frozenset(STATES)),
}
#: A Jupyter record's ``raw``: empty, shared by every record. Nothing reads a Jupyter
#: record's raw fields (the re-check reads the session again), so a listing of 100,000
#: sessions keeps no part of the parsed JSON beyond the fields its records map.
NO_RAW: Mapping[str, Any] = MappingProxyType({})


class JupyterProvider(ProviderBase):
    """Talks to one Jupyter Server's REST API."""

    name: ClassVar[str] = "jupyter"
    specs = SPECS
    parents = ParentRelation.SHARED
    stable_population = True
    state_table = STATES
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
        """Kernels first, then sessions, so a session created in between is not missed.

        Each listing is parsed one element at a time as its records are built (the kernels
        after the sessions, which tell the bare ones): a listing of 100,000 sessions is never
        held as parsed JSON all at once.
        """
        kernels = await self._get_list("api/kernels")
        sessions = await self._get_list("api/sessions")
        records: list[Session] = []
        invalid: list[InvalidRecord] = []
        claimed, owner_unknown = self._session_records(sessions, records, invalid)
        del sessions  # its text: the records keep what they need
        for raw in kernels:
            if isinstance(raw, dict) and _str_or_none(raw.get("id")) in claimed:
                continue
            kernel = self._kernel_record(raw)
            if isinstance(kernel, InvalidRecord):
                invalid.append(kernel)
            elif owner_unknown:
                reason = "a malformed session record may own this kernel"
                records.append(replace(kernel, anomalies=(*kernel.anomalies, reason)))
            else:
                records.append(kernel)
        _check_unique(self.config.name, records)
        return Listing(
            sessions=tuple(records), invalid=tuple(invalid), server_skew=self.http.server_skew
        )

    def _session_records(
        self, sessions: Iterable[Any], records: list[Session], invalid: list[InvalidRecord]
    ) -> tuple[set[str], bool]:
        """Add the session records; return the kernels they claim, and whether a malformed
        session may own a kernel that cannot be told."""
        claimed: set[str] = set()
        owner_unknown = False
        for raw in sessions:
            result = self._session_record(raw)
            # A malformed session still owns its kernel: that kernel is no bare kernel
            # (else it would be judged without the session's name and exemptions).
            owned = _str_or_none(_kernel_of(raw).get("id")) if isinstance(raw, dict) else None
            if owned:
                claimed.add(owned)
            if isinstance(result, InvalidRecord):
                invalid.append(result)
                owner_unknown = owner_unknown or owned is None
                continue
            records.append(result)
        return claimed, owner_unknown

    async def get_session(self, session: Session) -> Session | None:
        """Re-read one session (or bare kernel); None when it is gone."""
        if session.kind == "kernel":
            return await self._get_bare_kernel(session.id)
        body = await self._get_one(f"api/sessions/{session.id}")
        if body is None:
            return None
        result = self._session_record(body)
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

    async def _get_bare_kernel(self, kernel_id: str) -> Session | None:
        body = await self._get_one(f"api/kernels/{kernel_id}")
        if body is None:
            return None
        kernel = self._kernel_record(body)
        if isinstance(kernel, InvalidRecord):
            raise MalformedResponse(kernel.reason, target=self.config.name)
        # A session may have adopted the kernel since the listing: then it is no bare kernel.
        for raw in await self._get_list("api/sessions"):
            if isinstance(raw, dict) and _kernel_of(raw).get("id") == kernel_id:
                return None
        return kernel

    async def _get_one(self, path: str) -> Any:
        """The JSON body of ``GET path``; None on 404 (the session or kernel is gone)."""
        response = await self.http.read("GET", path, params=NO_TRACK)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise MalformedResponse(
                f"GET {path}: expected 200 or 404, got {response.status_code} "
                f"{_message(response)}".rstrip(),
                target=self.config.name,
                status=response.status_code,
            )
        return _json(response, self.config.name)

    async def _get_list(self, path: str) -> JsonArray:
        """A JSON array from ``GET path``, read element by element; anything else fails the
        whole listing (also a malformed element, when it is reached)."""
        response = await self.http.read("GET", path, params=NO_TRACK)
        if response.status_code != 200:
            # e.g. 404 for a wrong base_url: a failed listing, never an empty one
            raise MalformedResponse(
                f"GET {path}: expected 200 and a JSON array, got {response.status_code} "
                f"{_message(response)}".rstrip(),
                target=self.config.name,
                status=response.status_code,
            )
        array = JsonArray.of(response, self.config.name)
        if array is None:
            body = _json(response, self.config.name)
            raise MalformedResponse(
                f"GET {path}: expected a JSON array, got a JSON {type(body).__name__}",
                target=self.config.name,
                status=response.status_code,
            )
        return array

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
            raw["id"], str(name), str(kind), kernel, parent_id=_str_or_none(kernel.get("id"))
        )

    def _kernel_record(self, raw: object) -> Session | InvalidRecord:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not raw["id"]:
            return InvalidRecord(
                target=self.config.name, id=_id_of(raw), reason="kernel record without a string id"
            )
        name = f"{raw.get('name', 'kernel')}-{raw['id'][:8]}"
        return self._record(raw["id"], name, "kernel", raw, parent_id=None)

    def _record(
        self,
        record_id: str,
        name: str,
        kind: str,
        kernel: dict[str, Any],
        *,
        parent_id: str | None,
    ) -> Session:
        now = self.clock.now()
        anomalies: list[str] = []
        provider_state = kernel.get("execution_state")
        if not isinstance(provider_state, str):
            anomalies.append(f"execution_state is not a string: {provider_state!r}")
            provider_state = repr(provider_state)
        last_activity, connections = kernel_activity(
            kernel,
            field_prefix="",
            now=now,
            tolerance=self.config.skew_tolerance,
            anomalies=anomalies,
        )
        return Session(
            target=self.config.name,
            provider=self.name,
            id=record_id,
            name=name,
            kind=sys.intern(kind),  # a few kinds, shared by every record
            state=STATES.get(provider_state, State.UNKNOWN),
            provider_state=sys.intern(provider_state),
            last_activity=last_activity,
            connections=connections,
            labels=_labels(kernel),
            parent_id=parent_id,
            raw=NO_RAW,
            anomalies=tuple(anomalies),
            actions=_actions(provider_state),
        )


@functools.lru_cache(maxsize=64)
def _actions(provider_state: str) -> frozenset[Action]:
    """The actions a record in ``provider_state`` allows: they depend on nothing else, so
    the records of a listing share a few sets instead of holding one each."""
    probe = Session(
        target="",
        provider=JupyterProvider.name,
        id="",
        name="",
        kind="",
        state=STATES.get(provider_state, State.UNKNOWN),
        provider_state=provider_state,
    )
    return allowed_actions(SPECS, probe)


_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class JsonArray:
    """A JSON array answered by a listing, decoded one element at a time as it is iterated
    (what ``json.loads`` accepts, element by element; a malformed element or trailing data
    raises :class:`MalformedResponse` when reached)."""

    def __init__(self, text: str, start: int, *, target: str, where: str, status: int) -> None:
        self._text = text
        self._start = start  # the index of "["
        self._target = target
        self._where = where
        self._status = status

    @classmethod
    def of(cls, response: Any, target: str) -> JsonArray | None:
        """The response's array; None when its body does not start with ``[``."""
        content: bytes = response.content
        try:
            text = content.decode(json.detect_encoding(content), "surrogatepass")
        except (UnicodeDecodeError, LookupError):
            return None
        start = _skip_space(text, 0)
        if not text.startswith("[", start):
            return None
        where = f"{response.request.method} {response.request.url.path}"
        return cls(text, start, target=target, where=where, status=response.status_code)

    def __iter__(self) -> Iterator[Any]:
        text = self._text
        index = self._skip(self._start + 1)
        if text.startswith("]", index):
            self._end(index + 1)
            return
        while True:
            value, index = self._element(index)
            yield value
            index = self._skip(index)
            if text.startswith(",", index):
                index = self._skip(index + 1)
            elif text.startswith("]", index):
                self._end(index + 1)
                return
            else:
                raise self._malformed()

    def _skip(self, index: int) -> int:
        return _skip_space(self._text, index)

    def _element(self, index: int) -> tuple[Any, int]:
        try:
            return _DECODER.raw_decode(self._text, index)
        except ValueError:
            raise self._malformed() from None

    def _end(self, index: int) -> None:
        if self._skip(index) != len(self._text):
            raise self._malformed()

    def _malformed(self) -> MalformedResponse:
        return MalformedResponse(
            f"{self._where}: body is not JSON (status {self._status})",
            target=self._target,
            status=self._status,
        )


def _skip_space(text: str, index: int) -> int:
    """The index of the first non-blank character at or after ``index``."""
    match = _SPACE.match(text, index)
    assert match is not None  # the pattern matches the empty string
    return match.end()


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


def _labels(kernel: dict[str, Any]) -> Mapping[str, str]:
    reason = kernel.get("reason")
    if isinstance(reason, str) and reason:
        return {"kernel_name": str(kernel.get("name", "")), "kernel_reason": reason[:200]}
    return _kernel_labels(str(kernel.get("name", "")))


@functools.lru_cache(maxsize=256)
def _kernel_labels(kernel_name: str) -> Mapping[str, str]:
    """The labels of a record whose kernel reports no failure, one read-only mapping per
    kernelspec shared by every record (a fleet runs a handful of kernelspecs)."""
    return MappingProxyType({"kernel_name": kernel_name})


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
