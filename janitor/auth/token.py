"""Token authentication (``Authorization: token <t>``) from a value or a file.

A token file is re-read when it changes on disk and after a 401/403, so a rotated credential
is picked up without a restart. The token never appears in logs, errors or reprs.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import httpx
from pydantic import SecretStr

from janitor.errors import ConfigError


class TokenAuth(httpx.Auth):
    """Sends ``Authorization: <scheme> <token>``; reloads a token file when it changes."""

    def __init__(
        self,
        *,
        token: SecretStr | None = None,
        token_file: Path | None = None,
        scheme: str = "token",
    ) -> None:
        if token is None and token_file is None:
            raise ConfigError("a token or a token_file is required")
        self._static = token
        self._file = token_file
        self._scheme = scheme
        self._stamp: tuple[int, int] | None = None
        self._cached: str | None = None

    @property
    def source(self) -> str:
        """Where the token comes from, for error messages (never the token itself)."""
        if self._file is not None:
            return f"token from token_file {self._file}"
        return "token from the config's token key"

    def __repr__(self) -> str:
        source = f"file {self._file}" if self._file else "inline value"
        return f"<TokenAuth from {source}>"

    def current(self, *, force: bool = False) -> str:
        """The token to send; re-reads the file if it changed (or if ``force``)."""
        if self._file is None:
            assert self._static is not None
            return self._static.get_secret_value()
        try:
            stat = os.stat(self._file)
        except OSError as exc:
            raise ConfigError(f"token_file {self._file} cannot be read: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if force or stamp != self._stamp or self._cached is None:
            self._cached = self._file.read_text(encoding="utf-8").strip()
            self._stamp = stamp
        return self._cached

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Authenticate; after a 401/403, re-read the file once and retry if it changed."""
        token = self.current()
        request.headers["authorization"] = f"{self._scheme} {token}"
        response = yield request
        if response.status_code in (401, 403) and self._file is not None:
            fresh = self.current(force=True)
            if fresh != token:
                request.headers["authorization"] = f"{self._scheme} {fresh}"
                yield request
