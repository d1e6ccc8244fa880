"""HTTP Basic authentication (RFC 7617) with the password in a file (ESS ``auth = "basic"``).

Basic credentials travel with every request, so they belong on TLS only (the docs say so;
``http://`` is accepted for loopback tests). The password file is re-read when it changes and
after a 401, and the request is sent once more if the password changed: a rotated password is
picked up without a restart, and a wrong one is sent only once per request. The file is read
in a thread, never on the event loop. Nothing here logs; the password never appears in a repr
or an error.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, Generator
from pathlib import Path

import httpx

from janitor.auth.secret_file import SecretFile


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value for ``username`` and ``password`` (UTF-8, RFC 7617)."""
    pair = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class BasicAuth(httpx.Auth):
    """``Authorization: Basic ...`` from ``username`` and the password in ``password_file``."""

    def __init__(self, *, username: str, password_file: Path, target: str) -> None:
        self._username = username
        self._password = SecretFile(password_file, key="password_file", target=target)

    def __repr__(self) -> str:
        return f"<BasicAuth {self._username} with {self._password!r}>"

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authenticate; after a 401, send once more if the password file changed."""
        password = await asyncio.to_thread(self._password.read)
        request.headers["authorization"] = basic_header(self._username, password)
        response = yield request
        if response.status_code == 401:
            fresh = await asyncio.to_thread(self._password.read, force=True)
            if fresh != password:
                request.headers["authorization"] = basic_header(self._username, fresh)
                yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """janitor's clients are asynchronous; a synchronous client is a programming error."""
        raise RuntimeError("BasicAuth works with httpx.AsyncClient only")
