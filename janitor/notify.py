"""Warnings to users and alerts to operators.

Warnings (grace policies and the ``notify`` action) go to the log, to the generic webhook when
one is configured, and through the provider's native channel where it has one (AIDP rename).
A warning counts as delivered only when every configured channel took it; until then the
grace period does not start and no action follows.

Alerts (a blocked policy, a failed target, a broken chain) go to every channel: an ERROR log
line, a metric, the webhook and Sentry. The same cause alerts once until it clears.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from janitor import metrics
from janitor.errors import ProviderError
from janitor.http import post_json
from janitor.model import Session
from janitor.settings import NotifyConfig

log = logging.getLogger(__name__)


class Webhook:
    """A JSON POST to the configured URL with the configured headers, retried."""

    def __init__(self, config: NotifyConfig, transport: Any = None) -> None:
        self.config = config
        self.transport = transport

    @property
    def enabled(self) -> bool:
        """True when a URL is configured."""
        return self.config.webhook_url is not None

    async def post(self, body: Mapping[str, Any]) -> None:
        """Deliver ``body``; raise ProviderError when it could not be delivered."""
        if self.config.webhook_url is None:
            return
        headers = {k: v.get_secret_value() for k, v in self.config.webhook_headers.items()}
        await post_json(
            self.config.webhook_url.get_secret_value(),
            body,
            headers=headers,
            timeout=self.config.webhook_timeout,
            attempts=self.config.webhook_attempts,
            transport=self.transport,
        )


class Warner:
    """Delivers warnings about sessions to the log and the generic webhook.

    The provider's own channel (AIDP's rename) is a provider write with intent and outcome
    rows, made by :mod:`janitor.warnings` before the webhook is tried.
    """

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook

    @staticmethod
    def message(session: Session, *, action: str, reason: str, act_after: datetime | None) -> str:
        """The warning's text: what janitor will do, when, and why."""
        when = f" after {act_after:%Y-%m-%d %H:%M} UTC" if act_after else ""
        return f"janitor will {action} {session.name!r}{when}: {reason}"

    async def warn(
        self,
        session: Session,
        *,
        policy: str,
        action: str,
        message: str,
        act_after: datetime | None,
    ) -> str | None:
        """Log and post the warning; return None when delivered, else why it was not."""
        log.warning(
            "warning %s %s (%s): %s",
            session.target,
            session.name,
            session.id,
            message,
            extra={"session_id": session.id, "session_name": session.name},
        )
        if not self.webhook.enabled:
            return None
        try:
            await self.webhook.post(
                {
                    "event": "warning",
                    "target": session.target,
                    "session_id": session.id,
                    "session_name": session.name,
                    "owner": session.owner,
                    "policy": policy,
                    "action": action,
                    "act_after": act_after.isoformat() if act_after else None,
                    "message": message,
                }
            )
        except ProviderError as exc:
            return f"webhook failed: {exc}"
        return None


class Alerter:
    """Raises de-duplicated alerts: once per cause until :meth:`clear`."""

    def __init__(
        self, webhook: Webhook, sentry: Callable[[str, str, Mapping[str, str]], None]
    ) -> None:
        self.webhook = webhook
        self.sentry = sentry
        self.active: set[str] = set()

    async def raise_(self, key: str, kind: str, message: str, **tags: str) -> bool:
        """Alert about ``key`` unless it is already active; True if it alerted now."""
        if key in self.active:
            return False
        self.active.add(key)
        log.error("ALERT %s: %s", kind, message, extra={"alert": kind})
        metrics.ALERTS.labels(kind).inc()
        self.sentry(kind, message, tags)
        if self.webhook.enabled:
            try:
                await self.webhook.post(
                    {"event": "alert", "kind": kind, "message": message, **tags}
                )
            except ProviderError as exc:
                log.error("alert webhook failed: %s", exc)
        return True

    def report(self, kind: str, message: str, **tags: str) -> None:
        """Send one event to Sentry only, not deduplicated (a failed action; logged by the caller)."""
        self.sentry(kind, message, tags)

    def clear(self, key: str) -> None:
        """The cause went away: the next occurrence alerts again."""
        if key in self.active:
            self.active.discard(key)
            log.info("alert cleared: %s", key)

    def clear_prefix(self, prefix: str, keep: set[str]) -> None:
        """Clear every active alert under ``prefix`` that is not in ``keep``."""
        for key in [k for k in self.active if k.startswith(prefix) and k not in keep]:
            self.clear(key)
