"""Huawei Cloud authentication as httpx.Auth flows: AK/SK signing and IAM tokens (DESIGN 6).

Three schemes, one per value of a ``fabric_sql`` target's ``auth`` key:

* ``token``: :class:`TokenFileAuth` sends ``X-Auth-Token`` from ``token_file``, re-read when
  the file changes and once after a 401/403 (a rotated token is picked up without a restart).
* ``aksk``: :class:`AkSkAuth` signs every request with ``SDK-HMAC-SHA256`` (:func:`sign`), the
  algorithm of Huawei's ``huaweicloudsdkcore`` Signer, against whose output the tests check it
  (the SDK is a test dependency only). The secret key and the optional security token
  (temporary credentials) are re-read when their files change.
* ``password``: :class:`IamPasswordAuth` fetches a project-scoped token from IAM
  (``POST {iam_url}/v3/auth/tokens``, the token in the ``X-Subject-Token`` header, valid 24 h),
  keeps it, and fetches a new one :data:`REFRESH_BEFORE` its expiry or after a 401. The fetch is
  an async request, under a lock, so concurrent requests wait for one fetch and the event loop
  never blocks.

The signing algorithm, as ``huaweicloudsdkcore.signer.signer.Signer`` implements it:

1. ``X-Sdk-Date: YYYYMMDDTHHMMSSZ`` (UTC); ``X-Project-Id`` and ``X-Security-Token`` when set.
2. Canonical request: the method; the URI path, percent-decoded, each segment re-encoded with
   ``quote(safe="~")``, always ending with ``/``; the query pairs sorted, each part encoded the
   same way, joined with ``&``; the signed headers as ``name:value`` lines (names lower-cased,
   values stripped) and a newline; the signed header names joined with ``;``; the hex SHA-256
   of the body (of nothing for an empty body; ``UNSIGNED-PAYLOAD`` for a body whose
   ``Content-Type`` is neither JSON nor BSON, announced in ``X-Sdk-Content-Sha256``).
3. String to sign: ``SDK-HMAC-SHA256``, the date and the hex SHA-256 of the canonical request,
   one per line. Signature: hex HMAC-SHA256 keyed directly with the secret key.
4. ``Authorization: SDK-HMAC-SHA256 Access={AK}, SignedHeaders={names}, Signature={hex}``.

The SDK signs every header it is given; here the signed set is chosen: ``host``,
``x-sdk-date``, and ``content-type``, ``x-project-id``, ``x-security-token`` and
``x-sdk-content-sha256`` when present (never ``user-agent``, ``accept-encoding``,
``connection`` or ``content-length``, which transports may rewrite). The request's query
string is rewritten to the canonical encoding before sending, so what the gateway decodes is
what was signed (httpx encodes a space as ``+``, which a gateway may read as a plus sign).

No secret reaches a log, an error or a repr: errors name the key and the file, never its
content.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx

from janitor import __version__
from janitor.clock import Clock
from janitor.errors import AuthFailed, ProviderUnavailable, Throttled
from janitor.http import StripTraceHeaders, parse_retry_after
from janitor.http_errors import HUAWEI, ErrorKind

log = logging.getLogger(__name__)

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: The hex SHA-256 of an empty body.
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
#: Headers signed whenever the request has them (``host`` and ``x-sdk-date`` always).
SIGNED_WHEN_PRESENT = (
    "content-type",
    "host",
    "x-project-id",
    "x-sdk-content-sha256",
    "x-sdk-date",
    "x-security-token",
)
#: Headers :func:`sign` sets; stale copies from an earlier signature are removed first.
_SIGNING_HEADERS = (
    "authorization",
    "x-sdk-date",
    "x-project-id",
    "x-security-token",
    "x-sdk-content-sha256",
)
#: An IAM token is replaced this long before it expires (IAM tokens live 24 h).
REFRESH_BEFORE = timedelta(hours=1)
#: How long a token whose expiry IAM did not say (or said unreadably) is used.
FALLBACK_LIFETIME = timedelta(hours=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SecretFile:
    """A secret kept in a file: read when first needed, again when the file changes.

    A change is a new modification time, size or inode (an atomic replace). Errors name the
    config key and the path, never the content, and are :class:`AuthFailed`: the listing or
    action fails with a reason, it is never taken for an empty answer.
    """

    def __init__(self, path: Path, *, key: str, target: str = "") -> None:
        self.path = path
        self.key = key
        self.target = target
        self._stamp: tuple[int, int, int] | None = None
        self._value: str | None = None

    def __repr__(self) -> str:
        return f"<SecretFile {self.key} {self.path}>"

    def read(self, *, force: bool = False) -> str:
        """The secret; the file is read again if it changed (always with ``force``)."""
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if force or stamp != self._stamp or self._value is None:
                self._value = self.path.read_text(encoding="utf-8").strip()
                self._stamp = stamp
        except OSError as exc:
            raise AuthFailed(
                f"{self.key} {self.path} cannot be read: {exc.strerror}", target=self.target
            ) from None
        except UnicodeDecodeError:
            raise AuthFailed(
                f"{self.key} {self.path} is not UTF-8 text", target=self.target
            ) from None
        if not self._value:
            raise AuthFailed(f"{self.key} {self.path} is empty", target=self.target)
        return self._value


# --- AK/SK signing ------------------------------------------------------------------------------


def _encode(text: str) -> str:
    return quote(text, safe="~")


def canonical_query(request: httpx.Request) -> str:
    """The query pairs, sorted, each key and value encoded with ``quote(safe="~")``."""
    pairs = sorted(request.url.params.multi_items())
    return "&".join(f"{_encode(key)}={_encode(value)}" for key, value in pairs)


def canonical_uri(request: httpx.Request) -> str:
    """The path, decoded, each segment re-encoded, ending with ``/``."""
    raw = request.url.raw_path.split(b"?", 1)[0].decode("ascii")
    path = "/".join(_encode(segment) for segment in unquote(raw).split("/"))
    return path if path.endswith("/") else path + "/"


def _payload_hash(request: httpx.Request) -> str:
    if not request.content:
        return EMPTY_HASH
    declared: str | None = request.headers.get("x-sdk-content-sha256")
    if declared:
        return declared
    return hashlib.sha256(request.content).hexdigest()


def canonical_request(request: httpx.Request, signed: list[str]) -> str:
    """The canonical request of ``request`` over the header names ``signed`` (lower case)."""
    headers = "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed)
    return "\n".join(
        (
            request.method.upper(),
            canonical_uri(request),
            canonical_query(request),
            headers,
            ";".join(signed),
            _payload_hash(request),
        )
    )


def sign(
    request: httpx.Request,
    *,
    access_key: str,
    secret_key: str,
    when: datetime,
    project_id: str | None = None,
    security_token: str | None = None,
) -> None:
    """Sign ``request`` in place with ``SDK-HMAC-SHA256`` (see the module docstring).

    Sets ``X-Sdk-Date`` (from ``when``), ``X-Project-Id`` and ``X-Security-Token`` when given,
    ``X-Sdk-Content-Sha256`` for a non-JSON body, and ``Authorization``; rewrites the query
    string to its canonical encoding. Signing a request again replaces the earlier signature.
    """
    for name in _SIGNING_HEADERS:
        request.headers.pop(name, None)
    request.headers["X-Sdk-Date"] = when.astimezone(UTC).strftime(DATE_FORMAT)
    if project_id:
        request.headers["X-Project-Id"] = project_id
    if security_token:
        request.headers["X-Security-Token"] = security_token
    content_type = request.headers.get("content-type")
    if content_type and not content_type.startswith(("application/json", "application/bson")):
        request.headers["X-Sdk-Content-Sha256"] = UNSIGNED_PAYLOAD
    query = canonical_query(request)
    if query:
        request.url = request.url.copy_with(query=query.encode("ascii"))
    signed = [name for name in SIGNED_WHEN_PRESENT if name in request.headers]
    digest = hashlib.sha256(canonical_request(request, signed).encode("utf-8")).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{request.headers['x-sdk-date']}\n{digest}"
    signature = hmac.new(
        secret_key.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    request.headers["Authorization"] = (
        f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )


class AkSkAuth(httpx.Auth):
    """Signs each request with an access key and the secret key in ``secret_key_file``.

    Temporary credentials add ``security_token_file`` (sent as ``X-Security-Token``). Both
    files are re-read when they change; after a 401/403 they are re-read at once, and the
    request is signed and sent again if the credentials changed.
    """

    requires_request_body = True

    def __init__(
        self,
        *,
        access_key: str,
        secret_key_file: Path,
        project_id: str | None,
        security_token_file: Path | None = None,
        target: str = "",
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._access_key = access_key
        self._secret = SecretFile(secret_key_file, key="secret_key_file", target=target)
        self._token = (
            SecretFile(security_token_file, key="security_token_file", target=target)
            if security_token_file is not None
            else None
        )
        self._project_id = project_id
        self._now = now

    def __repr__(self) -> str:
        return f"<AkSkAuth access key {self._access_key}>"

    def _credentials(self, *, force: bool = False) -> tuple[str, str | None]:
        token = self._token.read(force=force) if self._token is not None else None
        return self._secret.read(force=force), token

    def _sign(self, request: httpx.Request, credentials: tuple[str, str | None]) -> None:
        secret, token = credentials
        sign(
            request,
            access_key=self._access_key,
            secret_key=secret,
            when=self._now(),
            project_id=self._project_id,
            security_token=token,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign and send; after a 401/403, re-read the credentials and retry once if changed."""
        used = self._credentials()
        self._sign(request, used)
        response = yield request
        if response.status_code in (401, 403):
            fresh = self._credentials(force=True)
            if fresh != used:
                self._sign(request, fresh)
                yield request


# --- IAM tokens ---------------------------------------------------------------------------------


class TokenFileAuth(httpx.Auth):
    """Sends ``X-Auth-Token`` from ``token_file``; re-read when it changes and after a 401/403."""

    def __init__(self, token_file: Path, *, target: str = "") -> None:
        self._file = SecretFile(token_file, key="token_file", target=target)

    def __repr__(self) -> str:
        return f"<TokenFileAuth {self._file.path}>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send the token; after a 401/403, re-read the file and retry once if it changed."""
        token = self._file.read()
        request.headers["X-Auth-Token"] = token
        response = yield request
        if response.status_code in (401, 403):
            fresh = self._file.read(force=True)
            if fresh != token:
                request.headers["X-Auth-Token"] = fresh
                yield request


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: datetime


class IamPasswordAuth(httpx.Auth):
    """Sends ``X-Auth-Token`` with a token IAM issued for a user's password (async only).

    The token is scoped to ``project_id``, kept until :data:`REFRESH_BEFORE` its expiry (by
    ``clock``), and replaced after a 401. The password file is read for each fetch. IAM's
    answers map to janitor's errors: a refusal is :class:`AuthFailed`, throttling
    :class:`Throttled`, a server error or a transport failure :class:`ProviderUnavailable`
    (raised before the request itself is sent, so it is retried like one not sent).
    """

    def __init__(
        self,
        *,
        iam_url: str,
        domain: str,
        username: str,
        password_file: Path,
        project_id: str,
        clock: Clock,
        timeout: timedelta,
        target: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = iam_url.rstrip("/") + "/v3/auth/tokens"
        self._domain = domain
        self._username = username
        self._password = SecretFile(password_file, key="password_file", target=target)
        self._project_id = project_id
        self._clock = clock
        self._target = target
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        seconds = timeout.total_seconds()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(seconds, connect=min(seconds, 5.0), pool=seconds),
            transport=transport,
            headers={"user-agent": f"janitor/{__version__}"},
            follow_redirects=False,
            trust_env=True,
            auth=StripTraceHeaders(None),
        )

    def __repr__(self) -> str:
        return f"<IamPasswordAuth user {self._username} in domain {self._domain}>"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Not supported: the token is fetched asynchronously."""
        raise RuntimeError("IamPasswordAuth works with httpx.AsyncClient only")

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send the token; after a 401, fetch a new one and retry once."""
        token = await self.token()
        request.headers["X-Auth-Token"] = token
        response = yield request
        if response.status_code == 401:
            fresh = await self.token(rejected=token)
            if fresh != token:
                request.headers["X-Auth-Token"] = fresh
                yield request

    async def token(self, *, rejected: str | None = None) -> str:
        """The current token, fetched when there is none, it is due, or it is ``rejected``."""
        async with self._lock:
            held = self._token
            if held is not None and held.value != rejected and self._clock.now() < held.refresh_at:
                return held.value
            self._token = await self._fetch()
            return self._token.value

    async def _fetch(self) -> _Token:
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self._username,
                            "password": self._password.read(force=True),
                            "domain": {"name": self._domain},
                        }
                    },
                },
                "scope": {"project": {"id": self._project_id}},
            }
        }
        try:
            response = await self._client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(
                f"IAM token request: {type(exc).__name__}", target=self._target
            ) from None
        info = HUAWEI.read(response)
        if info.kind is None:
            value = response.headers.get("x-subject-token")
            if not value:
                raise AuthFailed(
                    f"IAM answered {response.status_code} without an X-Subject-Token header",
                    target=self._target,
                )
            token = _Token(value=value, refresh_at=self._refresh_at(response))
            log.info(
                "IAM token fetched for user %s, refreshed at %s", self._username, token.refresh_at
            )
            return token
        where = f"IAM token request for user {self._username} in domain {self._domain}: {info}"
        if info.kind is ErrorKind.THROTTLED:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise Throttled(where, retry_after=retry_after, target=self._target, info=info)
        if info.kind is ErrorKind.SERVER:
            raise ProviderUnavailable(where, target=self._target, info=info)
        raise AuthFailed(where, target=self._target, info=info)

    def _refresh_at(self, response: httpx.Response) -> datetime:
        now = self._clock.now()
        expires = _expires_at(response)
        if expires is None or expires <= now:
            log.warning("IAM gave no usable token expiry; the token is renewed within the hour")
            return now + FALLBACK_LIFETIME
        return expires - min(REFRESH_BEFORE, (expires - now) / 2)

    async def aclose(self) -> None:
        """Close the IAM client."""
        await self._client.aclose()


def _expires_at(response: httpx.Response) -> datetime | None:
    """``token.expires_at`` of an IAM answer (``2026-11-23T12:00:00.000000Z``), if readable."""
    try:
        body: Any = response.json()
        text = body["token"]["expires_at"]
        if not isinstance(text, str):
            return None
        text = text.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = datetime.fromisoformat(text)
    except (ValueError, KeyError, TypeError):
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)
