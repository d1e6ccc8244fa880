"""Sweeps of a glue target, against moto on loopback or against the fake Glue in-process.

``aws_environment`` keeps botocore's credential chain inside the test: credentials from the
environment (or a profile file in a temporary HOME), instance metadata disabled, no shared
config file of the machine, nothing that names a container or web identity endpoint.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from janitor.clock import FrozenClock
from janitor.model import AuditEvent, AuditKind, Outcome
from janitor.policy.spec import PolicySpec
from janitor.runtime import Runtime
from janitor.store import Store
from janitor.sweep import SweepReport, run_sweep
from tests.conftest import make_config

TARGET = "glue"
#: Variables that would let botocore's chain look outside the test.
AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_GLUE",
    "AWS_ENDPOINT_URL_STS",
)


def aws_environment(
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    *,
    access_key: str | None = None,
    secret_key: str | None = None,
    token: str | None = None,
) -> None:
    """An AWS environment that cannot reach past loopback: metadata off, a temporary HOME."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws" / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    if access_key is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    if secret_key is not None:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    if token is not None:
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)


@dataclass
class GlueWorld:
    """A store and sweeps of one glue target on a frozen clock."""

    store: Store
    clock: FrozenClock
    target: dict[str, Any]
    transport: httpx.AsyncBaseTransport | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    alerts: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, *specs: dict[str, Any]) -> None:
        """Store policies the way ``policy apply`` does."""
        self.store.policies.apply(
            [PolicySpec.model_validate(s) for s in specs], actor="test", now=self.clock.now()
        )

    def sweep(self) -> SweepReport:
        """One daemon sweep; the clock moves on a minute afterwards."""

        async def main() -> SweepReport:
            config = make_config(
                "sqlite://", [{"name": TARGET, "provider": "glue", **self.target}], **self.settings
            )
            rt = Runtime.build(
                config,
                clock=self.clock,
                store=self.store,
                transports={TARGET: self.transport} if self.transport else None,
                sentry=lambda kind, message, tags: self.alerts.append((kind, message)),
            )
            try:
                return await run_sweep(rt)
            finally:
                await rt.providers[TARGET].aclose()

        report = asyncio.run(main())
        self.clock.advance(timedelta(minutes=1))
        return report

    def rows(self, kind: AuditKind | None = None) -> list[AuditEvent]:
        """The audit rows of the target (of one kind)."""
        kinds = [str(kind)] if kind else []
        return self.store.audit.events(target=TARGET, kinds=kinds)

    def outcomes(self, session_id: str) -> list[Outcome | None]:
        """The outcome rows of one session, in order."""
        return [r.outcome for r in self.rows(AuditKind.OUTCOME) if r.session_id == session_id]

    def intents(self, session_id: str) -> list[AuditEvent]:
        """The intent rows of one session."""
        return [r for r in self.rows(AuditKind.INTENT) if r.session_id == session_id]
