"""OCI request signatures on the server's side: test keys, credential files, verification.

:class:`TestKey` is an RSA key pair made for one test, with the OCI key id of a user
(``tenancy/user/fingerprint``). :func:`write_profile` writes an OCI config file (and the key,
and a session token file) as ``oci setup config`` and ``oci session authenticate`` would.

:class:`Verifier` checks a request's ``Authorization: Signature ...`` header the way OCI
documents it ("Request Signatures"), written here from the specification rather than with the
SDK, so that a signer and its check cannot share a mistake: draft-cavage HTTP signatures,
``version="1"``, ``algorithm="rsa-sha256"``; the signed headers must include ``date
(request-target) host``, plus ``content-length content-type x-content-sha256`` for PUT, POST
and PATCH, whose body must match ``x-content-sha256`` and ``content-length``; the ``date`` must
be within five minutes of the server's clock. ``keyId`` is ``tenancy/user/fingerprint`` for an
API key, or ``ST$<token>`` for a security token (session tokens, instance and resource
principals), whose public key the verifier learned when the token was issued.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
import textwrap
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MAX_AGE = timedelta(minutes=5)
GENERIC = ("date", "(request-target)", "host")
BODY = ("content-length", "content-type", "x-content-sha256")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class TestKey:
    """An RSA key pair and the OCI identity it stands for."""

    __test__ = False  # not a pytest test class

    private: rsa.RSAPrivateKey
    tenancy: str = "ocid1.tenancy.oc1..aaaaaaaatest"
    user: str = "ocid1.user.oc1..aaaaaaaatest"

    @classmethod
    def generate(cls, **kw: str) -> TestKey:
        """A fresh 2048-bit key (as ``oci setup keys`` makes)."""
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048), **kw)

    @property
    def public(self) -> rsa.RSAPublicKey:
        """The public half, which the server knows."""
        return self.private.public_key()

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint as the OCI console shows it (MD5 of the DER public key)."""
        der = self.public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.md5(der).hexdigest()
        return ":".join(textwrap.wrap(digest, 2))

    @property
    def key_id(self) -> str:
        """The ``keyId`` of requests signed with this API key."""
        return f"{self.tenancy}/{self.user}/{self.fingerprint}"

    def pem(self, passphrase: str | None = None) -> bytes:
        """The private key in PEM (PKCS#8), encrypted with ``passphrase`` when given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode())
            if passphrase
            else serialization.NoEncryption()
        )
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def write_profile(
    directory: Path,
    key: TestKey,
    *,
    profile: str = "DEFAULT",
    token: str | None = None,
    passphrase: str | None = None,
) -> Path:
    """Write an OCI config file with ``profile`` (and its key file) into ``directory``.

    With ``token``, the profile is a session-token profile (``security_token_file``) as ``oci
    session authenticate`` writes it. Returns the config file's path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / f"{profile.lower()}_key.pem"
    key_file.write_bytes(key.pem(passphrase))
    key_file.chmod(0o600)
    lines = [
        f"[{profile}]",
        f"tenancy={key.tenancy}",
        "region=us-ashburn-1",
        f"key_file={key_file}",
    ]
    if token is None:
        lines += [f"user={key.user}", f"fingerprint={key.fingerprint}"]
    else:
        token_file = directory / f"{profile.lower()}_token"
        token_file.write_text(token + "\n", encoding="utf-8")
        lines.append(f"security_token_file={token_file}")
    if passphrase:
        lines.append(f"pass_phrase={passphrase}")
    config = directory / "config"
    with config.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n\n")
    return config


@dataclass
class Verifier:
    """Knows the public keys of API keys and of issued security tokens; checks signatures."""

    api_keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    tokens: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)  # keyIds of requests that verified

    def trust(self, key: TestKey) -> None:
        """Accept requests signed with ``key`` as an API key."""
        self.api_keys[key.key_id] = key.public

    def issue(self, public: rsa.RSAPublicKey, token: str | None = None) -> str:
        """A security token bound to ``public`` (a session token; a principal's token)."""
        token = token or f"test-token-{uuid.uuid4().hex}"
        self.tokens[token] = public
        return token

    def check(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: datetime | None = None,
    ) -> str | None:
        """None when the request is signed correctly, else what is wrong with it.

        ``target`` is the path and query as sent; ``headers`` has lower-case names.
        """
        header = headers.get("authorization", "")
        if not header.startswith("Signature "):
            return "no Signature authorization header"
        params = dict(_PARAM.findall(header))
        if params.get("version") != "1" or params.get("algorithm") != "rsa-sha256":
            return "not a version 1 rsa-sha256 signature"
        key_id = params.get("keyId", "")
        public = (
            self.tokens.get(key_id[3:]) if key_id.startswith("ST$") else self.api_keys.get(key_id)
        )
        if public is None:
            return "unknown keyId"
        signed = params.get("headers", "").split()
        required = GENERIC + (BODY if method.upper() in ("PUT", "POST", "PATCH") else ())
        unsigned = [name for name in required if name not in signed]
        if unsigned:
            return f"headers not signed: {', '.join(unsigned)}"
        if BODY[2] in signed:
            digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
            if headers.get("x-content-sha256") != digest:
                return "x-content-sha256 does not match the body"
            if headers.get("content-length") != str(len(body)):
                return "content-length does not match the body"
        problem = _stale(headers.get("date"), now or datetime.now(UTC))
        if problem:
            return problem
        lines = []
        for name in signed:
            if name == "(request-target)":
                lines.append(f"(request-target): {method.lower()} {target}")
            elif name in headers:
                lines.append(f"{name}: {headers[name]}")
            else:
                return f"signed header {name} is missing"
        try:
            public.verify(
                base64.b64decode(params.get("signature", "")),
                "\n".join(lines).encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, ValueError):
            return "the signature does not verify"
        self.verified.append(key_id)
        return None


def _stale(date: str | None, now: datetime) -> str | None:
    if not date:
        return "no date header"
    try:
        sent = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return "unparseable date header"
    if sent.tzinfo is None or abs(now - sent) > MAX_AGE:
        return "the date header is more than 5 minutes off"
    return None
