"""A small provider that is not shipped: actions that keep the record, settle later, cascade.

``ToyServer`` is a fake platform ("jobs" that run, are stopped asynchronously and stay
listed once ``STOPPED``; a parent's stop reaches its children; names can be changed with
``PATCH`` and ``if-match``; the listing pages by offset and reports a total). ``ToyProvider``
is written the way a real provider is, on the kit: declarations, the shared HTTP client, the
paging helper, a native warning by renaming. It exists to prove the kit's paths before the
real providers that need them: the contract suite runs against it, and the sweep tests of
settling, cascades and warn/withdraw use it.

State mapping (``state`` → janitor state): ``PROVISIONING`` pending, ``RUNNING`` idle (busy
while ``busy`` is true), ``STOPPING`` stopping, ``STOPPED`` and ``ERROR`` ended.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import httpx

from janitor.auth.token import TokenAuth
from janitor.clock import Clock
from janitor.errors import ActionRejected, MalformedResponse
from janitor.http import TargetHttp, make_target_http
from janitor.model import Action, InvalidRecord, Listing, Session, State
from janitor.providers import paging
from janitor.providers.base import ProviderBase, Receipt
from janitor.providers.kit import ActionSpec, ParentRelation, allowed_actions
from janitor.targets import JupyterConfig, TargetConfig
from janitor.timestamps import parse_iso

STATES: dict[str, State] = {
    "PROVISIONING": State.PENDING,
    "RUNNING": State.IDLE,
    "STOPPING": State.STOPPING,
    "STOPPED": State.ENDED,
    "ERROR": State.ENDED,
}
SPECS = {
    Action.STOP: ActionSpec(
        action=Action.STOP,
        applies_to=frozenset({"RUNNING"}),
        removes_record=False,
        end_states=frozenset({"STOPPED"}),
        transit_states=frozenset({"STOPPING"}),
        asynchronous=True,
        settle_timeout=timedelta(minutes=30),
        cascades=True,
    ),
}
#: janitor's visible warning: a prefix of the name, e.g. "[idle: stop at 14:30 UTC] "
PREFIX = re.compile(r"^\[idle: [^\]]{1,60}\] ")


# --- the fake platform ----------------------------------------------------------------------


@dataclass
class Job:
    """One job as the platform keeps it."""

    id: str
    name: str
    state: str
    last_activity: datetime
    parent: str | None = None
    owner: str = "alice"
    busy: bool = False
    version: int = 1

    @property
    def etag(self) -> str:
        """Changes whenever the job does."""
        return f'"{self.version}"'

    def model(self) -> dict[str, Any]:
        """The JSON the platform returns."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "busy": self.busy,
            "lastActivity": self.last_activity.isoformat(),
            "parentId": self.parent,
            "owner": self.owner,
            "etag": self.etag,
        }


@dataclass
class ToyServer:
    """The platform: jobs, an offset-paged listing with a total, async stops that cascade."""

    clock: Clock
    token: str = "toy-token"
    page_size: int = 3
    jobs: dict[str, Job] = field(default_factory=dict)
    stops: Counter[str] = field(default_factory=Counter)  # stops that took effect, per job
    log: list[tuple[str, str]] = field(default_factory=list)  # (method, op) per request
    lock: threading.RLock = field(default_factory=threading.RLock)
    ignore_duplicates_once: str | None = None
    short_once: bool = False

    def add(self, name: str, *, idle_for: timedelta, parent: str | None = None) -> Job:
        """A running job, idle for ``idle_for``."""
        job = Job(
            id=str(uuid.uuid4()),
            name=name,
            state="RUNNING",
            last_activity=self.clock.now() - idle_for,
            parent=parent,
        )
        with self.lock:
            self.jobs[job.id] = job
        return job

    def touch(self, job_id: str) -> None:
        """The user works in the job now."""
        with self.lock:
            job = self.jobs[job_id]
            job.last_activity = self.clock.now()
            job.version += 1

    def finish(self, job_id: str, state: str = "STOPPED") -> None:
        """A stopping job (and its stopping descendants) reaches ``state``."""
        with self.lock:
            for job in [self.jobs[job_id], *self.descendants(job_id)]:
                if job.state == "STOPPING":
                    job.state = state
                    job.version += 1

    def descendants(self, job_id: str) -> list[Job]:
        """Every job under ``job_id``."""
        found, queue = [], [job_id]
        while queue:
            parent = queue.pop()
            children = [j for j in self.jobs.values() if j.parent == parent]
            found += children
            queue += [c.id for c in children]
        return found

    def transport(self, faults: list[Fault]) -> httpx.MockTransport:
        """An in-process transport to this server, answering ``faults`` first."""

        def handle(request: httpx.Request) -> httpx.Response:
            op = _op(request.method, request.url.path, request.url.params)
            with self.lock:
                self.log.append((request.method, op))
            for fault in faults:
                if fault.hits < fault.times and fault.op in (
                    op,
                    "list" if op == "list_next" else "",
                ):
                    fault.hits += 1
                    if fault.after:
                        self.answer(request)
                    if fault.error is not None:
                        raise fault.error("injected", request=request)
                    return httpx.Response(
                        fault.status or 500,
                        json=fault.body,
                        headers={**self._date(), **fault.headers},
                    )
            return self.answer(request)

        return httpx.MockTransport(handle)

    def _date(self) -> dict[str, str]:
        return {"date": format_datetime(datetime.now(UTC), usegmt=True)}

    def answer(self, request: httpx.Request) -> httpx.Response:
        """The platform's own answer."""
        headers = self._date()
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"code": "NotAuthenticated"}, headers=headers)
        parts = request.url.path.strip("/").split("/")  # v1 jobs [id [stop]]
        with self.lock:
            if request.method == "GET" and parts == ["v1", "jobs"]:
                return httpx.Response(200, json=self._page(request), headers=headers)
            job = self.jobs.get(parts[2]) if len(parts) >= 3 else None
            if job is None:
                return httpx.Response(404, json={"code": "NotFound"}, headers=headers)
            if request.method == "GET":
                return httpx.Response(200, json=job.model(), headers={**headers, "etag": job.etag})
            if request.headers.get("if-match") != job.etag:
                return httpx.Response(412, json={"code": "PreconditionFailed"}, headers=headers)
            if request.method == "PATCH":
                job.name = json.loads(request.content)["name"]
                job.version += 1
                return httpx.Response(200, json=job.model(), headers={**headers, "etag": job.etag})
            if request.method == "POST" and parts[3:] == ["stop"]:
                if job.state != "RUNNING":
                    return httpx.Response(409, json={"code": "IncorrectState"}, headers=headers)
                for target in [job, *self.descendants(job.id)]:
                    if target.state == "RUNNING":
                        target.state = "STOPPING"
                        target.version += 1
                        self.stops[target.id] += 1
                return httpx.Response(202, headers=headers)
        return httpx.Response(405, headers=headers)

    def _page(self, request: httpx.Request) -> dict[str, Any]:
        offset = int(request.url.params.get("offset", "0"))
        ids = sorted(self.jobs, key=lambda i: (self.jobs[i].name, i))
        items = [self.jobs[i].model() for i in ids[offset : offset + self.page_size]]
        total = len(ids)
        if self.ignore_duplicates_once and offset == self.page_size:
            items = [self.jobs[self.ignore_duplicates_once].model(), *items]
            self.ignore_duplicates_once = None
        if self.short_once:
            total += 1
            if offset + self.page_size >= len(ids):
                self.short_once = False
        return {"items": items, "total": total}


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


def _op(method: str, path: str, params: Any) -> str:
    parts = path.strip("/").split("/")
    if method == "GET" and parts == ["v1", "jobs"]:
        return "list_next" if int(params.get("offset", "0")) > 0 else "list"
    if method == "GET":
        return "get"
    if method == "POST":
        return "act"
    return "write"


# --- the provider -----------------------------------------------------------------------------


class ToyProvider(ProviderBase):
    """Jobs of one ToyServer: stop (asynchronous, keeps the record, cascades), warn by rename."""

    name: ClassVar[str] = "toy"
    specs = SPECS
    parents = ParentRelation.CASCADE
    stable_population = True
    native_warning = True
    state_table = STATES

    def __init__(self, config: TargetConfig, http: TargetHttp, clock: Clock) -> None:
        self.config = config
        self.http = http
        self.clock = clock

    @classmethod
    def connect(cls, config: TargetConfig, clock: Clock, **http_kw: Any) -> ToyProvider:
        """The provider on a bearer token, through the shared client."""
        assert isinstance(config, JupyterConfig)
        http = make_target_http(
            target=config.name,
            base_url=config.base_url,
            auth=TokenAuth(token=config.token, scheme="Bearer"),
            timeout=config.timeout,
            concurrency=config.max_concurrency,
            rate=config.requests_per_second,
            **http_kw,
        )
        return cls(config, http, clock)

    async def list_sessions(self) -> Listing:
        """Every page (offset/limit until the total)."""

        async def fetch(offset: int) -> paging.Page:
            response = await self.http.read("GET", "v1/jobs", params={"offset": offset})
            body = _json(response, self.config.name)
            return paging.Page(items=body["items"], next=None, total=body["total"])

        raws = await paging.collect_offset(
            fetch, key=lambda r: r.get("id"), target=self.config.name, what="jobs"
        )
        records: list[Session] = []
        invalid: list[InvalidRecord] = []
        for raw in raws:
            record = self._record(raw)
            if isinstance(record, InvalidRecord):
                invalid.append(record)
            else:
                records.append(record)
        return Listing(
            sessions=tuple(records), invalid=tuple(invalid), server_skew=self.http.server_skew
        )

    async def get_session(self, session: Session) -> Session | None:
        """The fresh job; None when it is gone."""
        response = await self.http.read("GET", f"v1/jobs/{session.id}")
        if response.status_code == 404:
            return None
        record = self._record(_json(response, self.config.name))
        if isinstance(record, InvalidRecord):
            raise MalformedResponse(record.reason, target=self.config.name)
        return record

    async def act(self, action: Action, session: Session) -> Receipt:
        """Stop the job (and, on the platform, its descendants), with the re-check's etag."""
        if action is not Action.STOP:
            raise ActionRejected(f"toy cannot {action}", target=self.config.name)
        return self._receipt(
            await self.http.write(
                "POST", f"v1/jobs/{session.id}/stop", headers={"if-match": session.etag or ""}
            )
        )

    async def warn(self, session: Session, message: str, *, act_after: datetime | None) -> Receipt:
        """Prefix the job's name (once: a warned job is never prefixed again)."""
        if session.warning is not None:
            return Receipt(status=200, original=session.name)
        when = f"stop at {act_after:%H:%M} UTC" if act_after else "janitor"
        prefix = f"[idle: {when}] "
        return replace(await self._rename(session, prefix + session.name), original=session.name)

    async def withdraw(self, session: Session, original: str) -> Receipt:
        """Restore ``original`` while the name is still janitor's prefix plus it."""
        shown = str(session.raw.get("name", ""))
        if session.warning is None or shown != session.warning + original:
            return Receipt(status=412, changed=True, detail="the name is no longer janitor's")
        return await self._rename(session, original)

    async def _rename(self, session: Session, name: str) -> Receipt:
        response = await self.http.write(
            "PATCH",
            f"v1/jobs/{session.id}",
            json={"name": name},
            headers={"if-match": session.etag or ""},
        )
        return self._receipt(response, accepted=False)

    def _receipt(self, response: httpx.Response, *, accepted: bool = True) -> Receipt:
        status = response.status_code
        if status in (200, 202, 204):
            return Receipt(status=status, accepted=accepted and status == 202)
        if status == 404:
            return Receipt(status=status, absent=True)
        if status in (409, 412):
            return Receipt(status=status, changed=True, detail=str(self.http.error_info(response)))
        raise ActionRejected(str(self.http.error_info(response)), target=self.config.name)

    def _record(self, raw: Any) -> Session | InvalidRecord:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            return InvalidRecord(target=self.config.name, id=None, reason="job without an id")
        last, problem = parse_iso(
            raw.get("lastActivity"),
            field="lastActivity",
            now=self.clock.now(),
            tolerance=self.config.skew_tolerance,
        )
        shown = str(raw.get("name", ""))
        mark = PREFIX.match(shown)
        state = STATES.get(str(raw.get("state")), State.UNKNOWN)
        if state is State.IDLE and raw.get("busy"):
            state = State.BUSY
        record = Session(
            target=self.config.name,
            provider=self.name,
            id=raw["id"],
            name=shown[mark.end() :] if mark else shown,
            kind="job",
            state=state,
            provider_state=str(raw.get("state")),
            last_activity=last,
            owner=raw.get("owner"),
            labels={},
            etag=raw.get("etag"),
            parent_id=raw.get("parentId"),
            raw=raw,
            anomalies=(problem,) if problem else (),
            warning=mark.group(0) if mark else None,
        )
        return replace(record, actions=allowed_actions(SPECS, record))


def _json(response: httpx.Response, target: str) -> Any:
    if response.status_code != 200:
        raise MalformedResponse(
            f"{response.request.url.path}: {response.status_code}", target=target
        )
    return response.json()


def toy_config(name: str = "toy", **keys: Any) -> JupyterConfig:
    """A target for the toy provider (its keys are a Jupyter target's: base_url, token)."""
    return JupyterConfig.model_validate(
        {
            "name": name,
            "provider": "jupyter",
            "base_url": "http://toy.test/",
            "token": "toy-token",
            **keys,
        }
    )


# --- the contract fake ------------------------------------------------------------------------


class ToyContract:
    """The toy platform as the provider contract suite drives it."""

    provider = "toy"
    action = Action.STOP
    can = frozenset({"pages", "total", "409", "412", "warn"})
    page_size = 3

    def __init__(self, clock: Clock) -> None:
        self.server = ToyServer(clock=clock, page_size=self.page_size)
        self.faults: list[Fault] = []

    def connect(self, clock: Clock) -> ToyProvider:
        """The toy provider on the fake."""
        return ToyProvider.connect(
            toy_config(), clock, transport=self.server.transport(self.faults)
        )

    def add(self, name: str, *, idle_for: timedelta = timedelta(days=1)) -> str:
        """A running job."""
        return self.server.add(name, idle_for=idle_for).id

    def touch(self, session_id: str) -> None:
        """The user works in it."""
        self.server.touch(session_id)

    def remove(self, session_id: str) -> None:
        """The job vanishes."""
        with self.server.lock:
            del self.server.jobs[session_id]

    def inject(self, op: str, **kw: Any) -> None:
        """An injected answer."""
        self.faults.append(Fault(op=op, **kw))

    def duplicate_across_pages(self, session_id: str) -> None:
        """The second page repeats a job of the first."""
        self.server.ignore_duplicates_once = session_id

    def short_listing(self) -> None:
        """The listing reports one job more than it delivers."""
        self.server.short_once = True

    def requests(self, op: str) -> int:
        """Requests of ``op`` that reached the server."""
        ops = {op, "list_next"} if op == "list" else {op}
        return sum(1 for _, logged in self.server.log if logged in ops)

    def writes(self) -> int:
        """Requests that change state."""
        return sum(1 for method, _ in self.server.log if method not in ("GET", "HEAD"))

    def effective(self, session_id: str) -> int:
        """Stops that took effect on the job."""
        return self.server.stops[session_id]

    def activity(self, session_id: str) -> datetime | None:
        """The job's last activity."""
        return self.server.jobs[session_id].last_activity

    def finish(self, session_id: str) -> None:
        """The stop completes."""
        self.server.finish(session_id)

    def shown_name(self, session_id: str) -> str:
        """The name users see."""
        return self.server.jobs[session_id].name
