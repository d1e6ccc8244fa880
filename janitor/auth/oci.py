"""OCI request signing for httpx, with the official ``oci`` package's signers (``janitor[oci]``).

The schemes (a target's ``auth`` key) and where their credentials come from:

======================  ============================================================  ==========
``auth``                credentials                                                   refreshed
======================  ============================================================  ==========
``api_key``             profile ``oci_profile`` of ``oci_config_file``: ``user``,     files re-read
                        ``tenancy``, ``fingerprint``, ``key_file`` (``pass_phrase``)  when changed
``security_token``      the same profile's ``security_token_file`` (written by        and after a
                        ``oci session authenticate`` / ``refresh``) and ``key_file``  401
``instance_principal``  the instance's metadata service and its region's federation  by the SDK,
                        endpoint (the SDK's ``InstancePrincipalsSecurityTokenSigner``)  off the
``resource_principal``  ``OCI_RESOURCE_PRINCIPAL_*`` environment variables (the SDK's  event loop
                        ``get_resource_principals_signer()``)
======================  ============================================================  ==========

The ``oci`` signers are ``requests`` auth objects that read and write only five attributes
of a request: ``method``, ``url``, ``headers``, ``body`` and ``path_url``. :class:`OciAuth`
hands them a :class:`_Shim` carrying those five for the httpx request (``headers`` *is* the
httpx request's header mapping, so what the signer adds -- ``date``, ``host``,
``content-type``, ``x-content-sha256``, ``authorization`` -- lands on the request;
``path_url`` is the path and query exactly as sent). The signature is draft-cavage
``rsa-sha256`` over ``date (request-target) host``, plus ``content-length content-type
x-content-sha256`` for PUT, POST and PATCH.

httpx runs the flow for every request it sends, and the shared client's retries send new
requests: every retry is signed anew, with a fresh ``date`` (OCI refuses a signature more than
five minutes old).

Blocking work stays off the event loop. Principal signers do network I/O when they are built
(metadata service, federation endpoint) and inside the signing call itself whenever their
token nears expiry: they are built on first use, not at start-up, and both building and
signing run in :func:`asyncio.to_thread`. File-based signers read small local files and sign
on the loop (an RSA signature is about a millisecond).

After a 401 the flow renews its credentials once and, if they changed (a rotated key or a
refreshed session token on disk; a principal's token fetched anew), sends the request again.

Errors: a profile or key that cannot be read when the target is connected is a
:class:`~janitor.errors.ConfigError`; credentials that cannot be read or obtained later (a
file removed, a metadata service down) are :class:`~janitor.errors.AuthFailed` raised from the
request (a failed listing, never an empty one). Messages name files, profiles and keys, never
their contents.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path
from typing import Any, Protocol

import httpx
import oci

from janitor.errors import AuthFailed, ConfigError

#: The auth schemes this module signs for (the values of an ``aidp`` target's ``auth`` key).
SCHEMES = ("api_key", "security_token", "instance_principal", "resource_principal")
_DETAIL_LIMIT = 200


class _Shim:
    """What an ``oci`` signer reads and writes of a request, for an httpx request."""

    __slots__ = ("body", "headers", "method", "path_url", "url")

    def __init__(self, request: httpx.Request) -> None:
        self.method = request.method
        self.url = str(request.url)
        self.headers = request.headers  # case-insensitive and mutable: the signer writes here
        self.body = request.content
        self.path_url = request.url.raw_path.decode("ascii")


class SignerSource(Protocol):
    """Where the current ``oci`` signer comes from."""

    #: True when getting or using the signer may block on the network (principals).
    blocking: bool

    def signer(self) -> Any:
        """The signer to use now (loading or refreshing what it needs)."""
        ...

    def renew(self) -> bool:
        """After a 401: re-read or re-fetch the credentials; True when they changed."""
        ...


class OciAuth(httpx.Auth):
    """Signs each request with the signer its :class:`SignerSource` provides."""

    requires_request_body = True

    def __init__(self, source: SignerSource, *, target: str = "") -> None:
        self.source = source
        self.target = target

    def __repr__(self) -> str:
        return f"<OciAuth {self.source!r}>"

    def _sign(self, request: httpx.Request) -> None:
        for name in ("authorization", "date"):
            request.headers.pop(name, None)
        try:
            signer = self.source.signer()
            signer(_Shim(request))
        except AuthFailed as exc:
            raise AuthFailed(str(exc), target=self.target) from None
        except Exception as exc:  # noqa: BLE001 (the SDK's errors have no common base)
            raise _auth_failed(f"{self.source!r}: signing failed", exc, self.target) from None

    def _renew(self) -> bool:
        try:
            return self.source.renew()
        except (AuthFailed, ConfigError):
            return False

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign (blocking is fine here: a synchronous client)."""
        request.read()
        self._sign(request)
        response = yield request
        if response.status_code == 401 and self._renew():
            self._sign(request)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Sign, in a worker thread when the source may block; once more after a 401."""
        await request.aread()
        await self._off_loop(self._sign, request)
        response = yield request
        if response.status_code == 401 and await self._off_loop(self._renew):
            await self._off_loop(self._sign, request)
            yield request

    async def _off_loop(self, call: Callable[..., Any], *args: Any) -> Any:
        if self.source.blocking:
            return await asyncio.to_thread(call, *args)
        return call(*args)


# --- file-based credentials ---------------------------------------------------------------------


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class _ProfileSource:
    """A signer built from a profile of an OCI config file, rebuilt when its files change."""

    blocking = False
    scheme = ""

    def __init__(self, config_file: Path, profile: str) -> None:
        self.config_file = config_file
        self.profile = profile
        self._lock = threading.Lock()
        self._files: tuple[Path, ...] = (config_file,)
        self._stamps: tuple[tuple[int, int] | None, ...] = ()
        self._signer: Any = None
        self._identity: tuple[str, int] | None = None
        try:
            self._load()
        except AuthFailed as exc:
            raise ConfigError(str(exc)) from None

    def __repr__(self) -> str:
        return f"<{self.scheme} from {self.config_file} [{self.profile}]>"

    def signer(self) -> Any:
        with self._lock:
            if tuple(_stamp(p) for p in self._files) != self._stamps:
                self._load()
            return self._signer

    def renew(self) -> bool:
        with self._lock:
            before = self._identity
            self._load()
            return self._identity != before

    def _load(self) -> None:
        where = f"{self.scheme}: OCI config file {self.config_file}, profile {self.profile}"
        try:
            config = oci.config.from_file(str(self.config_file), self.profile)
        except Exception as exc:  # noqa: BLE001 (ConfigFileNotFound, ProfileNotFound, OSError...)
            raise _auth_failed(where, exc) from None
        files, signer = self._build(config, where)
        self._files = (self.config_file, *files)
        self._stamps = tuple(_stamp(p) for p in self._files)
        self._signer = signer
        self._identity = (str(signer.api_key), signer.private_key.public_key().public_numbers().n)

    def _build(self, config: dict[str, Any], where: str) -> tuple[tuple[Path, ...], Any]:
        raise NotImplementedError


class ApiKeySource(_ProfileSource):
    """``api_key``: the profile's user, tenancy, fingerprint and key file."""

    scheme = "api_key"

    def _build(self, config: dict[str, Any], where: str) -> tuple[tuple[Path, ...], Any]:
        try:
            signer = oci.signer.Signer.from_config(config)
        except Exception as exc:  # noqa: BLE001 (InvalidConfig, InvalidPrivateKey, OSError...)
            raise _auth_failed(where, exc) from None
        return (Path(config["key_file"]).expanduser(),), signer


class SecurityTokenSource(_ProfileSource):
    """``security_token``: the profile's ``security_token_file`` and its key file."""

    scheme = "security_token"

    def _build(self, config: dict[str, Any], where: str) -> tuple[tuple[Path, ...], Any]:
        missing = [k for k in ("security_token_file", "key_file") if not config.get(k)]
        if missing:
            raise AuthFailed(f"{where}: the profile has no {' and no '.join(missing)}")
        token_file = Path(config["security_token_file"]).expanduser()
        key_file = Path(config["key_file"]).expanduser()
        try:
            token = token_file.read_text(encoding="utf-8").strip()
            key = oci.signer.load_private_key_from_file(str(key_file), config.get("pass_phrase"))
        except Exception as exc:  # noqa: BLE001 (OSError, InvalidPrivateKey, a pass phrase...)
            raise _auth_failed(where, exc) from None
        if not token:
            raise AuthFailed(f"{where}: security_token_file {token_file} is empty")
        return (token_file, key_file), oci.auth.signers.SecurityTokenSigner(token, key)


# --- principals ---------------------------------------------------------------------------------


class PrincipalSource:
    """A principal signer (instance or resource), built on first use; the SDK refreshes it."""

    blocking = True

    def __init__(self, kind: str, factory: Callable[[], Any]) -> None:
        self.kind = kind
        self._factory = factory
        self._lock = threading.Lock()
        self._signer: Any = None

    def __repr__(self) -> str:
        return f"<{self.kind}>"

    def signer(self) -> Any:
        with self._lock:
            if self._signer is None:
                try:
                    self._signer = self._factory()
                except Exception as exc:  # noqa: BLE001 (metadata service, federation, environment)
                    raise _auth_failed(f"{self.kind}: no credentials", exc) from None
            return self._signer

    def renew(self) -> bool:
        signer = self.signer()
        with self._lock:
            try:
                signer.refresh_security_token()
            except Exception as exc:  # noqa: BLE001 (requests, ServiceError, ...)
                raise _auth_failed(f"{self.kind}: the token could not be refreshed", exc) from None
        return True


def _instance_principal() -> Any:
    return oci.auth.signers.InstancePrincipalsSecurityTokenSigner()


def _resource_principal() -> Any:
    signer = oci.auth.signers.get_resource_principals_signer()
    if signer is None:
        raise ValueError("OCI_RESOURCE_PRINCIPAL_VERSION is not set")
    return signer


def signer_source(scheme: str, *, config_file: Path, profile: str) -> SignerSource:
    """The signer source for ``scheme`` (see the module's table).

    Raises:
        ConfigError: ``api_key``/``security_token`` credentials cannot be read now.
    """
    if scheme == "api_key":
        return ApiKeySource(config_file, profile)
    if scheme == "security_token":
        return SecurityTokenSource(config_file, profile)
    if scheme == "instance_principal":
        return PrincipalSource("instance principal", _instance_principal)
    if scheme == "resource_principal":
        return PrincipalSource("resource principal", _resource_principal)
    raise ConfigError(f"unknown OCI auth scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def _auth_failed(where: str, exc: BaseException, target: str = "") -> AuthFailed:
    """An AuthFailed naming what failed: the error's type and the first line of its message."""
    said = " ".join(str(exc).split("\n", 1)[0].split())
    if len(said) > _DETAIL_LIMIT:
        said = said[: _DETAIL_LIMIT - 1] + "…"
    detail = f"{where}: {type(exc).__name__}" + (f": {said}" if said else "")
    return AuthFailed(detail, target=target)
