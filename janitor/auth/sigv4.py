"""AWS Signature Version 4 for httpx, with botocore's signer and botocore's credential chain.

Requests go through janitor's shared HTTP client (:mod:`janitor.http`); this module only signs
them. Two pieces:

* :class:`AwsCredentials`: botocore's default credential chain (environment, the shared
  config and credentials files with ``profile``, SSO, container credentials, instance
  metadata, web identity), resolved on first use and refreshed by botocore when temporary
  credentials near their expiry. Both block (files, HTTP to a metadata endpoint, STS, SSO), so
  they run in a worker thread, never on the event loop.
* :class:`SigV4Auth`: an :class:`httpx.Auth` flow that signs each request with
  ``botocore.auth.SigV4Auth``. It runs again on every retry, so a retried request carries a
  fresh date and signature. It signs the headers that are settled when it runs (``host``,
  ``content-type``, ``x-amz-*``), not those a transport may still touch (``connection``,
  ``accept-encoding``, ``user-agent``, ``content-length``). Tracing headers are removed before
  it runs (:class:`janitor.http.StripTraceHeaders`).

The query string is rewritten in RFC 3986 form (``%20`` for a space) before signing: httpx
writes a space as ``+`` and botocore signs the query as it is written, while AWS decodes
``+`` as a space and signs ``%20``, so such a request would be refused (deps-ops, SigV4).

Credentials never appear in a repr, a log line or an error message: errors name the
exception botocore raised and its message, which names files, profiles and variables, never
their values.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any
from urllib.parse import quote

import botocore.auth  # type: ignore[import-untyped]
import botocore.awsrequest  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
import botocore.session  # type: ignore[import-untyped]
import httpx

from janitor.errors import AuthFailed

#: The request headers that are signed (when present); AWS requires ``host`` and ``x-amz-date``.
SIGNED_HEADERS = frozenset(
    {"host", "content-type", "x-amz-target", "x-amz-date", "x-amz-security-token"}
)
#: What the signer sets on the request; stale copies are removed before signing again.
_SET_BY_SIGNER = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class AwsCredentials:
    """botocore's default credential chain for one profile (None: ``AWS_PROFILE`` or default).

    ``frozen()`` returns a consistent snapshot (access key, secret key, session token) and is
    safe to call for every request: botocore refreshes temporary credentials inside it, under
    its own lock, when they are about to expire.
    """

    def __init__(self, *, profile: str | None, target: str, static: Any = None) -> None:
        """``static``: botocore ``Credentials`` to use instead of the chain (tests)."""
        self._profile = profile
        self._target = target
        self._lock = threading.Lock()
        self._credentials: Any = static

    def __repr__(self) -> str:
        return f"<AwsCredentials profile={self._profile or '(default)'}>"

    async def frozen(self) -> Any:
        """The current credentials (``ReadOnlyCredentials``), resolved off the event loop."""
        return await asyncio.to_thread(self.frozen_sync)

    def frozen_sync(self) -> Any:
        """The current credentials; blocks (files, metadata endpoints, STS, SSO).

        Raises:
            AuthFailed: the chain found no credentials, or resolving or refreshing them failed.
        """
        try:
            with self._lock:
                if self._credentials is None:
                    session = botocore.session.Session(profile=self._profile)
                    self._credentials = session.get_credentials()
                if self._credentials is None:
                    raise AuthFailed(
                        "no AWS credentials found: botocore's chain (environment, "
                        f"profile {self._profile or '(default)'}, SSO, container, instance "
                        "metadata, web identity) found none",
                        target=self._target,
                    )
                credentials = self._credentials
            return credentials.get_frozen_credentials()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise AuthFailed(
                f"AWS credentials could not be resolved: {type(exc).__name__}: {exc}",
                target=self._target,
            ) from None


class SigV4Auth(httpx.Auth):
    """Signs requests for one AWS ``service`` in one ``region`` (``glue``, ``sts``)."""

    requires_request_body = True

    def __init__(self, credentials: AwsCredentials, *, region: str, service: str) -> None:
        self._credentials = credentials
        self._region = region
        self._service = service

    def __repr__(self) -> str:
        return f"<SigV4Auth {self._service} {self._region}>"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign with credentials resolved in this thread (the sync flow)."""
        self.sign(request, self._credentials.frozen_sync())
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Read the body, then sign."""
        request.read()
        yield from self.auth_flow(request)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Read the body, resolve the credentials in a worker thread, then sign."""
        await request.aread()
        self.sign(request, await self._credentials.frozen())
        yield request

    def sign(self, request: httpx.Request, credentials: Any) -> None:
        """Add ``Authorization``, ``X-Amz-Date`` (and ``X-Amz-Security-Token``) to ``request``."""
        for name in _SET_BY_SIGNER:
            request.headers.pop(name, None)
        request.url = request.url.copy_with(query=rfc3986_query(request.url) or None)
        headers = {name: value for name, value in request.headers.items() if name in SIGNED_HEADERS}
        aws = botocore.awsrequest.AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        botocore.auth.SigV4Auth(credentials, self._service, self._region).add_auth(aws)
        for name in _SET_BY_SIGNER:
            value = aws.headers.get(name)
            if value is not None:
                request.headers[name] = value


def rfc3986_query(url: httpx.URL) -> bytes:
    """The query of ``url`` re-encoded the way SigV4 canonicalizes it (``%20``, not ``+``)."""
    pairs = url.params.multi_items()
    return "&".join(
        f"{quote(key, safe='-_.~')}={quote(value, safe='-_.~')}" for key, value in pairs
    ).encode("ascii")
