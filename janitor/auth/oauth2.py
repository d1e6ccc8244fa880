"""OAuth 2.0 client credentials (RFC 6749 section 4.4): a cached, refreshed bearer token.

Used by ESS targets with ``auth = "oauth2"`` (an OCI IAM identity domain issues the token).
The flow, per request:

1. a cached token is used until a margin before it expires (a tenth of its lifetime, at most
   five minutes), so requests never carry a token about to lapse;
2. otherwise one token request goes to ``token_url`` (concurrent requests wait for it instead
   of each fetching their own): ``POST`` with ``grant_type=client_credentials`` and ``scope``,
   the client authenticated with HTTP Basic (``client_id`` and the secret in
   ``client_secret_file``, form-encoded first as RFC 6749 section 2.3.1 says);
3. a 401 from the API (a token revoked or expired early) fetches a new token and sends the
   request once more; a second 401 is the API's answer (an auth failure, never retried).

The token request goes through a :class:`~janitor.http.TargetHttp` of its own: explicit
timeouts, retries on throttling, 5xx and timeouts, a circuit breaker; it never blocks the event
loop (the secret file is read in a thread). A refused token request is an
:class:`~janitor.errors.AuthFailed` naming the token URL and the OAuth error code, never the
secret; neither the secret nor a token is ever logged or put into a repr.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx

from janitor.auth.secret_file import SecretFile
from janitor.clock import Clock
from janitor.errors import AuthFailed
from janitor.http import TargetHttp

#: Refresh this long before expiry at most (and a tenth of the lifetime for short tokens).
REFRESH_MARGIN = timedelta(minutes=5)
#: Lifetime assumed when the token response has no ``expires_in`` (RFC 6749 leaves it optional).
DEFAULT_LIFETIME = timedelta(minutes=5)
_CODE_LIMIT = 60


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: datetime

    def __repr__(self) -> str:
        return f"<token refreshed at {self.refresh_at.isoformat()}>"


class ClientCredentials(httpx.Auth):
    """``Authorization: Bearer <token>`` with a token from ``token_url`` (client credentials)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret_file: Path,
        scope: str,
        clock: Clock,
        http: TargetHttp,
        target: str,
    ) -> None:
        self._url = token_url
        self._client_id = client_id
        self._secret = SecretFile(client_secret_file, key="client_secret_file", target=target)
        self._scope = scope
        self._clock = clock
        self._http = http
        self._target = target
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ClientCredentials {self._client_id} at {self._url}>"

    async def token(self, *, stale: str | None = None) -> str:
        """A valid access token: the cached one, or a new one when it is due for refresh or
        is ``stale`` (the API refused it)."""
        async with self._lock:
            cached = self._token
            if (
                cached is not None
                and cached.value != stale
                and self._clock.now() < cached.refresh_at
            ):
                return cached.value
            self._token = await self._fetch()
            return self._token.value

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Send with the current token; after a 401, once more with a new one."""
        token = await self.token()
        request.headers["authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self.token(stale=token)
            request.headers["authorization"] = f"Bearer {fresh}"
            yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """The token is fetched asynchronously; a synchronous client is a programming error."""
        raise RuntimeError("ClientCredentials works with httpx.AsyncClient only")

    async def aclose(self) -> None:
        """Close the token endpoint's client."""
        await self._http.aclose()

    async def _fetch(self) -> _Token:
        secret = await asyncio.to_thread(self._secret.read)
        pair = f"{quote_plus(self._client_id)}:{quote_plus(secret)}".encode()
        response = await self._http.read(
            "POST",
            self._url,
            data={"grant_type": "client_credentials", "scope": self._scope},
            headers={
                "authorization": "Basic " + base64.b64encode(pair).decode("ascii"),
                "accept": "application/json",
            },
        )
        where = f"token request to {self._url.split('?', 1)[0]}"
        body = _json(response)
        if response.status_code != 200:
            code = _field(body, "error") or "no OAuth error code"
            raise AuthFailed(
                f"{where}: {response.status_code} {code}",
                target=self._target,
                status=response.status_code,
            )
        value = _field(body, "access_token")
        kind = body.get("token_type", "Bearer") if isinstance(body, dict) else None
        if not value or not isinstance(kind, str) or kind.lower() != "bearer":
            raise AuthFailed(
                f"{where}: the response holds no bearer access_token", target=self._target
            )
        lifetime = _lifetime(body.get("expires_in") if isinstance(body, dict) else None)
        if lifetime is None:
            raise AuthFailed(
                f"{where}: expires_in is not a positive number of seconds", target=self._target
            )
        margin = min(REFRESH_MARGIN, lifetime / 10)
        return _Token(value=value, refresh_at=self._clock.now() + lifetime - margin)


def _json(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _field(body: Any, name: str) -> str | None:
    """A string field of the token response, bounded and printable (safe in an error)."""
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        return None
    if name == "access_token":
        return value
    return "".join(c if c.isprintable() else "?" for c in value[:_CODE_LIMIT])


def _lifetime(value: object) -> timedelta | None:
    """``expires_in`` as a duration; the default when absent; None when it is not usable."""
    if value is None:
        return DEFAULT_LIFETIME
    if isinstance(value, str) and value.isdigit():  # some servers send a string
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return None
    return timedelta(seconds=min(float(value), 366 * 86400.0))
