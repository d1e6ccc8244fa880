"""Huawei authentication (janitor/auth/huawei.py): the AK/SK signer and the IAM token flows.

The signer is checked against vectors produced by Huawei's own ``huaweicloudsdkcore`` Signer
(``huawei_sdk_vectors.json`` beside this file): janitor's signer must reproduce each
``Authorization`` header and the query string sent, and, where the SDK is installed (it is a
``dev`` dependency), the SDK must reproduce the frozen vectors, which proves they are the
SDK's and not janitor's. Regenerate them with
``python -m tests.providers.test_fabric_sql_auth > tests/providers/huawei_sdk_vectors.json``.

The token flows run against the fake service and IAM (tests/fakes/fabric.py): what IAM and
the service received, never internal counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from janitor.auth.huawei import AkSkAuth, IamPasswordAuth, TokenFileAuth, sign
from janitor.clock import FrozenClock
from janitor.errors import AuthFailed, ProviderUnavailable, Throttled
from tests.fakes.fabric import (
    FABRIC_HOST,
    IAM_HOST,
    INTERNAL,
    PROJECT,
    THROTTLED,
    FabricServer,
    Fault,
    Key,
)

VECTORS = Path(__file__).with_name("huawei_sdk_vectors.json")
WHEN = "20261122T120000Z"

#: The requests signed: several methods, queries with odd characters, bodies, temporary
#: credentials, encoded paths, a non-default port, no project.
CASES: list[dict[str, Any]] = [
    {
        "name": "list sessions",
        "method": "GET",
        "url": "https://fabric.cn-north-4.myhuaweicloud.com/v1/workspaces/ws-1/sessions",
        "params": [["limit", "100"], ["offset", "0"]],
    },
    {
        "name": "a later page of statements",
        "method": "GET",
        "url": "https://fabric.test/v1/workspaces/ws-1/sessions/0a1b-2c3d/statements",
        "params": [["offset", "200"], ["limit", "100"]],
    },
    {
        "name": "close a session",
        "method": "DELETE",
        "url": "https://fabric.test/v1/workspaces/ws-1/sessions/0a1b-2c3d",
    },
    {
        "name": "a query with odd characters",
        "method": "GET",
        "url": "https://fabric.test/v1/workspaces/ws-1/statement-records",
        "params": [
            ["filter", "name eq 'a b'"],
            ["plus", "1+1=2"],
            ["slash", "a/b?c&d#e"],
            ["tilde", "~user"],
            ["star", "*.sql"],
            ["unicode", "数据湖 é"],
            ["empty", ""],
            ["multi", "b"],
            ["multi", "a"],
            ["key with space", "v"],
            ["percent", "100%"],
        ],
    },
    {
        "name": "a JSON body",
        "method": "POST",
        "url": "https://fabric.test/v1/workspaces/ws-1/sessions/statements",
        "content_type": "application/json;charset=UTF-8",
        "body": '{"sql": "SELECT * FROM t WHERE a = \'x y\'", "is_sync": false}',
    },
    {
        "name": "a non-JSON body is unsigned",
        "method": "PUT",
        "url": "https://fabric.test/v1/workspaces/ws-1/files/report.csv",
        "content_type": "text/csv",
        "body": "a,b\n1,2\n",
    },
    {
        "name": "temporary credentials",
        "method": "GET",
        "url": "https://fabric.test/v1/workspaces/ws-1/sessions",
        "params": [["status", "RUNNING"]],
        "security_token": "gQpjbi1ub3J0aC00-temporary+token/==",
    },
    {
        "name": "an encoded path",
        "method": "GET",
        "url": "https://fabric.test/v1/workspaces/ws%201/sessions/a%2Fb~c",
    },
    {
        "name": "a non-default port",
        "method": "DELETE",
        "url": "http://127.0.0.1:8443/v1/workspaces/ws-1/sessions/s-1",
    },
    {
        "name": "no project (a global service)",
        "method": "PATCH",
        "url": "https://iam.test/v3/projects/p-1",
        "content_type": "application/json",
        "body": '{"project": {"description": "janitor"}}',
        "project_id": None,
    },
]
ACCESS_KEY = "HPUAZVKEXAMPLE7QW1XZ"
SECRET_KEY = "kOQ3b8PbN8Zl2ZexampleSecretKeyRrLbRk0j5S"


def _project(case: dict[str, Any]) -> str | None:
    return case.get("project_id", PROJECT)


def _request(case: dict[str, Any]) -> httpx.Request:
    headers = {"content-type": case["content_type"]} if "content_type" in case else {}
    body = case.get("body")
    return httpx.Request(
        case["method"],
        case["url"],
        params=[tuple(pair) for pair in case.get("params", [])],
        headers=headers,
        content=body.encode("utf-8") if body is not None else None,
    )


def janitor_vector(case: dict[str, Any]) -> dict[str, str]:
    """What janitor's signer sends for ``case``: the Authorization header and the path+query."""
    request = _request(case)
    sign(
        request,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        when=datetime.strptime(WHEN.replace("Z", "+0000"), "%Y%m%dT%H%M%S%z"),
        project_id=_project(case),
        security_token=case.get("security_token"),
    )
    return {
        "authorization": request.headers["authorization"],
        "target": request.url.raw_path.decode("ascii"),
    }


def sdk_vector(case: dict[str, Any]) -> dict[str, str]:
    """What huaweicloudsdkcore sends for ``case`` (its credentials add the project and token)."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkcore.sdk_request import SdkRequest

    url = httpx.URL(case["url"])
    headers = {"Host": url.netloc.decode("ascii"), "X-Sdk-Date": WHEN}
    if "content_type" in case:
        headers["Content-Type"] = case["content_type"]
    request = SdkRequest(
        method=case["method"],
        schema=url.scheme,
        host=url.netloc.decode("ascii"),
        resource_path=url.raw_path.decode("ascii"),
        query_params=[tuple(pair) for pair in case.get("params", [])],
        header_params=headers,
        body=case.get("body") or "",
    )
    credentials = BasicCredentials(ACCESS_KEY, SECRET_KEY, _project(case))
    if case.get("security_token"):
        credentials = credentials.with_security_token(case["security_token"])
    signed = credentials.sign_request(request)
    return {"authorization": signed.header_params["Authorization"], "target": signed.uri}


def _frozen() -> dict[str, dict[str, str]]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_janitor_signs_like_huaweis_sdk(case: dict[str, Any]) -> None:
    assert janitor_vector(case) == _frozen()[case["name"]]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_frozen_vectors_are_the_sdks_own(case: dict[str, Any]) -> None:
    pytest.importorskip("huaweicloudsdkcore")
    assert sdk_vector(case) == _frozen()[case["name"]]


def test_the_vectors_cover_every_case() -> None:
    assert sorted(_frozen()) == sorted(c["name"] for c in CASES)
    signed = {name: v["authorization"] for name, v in _frozen().items()}
    assert "x-security-token" in signed["temporary credentials"]
    assert "x-sdk-content-sha256" in signed["a non-JSON body is unsigned"]
    assert "x-project-id" not in signed["no project (a global service)"]


def test_signing_again_replaces_the_signature_and_sends_the_canonical_query() -> None:
    request = httpx.Request("GET", "https://fabric.test/v1/x", params={"b": "a b", "a": "1+1"})
    assert request.url.query == b"b=a+b&a=1%2B1", "httpx sends a space as +"
    for second in (0, 1):
        sign(
            request,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            when=datetime(2026, 11, 22, 12, 0, second, tzinfo=UTC),
            project_id=PROJECT,
        )
    assert request.url.query == b"a=1%2B1&b=a%20b"
    assert request.headers.get_list("authorization") == [request.headers["authorization"]]
    assert request.headers["x-sdk-date"] == "20261122T120001Z"


# --- the auth flows against the fake service and IAM -----------------------------------------


def _get(auth: httpx.Auth, server: FabricServer, *, times: int = 1) -> list[int]:
    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=auth, transport=server.transport()) as client:
            url = f"http://{FABRIC_HOST}/v1/workspaces/ws-1/sessions"
            responses = await asyncio.gather(*(client.get(url) for _ in range(times)))
            return [r.status_code for r in responses]

    return asyncio.run(main())


def _write(path: Path, text: str) -> None:
    """Replace a credential file the way rotation does (a new inode)."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text, encoding="utf-8")
    os.replace(fresh, path)


@pytest.fixture
def server(clock: FrozenClock) -> FabricServer:
    return FabricServer(clock=clock)


def test_aksk_requests_pass_the_services_verification(server: FabricServer, tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("fake-secret\n", encoding="utf-8")
    auth = AkSkAuth(access_key="AKFAKE0001", secret_key_file=secret, project_id=PROJECT)
    assert _get(auth, server) == [200]
    assert server.rejected == []
    assert "fake-secret" not in repr(auth)


def test_a_wrong_secret_key_is_refused(server: FabricServer, tmp_path: Path) -> None:
    secret = tmp_path / "sk"
    secret.write_text("not-the-secret", encoding="utf-8")
    auth = AkSkAuth(access_key="AKFAKE0001", secret_key_file=secret, project_id=PROJECT)
    assert _get(auth, server) == [401]
    assert server.rejected == ["signature mismatch"]


def test_a_rotated_secret_key_is_picked_up_after_a_401(
    server: FabricServer, tmp_path: Path
) -> None:
    secret = tmp_path / "sk"
    secret.write_text("fake-secret", encoding="utf-8")
    auth = AkSkAuth(access_key="AKFAKE0001", secret_key_file=secret, project_id=PROJECT)
    assert _get(auth, server) == [200]
    server.keys["AKFAKE0001"] = Key("rotated-secret")
    _write(secret, "rotated-secret")
    assert _get(auth, server) == [200], "the changed file is read before signing"
    assert server.rejected == []


def test_temporary_credentials_send_and_sign_the_security_token(
    server: FabricServer, tmp_path: Path
) -> None:
    server.keys["ASIATEMP0001"] = Key("temp-secret", security_token="temp-token-1")
    (tmp_path / "sk").write_text("temp-secret", encoding="utf-8")
    (tmp_path / "st").write_text("temp-token-1", encoding="utf-8")
    auth = AkSkAuth(
        access_key="ASIATEMP0001",
        secret_key_file=tmp_path / "sk",
        project_id=PROJECT,
        security_token_file=tmp_path / "st",
    )
    assert _get(auth, server) == [200]
    server.keys["ASIATEMP0001"] = Key("temp-secret-2", security_token="temp-token-2")
    _write(tmp_path / "sk", "temp-secret-2")
    _write(tmp_path / "st", "temp-token-2")
    assert _get(auth, server) == [200]
    assert server.rejected == []


def test_a_token_file_is_reread_when_it_changes_and_after_a_401(
    server: FabricServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("fabric-token\n", encoding="utf-8")
    auth = TokenFileAuth(token)
    assert _get(auth, server) == [200]
    server.tokens = {"new-token"}
    _write(token, "new-token")
    assert _get(auth, server) == [200]
    assert server.requests("list") == 2, "the changed file was read before sending"

    # a token of the same length with the old modification time: only the 401 tells
    server.tokens = {"new-tokex"}
    stat = token.stat()
    token.write_text("new-tokex", encoding="utf-8")
    os.utime(token, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _get(auth, server) == [200]
    assert server.rejected == ["unknown or expired token"], "one 401, then the re-read token"
    assert server.requests("list") == 4
    assert "new-tokex" not in repr(auth)


def test_a_401_with_an_unchanged_token_is_not_retried(server: FabricServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("revoked", encoding="utf-8")
    assert _get(TokenFileAuth(token), server) == [401]
    assert server.requests("list") == 1


def test_an_unreadable_credential_file_is_an_auth_failure_naming_the_key(
    server: FabricServer, tmp_path: Path
) -> None:
    with pytest.raises(AuthFailed, match=r"token_file .*missing.* cannot be read"):
        _get(TokenFileAuth(tmp_path / "missing"), server)
    (tmp_path / "empty").write_text("\n", encoding="utf-8")
    with pytest.raises(AuthFailed, match=r"secret_key_file .* is empty"):
        _get(AkSkAuth(access_key="AK", secret_key_file=tmp_path / "empty", project_id="p"), server)
    assert server.log == [], "nothing was sent"


def _password_auth(
    tmp_path: Path, clock: FrozenClock, server: FabricServer, password: str = "fake-password"
) -> IamPasswordAuth:
    path = tmp_path / "password"
    path.write_text(password + "\n", encoding="utf-8")
    return IamPasswordAuth(
        iam_url=f"http://{IAM_HOST}/",
        domain="acme",
        username="janitor",
        password_file=path,
        project_id=PROJECT,
        clock=clock,
        timeout=timedelta(seconds=5),
        transport=server.transport(),
    )


def test_the_password_flow_fetches_one_token_for_concurrent_requests(
    server: FabricServer, clock: FrozenClock, tmp_path: Path
) -> None:
    auth = _password_auth(tmp_path, clock, server)
    assert _get(auth, server, times=5) == [200] * 5
    assert server.requests("iam") == 1
    assert len(server.issued) == 1


def test_the_password_flow_refreshes_the_token_before_it_expires(
    server: FabricServer, clock: FrozenClock, tmp_path: Path
) -> None:
    auth = _password_auth(tmp_path, clock, server)

    async def scenario() -> list[str]:
        tokens = []
        async with httpx.AsyncClient(auth=auth, transport=server.transport()) as client:
            url = f"http://{FABRIC_HOST}/v1/workspaces/ws-1/sessions"
            for advance in (timedelta(0), timedelta(hours=22), timedelta(hours=1, minutes=1)):
                clock.advance(advance)
                response = await client.get(url)
                assert response.status_code == 200
                tokens.append(response.request.headers["x-auth-token"])
        await auth.aclose()
        return tokens

    first, later, refreshed = asyncio.run(scenario())
    assert first == later, "22 h in, the token is still used"
    assert refreshed != first, "23 h 1 min in, a new one was fetched"
    assert server.requests("iam") == 2
    assert server.issued[first] > clock.now(), "the old token had not expired yet"
    assert server.rejected == []


def test_the_password_flow_fetches_a_new_token_after_a_401(
    server: FabricServer, clock: FrozenClock, tmp_path: Path
) -> None:
    auth = _password_auth(tmp_path, clock, server)
    assert _get(auth, server) == [200]
    server.issued.clear()  # IAM revoked the token
    assert _get(auth, server) == [200]
    assert server.requests("iam") == 2
    assert server.rejected == ["unknown or expired token"]


def test_a_wrong_password_is_an_auth_failure_that_never_shows_the_password(
    server: FabricServer, clock: FrozenClock, tmp_path: Path
) -> None:
    auth = _password_auth(tmp_path, clock, server, password="s3cret-wrong")
    with pytest.raises(AuthFailed) as caught:
        _get(auth, server)
    assert "IAM.0001" in str(caught.value)
    assert "janitor" in str(caught.value)
    assert "s3cret-wrong" not in str(caught.value)
    assert "s3cret-wrong" not in repr(auth)
    assert server.requests("list") == 0


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (500, INTERNAL, ProviderUnavailable),
        (429, THROTTLED, Throttled),
        (503, None, ProviderUnavailable),
    ],
)
def test_iam_failures_are_retryable_errors_raised_before_sending(
    server: FabricServer,
    clock: FrozenClock,
    tmp_path: Path,
    status: int,
    body: Any,
    error: type[Exception],
) -> None:
    server.faults.append(Fault(op="iam", status=status, body=body))
    auth = _password_auth(tmp_path, clock, server)
    with pytest.raises(error) as caught:
        _get(auth, server)
    assert getattr(caught.value, "status", None) is None, "nothing was sent: a write may retry"
    assert server.requests("list") == 0


def test_the_password_auth_refuses_a_sync_client(
    server: FabricServer, clock: FrozenClock, tmp_path: Path
) -> None:
    auth = _password_auth(tmp_path, clock, server)
    with (
        httpx.Client(auth=auth, transport=server.transport()) as client,
        pytest.raises(RuntimeError, match="AsyncClient"),
    ):
        client.get(f"http://{FABRIC_HOST}/")
    asyncio.run(auth.aclose())


if __name__ == "__main__":  # regenerate the vectors with the SDK
    json.dump({c["name"]: sdk_vector(c) for c in CASES}, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
