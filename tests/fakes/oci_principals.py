"""Instance and resource principals, stubbed on loopback (never 169.254.169.254).

* :class:`MetadataStub` is an instance's metadata service (IMDS v2): its region, its leaf
  certificate and key (the tenancy in the certificate's subject, as OCI issues them) and an
  intermediate certificate. Point ``OCI_METADATA_BASE_URL`` at :attr:`MetadataStub.url`;
  ``status`` makes every answer an error instead.
* :class:`FederationStub` is the auth service's ``/v1/x509``: it issues a security token
  (a JWT) bound to the session public key the SDK sends, and tells the
  :class:`~tests.fakes.oci_signing.Verifier` of the API about it. ``hold`` keeps the answer
  back until a test releases it (to see whether the caller's event loop is blocked).
* :func:`session_token` makes a token (a JWT with ``exp``, as the SDK reads it) for resource
  principals v2.2, whose token and key are files named by ``OCI_RESOURCE_PRINCIPAL_*``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.fakes.oci_signing import TestKey, Verifier

HOLD_GUARD = 10.0  # seconds a held answer waits for its release (a hang guard only)
_SECRET = uuid.uuid4().hex * 2  # the tokens' own signature: nobody verifies it in the SDK


def session_token(key: TestKey, verifier: Verifier, *, ttl: timedelta = timedelta(hours=1)) -> str:
    """A security token for ``key`` that ``verifier`` accepts (``keyId="ST$<token>"``)."""
    now = int(time.time())
    claims = {
        "iat": now,
        "exp": now + int(ttl.total_seconds()),
        "res_tenant": key.tenancy,
        "res_compartment": "ocid1.compartment.oc1..test",
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(claims, _SECRET, algorithm="HS256")  # the SDK never checks it
    verifier.issue(key.public, token)
    return token


def _certificate(subject: x509.Name, key: rsa.RSAPrivateKey) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class _Served:
    """A loopback HTTP server run in a thread; stop it with :meth:`close`."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                served.requests.append((self.command, self.path, dict(self.headers.items())))
                status, kind, content = served.answer(self.command, self.path, body)
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _any

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


class MetadataStub(_Served):
    """An instance's metadata service, as the SDK's instance principal signer reads it."""

    def __init__(self, tenancy: str = "ocid1.tenancy.oc1..aaaaaaaainstance") -> None:
        self.tenancy = tenancy
        self.status: int | None = None
        self.leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, "ocid1.instance.oc1..test"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "opc-certtype:instance"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"opc-tenant:{tenancy}"),
            ]
        )
        self.leaf = _certificate(leaf, self.leaf_key)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.intermediate = _certificate(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PKISVC Test CA")]), ca_key
        )
        super().__init__()

    @property
    def url(self) -> str:
        """The value for ``OCI_METADATA_BASE_URL``."""
        return f"{self.root}/opc/v2"

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if self.status is not None:
            return self.status, "application/json", b'{"code": "NotAuthenticated"}'
        files = {
            "/opc/v2/instance/region": b"us-ashburn-1",
            "/opc/v2/identity/cert.pem": _pem(self.leaf),
            "/opc/v2/identity/intermediate.pem": _pem(self.intermediate),
            "/opc/v2/identity/key.pem": self.leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        }
        if path not in files:
            return 404, "text/plain", b"not found"
        return 200, "text/plain", files[path]


@dataclass
class _Issued:
    tokens: list[str] = field(default_factory=list)
    held: list[bool] = field(default_factory=list)  # per request: released in time?


class FederationStub(_Served):
    """The auth service's ``/v1/x509``: a token for the session key the caller sends."""

    def __init__(self, verifier: Verifier, *, ttl: timedelta = timedelta(hours=1)) -> None:
        self.verifier = verifier
        self.ttl = ttl
        self.hold: threading.Event | None = None
        self.reached = threading.Event()
        self.issued = _Issued()
        super().__init__()

    @property
    def url(self) -> str:
        """The ``federation_endpoint``."""
        return f"{self.root}/v1/x509"

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
        if method != "POST" or path != "/v1/x509":
            return 404, "application/json", b'{"code": "NotFound"}'
        self.reached.set()
        if self.hold is not None:
            self.issued.held.append(self.hold.wait(HOLD_GUARD))
        payload = json.loads(body)
        public = serialization.load_pem_public_key(
            b"-----BEGIN PUBLIC KEY-----\n"
            + payload["publicKey"].encode()
            + b"\n-----END PUBLIC KEY-----\n"
        )
        assert isinstance(public, rsa.RSAPublicKey)
        now = int(time.time())
        claims = {"iat": now, "exp": now + int(self.ttl.total_seconds()), "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, _SECRET, algorithm="HS256")
        self.verifier.issue(public, token)
        self.issued.tokens.append(token)
        return 200, "application/json", json.dumps({"token": token}).encode()
