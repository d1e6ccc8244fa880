"""ESS authentication against the fake: HTTP Basic from a password file, and OAuth2 client
credentials (a bearer token from the fake identity domain, cached, refreshed before it
expires and once after a 401). What the fake received is the evidence: which credentials,
how many token requests. Secrets never reach a log line, an error or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import httpx
import pytest

from janitor.auth.oauth2 import ClientCredentials
from janitor.clock import FrozenClock
from janitor.errors import AuthFailed
from janitor.model import Session, State
from janitor.providers.ess import EssProvider
from janitor.targets import EssConfig
from tests.fakes.ess import EssServer, Fault, ess_target

T = TypeVar("T")


@pytest.fixture
def server(clock: FrozenClock) -> EssServer:
    """The fake scheduler and identity domain; one request in it."""
    fake = EssServer(clock=clock, page_size=3)
    fake.add(state="RUNNING")
    return fake


def provider(
    server: EssServer, clock: FrozenClock, directory: Path, **keys: Any
) -> tuple[EssProvider, dict[str, Any]]:
    """A provider on the fake, and its target table (the secret's file is in it)."""
    table = ess_target(directory, server, **keys)
    config = EssConfig.model_validate(table)
    return EssProvider.connect(config, clock, transport=server.transport()), table


def run(ess: EssProvider, scenario: Callable[[EssProvider], Awaitable[T]]) -> T:
    """Run ``scenario`` in a fresh event loop, then close the provider."""

    async def main() -> T:
        try:
            return await scenario(ess)
        finally:
            await ess.aclose()

    return asyncio.run(main())


def stub(request_id: int) -> Session:
    """A record to re-read."""
    return Session(
        target="ess",
        provider="ess",
        id=str(request_id),
        name="",
        kind="",
        state=State.UNKNOWN,
        provider_state="",
    )


def authorizations(server: EssServer) -> list[str]:
    """The schemes of what reached the API (never the token endpoint)."""
    return [op for _, op, _ in server.log if op != "token"]


# --- Basic ------------------------------------------------------------------------------------


def test_basic_credentials_from_the_password_file_are_accepted(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path)
    listing = run(ess, lambda p: p.list_sessions())
    assert len(listing.sessions) == 1, "the fake checked user and password on every call"
    assert server.token_requests == 0


def test_a_wrong_password_is_an_auth_failure_sent_once_per_request(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path)
    server.password = "rotated"
    with pytest.raises(AuthFailed):
        run(ess, lambda p: p.list_sessions())
    assert len(authorizations(server)) == 1, "refused: not retried with the same password"


def test_a_rotated_password_file_is_read_again(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, table = provider(server, clock, tmp_path)
    secret = Path(table["password_file"])

    async def rotate(p: EssProvider) -> int:
        await p.list_sessions()
        server.password = "new password"
        with pytest.raises(AuthFailed):  # the file still holds the old one
            await p.list_sessions()
        secret.write_text("new password\n", encoding="utf-8")
        return len((await p.list_sessions()).sessions)

    assert run(ess, rotate) == 1


def test_a_password_file_changed_unnoticed_is_read_again_after_a_401(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, table = provider(server, clock, tmp_path)
    secret = Path(table["password_file"])
    request = next(iter(server.requests.values()))

    async def rotate(p: EssProvider) -> Session | None:
        await p.get_session(stub(request.id))  # the password is cached with the file's stamp
        before = secret.stat()
        server.password = server.password[::-1]  # same length: same size
        secret.write_text(server.password + "\n", encoding="utf-8")
        os.utime(secret, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
        return await p.get_session(stub(request.id))

    assert run(ess, rotate) is not None
    assert authorizations(server) == ["get", "get", "get"], "401, then once more, re-read"


def test_a_missing_password_file_is_an_auth_failure_naming_it(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, table = provider(server, clock, tmp_path)
    Path(table["password_file"]).unlink()
    with pytest.raises(AuthFailed, match=r"password_file .* cannot be read"):
        run(ess, lambda p: p.list_sessions())
    assert server.log == [], "nothing was sent without credentials"


# --- OAuth2 client credentials ----------------------------------------------------------------


def test_one_token_serves_every_request_until_it_is_due_and_is_refreshed_before_expiry(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")

    async def sweeps(p: EssProvider) -> None:
        await p.list_sessions()  # ~30 requests
        clock.advance(timedelta(minutes=54))
        await p.list_sessions()
        assert server.token_requests == 1, "cached for the whole hour but its last minutes"
        clock.advance(timedelta(minutes=2))  # 56 minutes: within 5 minutes of expiry
        await p.list_sessions()
        assert server.token_requests == 2, "refreshed before it expired"

    run(ess, sweeps)
    assert len(authorizations(server)) > 60
    assert not any(op == "token" for _, op, _ in server.log[-10:]), "one refresh, not one per call"


def test_a_revoked_token_is_replaced_once_on_a_401(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")
    request = next(iter(server.requests.values()))

    async def revoke(p: EssProvider) -> Session | None:
        await p.get_session(stub(request.id))
        server.revoke_tokens()
        return await p.get_session(stub(request.id))

    assert run(ess, revoke) is not None
    assert server.token_requests == 2
    assert authorizations(server) == ["get", "get", "get"], "the 401, then the retry"


def test_a_second_401_is_the_api_s_answer_not_a_loop(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")
    server.faults.append(Fault(op="list", status=401, body={"title": "Unauthorized"}, times=5))
    with pytest.raises(AuthFailed):
        run(ess, lambda p: p.list_sessions())
    assert server.token_requests == 2, "one token, one replacement, then the failure"
    assert len(authorizations(server)) == 2


def test_concurrent_requests_share_one_token_request(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2", max_concurrency=8)
    request = next(iter(server.requests.values()))

    async def many(p: EssProvider) -> list[Session | None]:
        return list(await asyncio.gather(*(p.get_session(stub(request.id)) for _ in range(8))))

    assert all(run(ess, many))
    assert server.token_requests == 1


def test_the_token_request_authenticates_the_client_as_rfc_6749_says(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    seen: list[httpx.Request] = []
    transport = server.transport()

    def spy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth2/v1/token":
            seen.append(request)
        return transport.handle_request(request)

    table = ess_target(tmp_path, server, auth="oauth2")
    ess = EssProvider.connect(
        EssConfig.model_validate(table), clock, transport=httpx.MockTransport(spy)
    )
    run(ess, lambda p: p.get_session(stub(next(iter(server.requests)))))

    [token] = seen
    assert token.method == "POST"
    assert token.headers["content-type"] == "application/x-www-form-urlencoded"
    assert token.headers["authorization"].startswith("Basic ")
    form = parse_qs(token.content.decode())
    assert form == {"grant_type": ["client_credentials"], "scope": [server.scope]}, (
        "the secret travels in the Authorization header only"
    )
    # the secret holds '+', '/' and '=': the fake decodes them only if they were form-encoded


@pytest.mark.parametrize(
    ("change", "code"),
    [("client_secret", "invalid_client"), ("scope", "invalid_scope")],
)
def test_a_refused_token_request_is_an_auth_failure_that_never_shows_the_secret(
    server: EssServer,
    clock: FrozenClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    change: str,
    code: str,
) -> None:
    secret = server.client_secret
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")
    setattr(server, change, "something else")

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthFailed) as failure:
        run(ess, lambda p: p.list_sessions())

    message = str(failure.value)
    assert "token request" in message or "credentials rejected" in message
    if change == "scope":
        assert code in message
    assert secret not in message
    assert secret not in caplog.text
    assert secret not in repr(ess.http.client.auth._inner)  # type: ignore[union-attr]
    assert authorizations(server) == [], "no API call without a token"


def test_a_failing_token_endpoint_is_retried_like_any_read(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")
    server.faults.append(Fault(op="token", status=503, body={}))
    server.faults.append(Fault(op="token", status=429, body={}))
    listing = run(ess, lambda p: p.list_sessions())
    assert len(listing.sessions) == 1
    assert server.token_requests == 1, "the two injected answers, then the real one"
    assert sum(1 for _, op, _ in server.log if op == "token") == 3


@pytest.mark.parametrize(
    "body",
    [
        {"token_type": "Bearer", "expires_in": 3600},
        {"access_token": "t", "token_type": "mac", "expires_in": 3600},
        {"access_token": "t", "token_type": "Bearer", "expires_in": -5},
        {"access_token": "t", "token_type": "Bearer", "expires_in": "soon"},
    ],
)
def test_a_token_response_that_is_not_a_bearer_token_is_an_auth_failure(
    server: EssServer, clock: FrozenClock, tmp_path: Path, body: dict[str, Any]
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2")
    server.faults.append(Fault(op="token", status=200, body=body))
    with pytest.raises(AuthFailed, match="token request"):
        run(ess, lambda p: p.list_sessions())


def test_an_auto_budget_belongs_to_the_api_and_the_token_endpoint_keeps_a_fixed_rate(
    server: EssServer, clock: FrozenClock, tmp_path: Path
) -> None:
    ess, _ = provider(server, clock, tmp_path, auth="oauth2", requests_per_second="auto")
    token_client = ess._token
    assert isinstance(token_client, ClientCredentials)
    assert ess.http.limiter.adaptive, "the ESS API adapts its rate"
    assert not token_client._http.limiter.adaptive, (
        "the token endpoint shares the target's gauge label: an adaptive limiter there would "
        "overwrite the API's rate in janitor_request_budget_per_second"
    )
    run(ess, lambda p: p.get_session(stub(next(iter(server.requests)))))
