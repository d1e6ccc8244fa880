"""OCI request signing (janitor/auth/oci.py) with the oci package's signers, for every scheme.

Every signature is checked by :class:`tests.fakes.oci_signing.Verifier`, written from OCI's
specification with ``cryptography`` and the public half of a key generated in the test.
Instance and resource principals run against loopback stubs of the metadata service and the
federation endpoint (tests/fakes/oci_principals.py); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import oci
import pytest

from janitor.auth.oci import ApiKeySource, OciAuth, PrincipalSource, SecurityTokenSource
from janitor.clock import FrozenClock
from janitor.errors import AuthFailed, ConfigError
from janitor.model import Listing
from janitor.providers.aidp import AidpProvider
from tests.fakes.aidp import AidpServer, aidp_config
from tests.fakes.oci_principals import FederationStub, MetadataStub, session_token
from tests.fakes.oci_signing import TestKey, Verifier, write_profile

URL = "https://aidp.us-ashburn-1.oci.oraclecloud.com/20260430/aiDataPlatforms/p/workspaces/w"


@pytest.fixture(scope="module")
def key() -> TestKey:
    """The user's API key."""
    return TestKey.generate()


class Api:
    """An httpx transport that checks each request's signature, as OCI does (401 if bad)."""

    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier
        self.problems: list[str | None] = []
        self.headers: list[dict[str, str]] = []

    def transport(self) -> httpx.MockTransport:
        """The transport."""

        def handle(request: httpx.Request) -> httpx.Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            problem = self.verifier.check(
                request.method, request.url.raw_path.decode(), headers, request.content
            )
            self.problems.append(problem)
            self.headers.append(headers)
            if problem:
                return httpx.Response(401, json={"code": "NotAuthenticated", "message": problem})
            return httpx.Response(200, json={"ok": True})

        return httpx.MockTransport(handle)


def send(auth: OciAuth, api: Api, method: str = "GET", **kw: Any) -> httpx.Response:
    """One request through an async client with ``auth``."""

    async def main() -> httpx.Response:
        async with httpx.AsyncClient(auth=auth, transport=api.transport()) as client:
            return await client.request(method, kw.pop("url", URL), **kw)

    return asyncio.run(main())


# --- API keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("GET", {"params": {"limit": 100, "page": "b2Zmc2V0OjQ=", "sortBy": "timeCreated"}}),
        ("DELETE", {"headers": {"if-match": '"abc"'}}),
        ("PATCH", {"json": {"name": "[idle: cleanup at 14:30 UTC] Ünïcode"}}),
    ],
)
def test_a_signed_request_verifies_with_the_public_half_of_the_key(
    tmp_path: Path, key: TestKey, method: str, kw: dict[str, Any]
) -> None:
    verifier = Verifier()
    verifier.trust(key)
    api = Api(verifier)
    auth = OciAuth(ApiKeySource(write_profile(tmp_path, key), "DEFAULT"))

    response = send(auth, api, method, **kw)

    assert response.status_code == 200, api.problems
    assert verifier.verified == [key.key_id]
    signed = api.headers[0]["authorization"]
    assert f'keyId="{key.key_id}"' in signed
    expected = "date (request-target) host"
    if method == "PATCH":
        expected += " content-length content-type x-content-sha256"
    assert f'headers="{expected}"' in signed


def test_a_request_changed_after_signing_does_not_verify(tmp_path: Path, key: TestKey) -> None:
    verifier = Verifier()
    verifier.trust(key)
    auth = OciAuth(ApiKeySource(write_profile(tmp_path, key), "DEFAULT"))
    request = httpx.Request("PATCH", URL + "/s/1", json={"name": "a"})
    flow = auth.sync_auth_flow(request)
    signed = next(flow)
    headers = {k.lower(): v for k, v in signed.headers.items()}
    target = signed.url.raw_path.decode()

    assert verifier.check("PATCH", target, headers, signed.content) is None
    assert verifier.check("DELETE", target, headers, signed.content) is not None
    assert verifier.check("PATCH", target + "x", headers, signed.content) is not None
    assert verifier.check("PATCH", target, headers, b'{"name": "b"}') is not None
    other = TestKey.generate()
    stranger = Verifier()
    stranger.api_keys[key.key_id] = other.public  # the right key id, the wrong public key
    assert stranger.check("PATCH", target, headers, signed.content) is not None


def test_a_key_with_a_pass_phrase_signs(tmp_path: Path, key: TestKey) -> None:
    verifier = Verifier()
    verifier.trust(key)
    config = write_profile(tmp_path, key, passphrase="correct horse")
    assert send(OciAuth(ApiKeySource(config, "DEFAULT")), Api(verifier)).status_code == 200


def test_a_named_profile_is_used(tmp_path: Path, key: TestKey) -> None:
    other = TestKey.generate(user="ocid1.user.oc1..other")
    write_profile(tmp_path, other)  # DEFAULT: someone else
    config = write_profile(tmp_path, key, profile="JANITOR")
    verifier = Verifier()
    verifier.trust(key)
    assert send(OciAuth(ApiKeySource(config, "JANITOR")), Api(verifier)).status_code == 200


@pytest.mark.parametrize(
    ("mangle", "said"),
    [
        (lambda config: config.unlink(), "ConfigFileNotFound"),
        (lambda config: None, "ProfileNotFound"),  # the profile asked for is not there
        (
            lambda config: config.write_text(config.read_text().replace("fingerprint=", "x=")),
            "fingerprint",
        ),
        (lambda config: (config.parent / "default_key.pem").unlink(), "key_file"),
    ],
)
def test_an_unreadable_profile_is_a_config_error_at_connect(
    tmp_path: Path, key: TestKey, clock: FrozenClock, mangle: Any, said: str
) -> None:
    config = write_profile(tmp_path, key)
    profile = "MISSING" if said == "ProfileNotFound" else "DEFAULT"
    mangle(config)
    target = aidp_config("http://aidp.test/", config, oci_profile=profile)

    with pytest.raises(ConfigError) as failed:
        AidpProvider.connect(target, clock)

    message = str(failed.value)
    assert message.startswith(f"target aidp: api_key: OCI config file {config}, profile {profile}")
    assert said in message
    assert "PRIVATE KEY" not in message


def test_a_key_rotated_on_disk_is_picked_up(tmp_path: Path, key: TestKey) -> None:
    config = write_profile(tmp_path, key)
    verifier = Verifier()
    verifier.trust(key)
    api = Api(verifier)
    auth = OciAuth(ApiKeySource(config, "DEFAULT"))
    assert send(auth, api).status_code == 200

    new = TestKey.generate()  # the operator uploads a new key and rewrites the profile
    config.unlink()
    write_profile(tmp_path, new)
    verifier.api_keys = {}
    verifier.trust(new)

    assert send(auth, api).status_code == 200
    assert verifier.verified == [key.key_id, new.key_id]


def test_a_key_file_removed_later_fails_the_request_not_the_process(
    tmp_path: Path, key: TestKey, clock: FrozenClock
) -> None:
    config = write_profile(tmp_path, key)
    verifier = Verifier()
    verifier.trust(key)
    platform = AidpServer(verifier=verifier, clock=clock)
    platform.add("nb")
    provider = AidpProvider.connect(
        aidp_config("http://aidp.test/", config), clock, transport=platform.transport()
    )
    (tmp_path / "default_key.pem").unlink()

    async def scenario() -> None:
        try:
            with pytest.raises(AuthFailed, match="api_key") as failed:
                await provider.list_sessions()
            assert failed.value.target == "aidp"
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert platform.log == [], "nothing unsigned was sent"


# --- session tokens -----------------------------------------------------------------------------


def test_a_session_token_profile_signs_with_the_token(tmp_path: Path, key: TestKey) -> None:
    verifier = Verifier()
    token = session_token(key, verifier)
    config = write_profile(tmp_path, key, token=token)
    api = Api(verifier)

    assert send(OciAuth(SecurityTokenSource(config, "DEFAULT")), api).status_code == 200
    assert f'keyId="ST${token}"' in api.headers[0]["authorization"]


def test_a_refreshed_token_file_is_used_even_when_its_stamp_did_not_move(
    tmp_path: Path, key: TestKey
) -> None:
    verifier = Verifier()
    old = session_token(key, verifier)
    config = write_profile(tmp_path, key, token=old)
    token_file = tmp_path / "default_token"
    api = Api(verifier)
    auth = OciAuth(SecurityTokenSource(config, "DEFAULT"))
    assert send(auth, api).status_code == 200

    # `oci session refresh`: a new token of the same length, the old one expires at once;
    # the mtime is put back, so only the 401 tells janitor to read the file again
    new = session_token(key, verifier)
    del verifier.tokens[old]
    assert len(new) == len(old)
    stat = token_file.stat()
    token_file.write_text(new + "\n", encoding="utf-8")
    os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    response = send(auth, api)

    assert response.status_code == 200
    assert api.problems[1:] == ["unknown keyId", None], "401, re-read, signed again"


def test_a_session_token_profile_without_a_token_file_is_a_config_error(
    tmp_path: Path, key: TestKey
) -> None:
    config = write_profile(tmp_path, key)  # an API key profile
    with pytest.raises(ConfigError, match="no security_token_file"):
        SecurityTokenSource(config, "DEFAULT")


# --- resource principals ------------------------------------------------------------------------


@pytest.fixture
def resource_principal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[TestKey, Verifier, Path]:
    """Resource principals v2.2: a token file and a key file named by the environment."""
    key = TestKey.generate()
    verifier = Verifier()
    rpst = tmp_path / "rpst"
    rpst.write_text(session_token(key, verifier), encoding="utf-8")
    pem = tmp_path / "rp_key.pem"
    pem.write_bytes(key.pem())
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_RPST", str(rpst))
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", str(pem))
    monkeypatch.setenv("OCI_RESOURCE_PRINCIPAL_REGION", "us-ashburn-1")
    return key, verifier, rpst


def test_a_resource_principal_target_lists_with_the_environments_token(
    resource_principal: tuple[TestKey, Verifier, Path], clock: FrozenClock, tmp_path: Path
) -> None:
    key, verifier, rpst = resource_principal
    platform = AidpServer(verifier=verifier, clock=clock)
    platform.add("nb")
    config = aidp_config("http://aidp.test/", None, auth="resource_principal")

    async def scenario() -> list[Listing]:
        provider = AidpProvider.connect(config, clock, transport=platform.transport())
        try:
            first = await provider.list_sessions()
            # the platform rotates the token file and revokes the old token
            del verifier.tokens[rpst.read_text()]
            rpst.write_text(session_token(key, verifier), encoding="utf-8")
            return [first, await provider.list_sessions()]
        finally:
            await provider.aclose()

    listings = asyncio.run(scenario())
    assert [len(listing.sessions) for listing in listings] == [1, 1]
    assert all(v.startswith("ST$") for v in verifier.verified)
    assert len(set(verifier.verified)) == 2, "the rotated token after a 401"


def test_a_resource_principal_without_its_environment_fails_the_listing(
    clock: FrozenClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCI_RESOURCE_PRINCIPAL_VERSION", raising=False)
    platform = AidpServer(verifier=Verifier(), clock=clock)
    config = aidp_config("http://aidp.test/", None, auth="resource_principal")

    async def scenario() -> None:
        provider = AidpProvider.connect(config, clock, transport=platform.transport())
        try:
            with pytest.raises(AuthFailed, match="resource principal: no credentials"):
                await provider.list_sessions()
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert platform.log == []


# --- instance principals ------------------------------------------------------------------------


@pytest.fixture
def metadata(monkeypatch: pytest.MonkeyPatch) -> Iterator[MetadataStub]:
    """The metadata service on loopback, where OCI_METADATA_BASE_URL sends the SDK."""
    stub = MetadataStub()
    monkeypatch.setenv("OCI_METADATA_BASE_URL", stub.url)
    try:
        yield stub
    finally:
        stub.close()


def test_an_instance_principal_token_is_fetched_off_the_event_loop(
    metadata: MetadataStub,
) -> None:
    verifier = Verifier()
    federation = FederationStub(verifier)
    federation.hold = release = threading.Event()
    source = PrincipalSource(
        "instance principal",
        lambda: oci.auth.signers.InstancePrincipalsSecurityTokenSigner(
            federation_endpoint=federation.url
        ),
    )
    api = Api(verifier)

    async def main() -> tuple[httpx.Response, bool]:
        async with httpx.AsyncClient(auth=OciAuth(source), transport=api.transport()) as client:
            request = asyncio.create_task(client.get(URL))
            # while the federation endpoint holds its answer, this loop must keep running
            while not federation.reached.is_set():
                await asyncio.sleep(0.01)
            loop_ran = not release.is_set()
            release.set()
            return await request, loop_ran

    try:
        response, loop_ran = asyncio.run(main())
    finally:
        federation.close()

    assert loop_ran
    assert federation.issued.held == [True], "released by the loop, not by the hang guard"
    assert response.status_code == 200, api.problems
    (token,) = federation.issued.tokens
    assert f'keyId="ST${token}"' in api.headers[0]["authorization"]
    paths = [path for _, path, _ in metadata.requests]
    assert "/opc/v2/identity/cert.pem" in paths
    assert all(h.get("Authorization") == "Bearer Oracle" for _, _, h in metadata.requests)


def test_an_instance_principal_is_refreshed_after_a_401(metadata: MetadataStub) -> None:
    verifier = Verifier()
    federation = FederationStub(verifier)
    source = PrincipalSource(
        "instance principal",
        lambda: oci.auth.signers.InstancePrincipalsSecurityTokenSigner(
            federation_endpoint=federation.url
        ),
    )
    api = Api(verifier)
    auth = OciAuth(source)
    try:
        assert send(auth, api).status_code == 200
        verifier.tokens.clear()  # the token was revoked
        assert send(auth, api).status_code == 200
    finally:
        federation.close()
    assert len(federation.issued.tokens) == 2
    assert api.problems == [None, "unknown keyId", None]


def test_an_instance_principal_target_fails_closed_when_the_metadata_service_refuses(
    metadata: MetadataStub, clock: FrozenClock, tmp_path: Path
) -> None:
    metadata.status = 401
    platform = AidpServer(verifier=Verifier(), clock=clock)
    platform.add("nb")
    config = aidp_config("http://aidp.test/", None, auth="instance_principal")

    async def scenario() -> None:
        provider = AidpProvider.connect(config, clock, transport=platform.transport())
        assert metadata.requests == [], "connecting does no network I/O"
        try:
            with pytest.raises(AuthFailed, match="instance principal: no credentials"):
                await provider.list_sessions()
        finally:
            await provider.aclose()

    asyncio.run(scenario())
    assert metadata.requests, "the SDK asked the (loopback) metadata service"
    assert platform.log == [], "and sent nothing unsigned"
    with warnings.catch_warnings():  # the SDK leaves a failed signer's connection to the GC
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def test_the_auth_never_shows_a_secret(tmp_path: Path, key: TestKey) -> None:
    config = write_profile(tmp_path, key, passphrase="s3cret-phrase")
    auth = OciAuth(ApiKeySource(config, "DEFAULT"))
    assert "s3cret" not in repr(auth)
    assert str(config) in repr(auth)
