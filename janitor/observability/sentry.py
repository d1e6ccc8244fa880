"""Optional Sentry reporting: initialised only when a DSN is configured.

* no ``sentry-trace``/``baggage`` headers on provider requests (``trace_propagation_targets=[]``,
  and :class:`janitor.http.StripTraceHeaders` removes any that slip through);
* every configured secret (and the password of the database URL, and, read at start, the
  content of every target's secret files and of the secrets its OCI profile names; see
  :meth:`janitor.targets.TargetConfig.secret_values`) is scrubbed from events before they
  leave the process; frame locals are never sent;
* alerts (a blocked policy, a failed target, a sweep timeout) and failed actions become
  error events, grouped by kind and tags rather than by their changing text; each sweep of a
  lease holder sends a Crons check-in.

``SENTRY_DSN`` in the environment is ignored unless ``sentry.dsn`` is set: we never call
``sentry_sdk.init`` without our own DSN. ``SENTRY_ENVIRONMENT``/``SENTRY_RELEASE`` are
overridden by ``sentry.environment`` and janitor's version.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from janitor import __version__
from janitor.settings import Config, SentryConfig

log = logging.getLogger(__name__)
REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4
_state: dict[str, Any] = {"enabled": False, "slug": "janitor-sweep", "monitor": None}


def secrets_of(config: Config) -> list[str]:
    """Every secret value in the configuration (to scrub from events), longest first."""
    settings = config.settings
    candidates: list[Any] = [
        settings.database_url,
        settings.sentry.dsn,
        settings.notify.webhook_url,
        *settings.notify.webhook_headers.values(),
    ]
    values = [c.get_secret_value() for c in candidates if isinstance(c, SecretStr)]
    values += [p for v in values if (p := _url_password(v))]
    for target in config.targets:
        values += target.secret_values()
    unique = {v for v in values if len(v) >= MIN_SECRET_LENGTH}
    return sorted(unique, key=len, reverse=True)


def _url_password(value: str) -> str | None:
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def scrub(value: Any, secrets: Iterable[str]) -> Any:
    """Replace every occurrence of a secret in strings nested anywhere in ``value``."""
    secrets = list(secrets)
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {scrub(k, secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return value


def init_sentry(config: Config) -> bool:
    """Initialise the SDK when ``sentry.dsn`` is set; call inside the running event loop."""
    cfg: SentryConfig = config.settings.sentry
    if cfg.dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.asyncio import AsyncioIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    secrets = secrets_of(config)

    def before_send(event: Any, hint: Any) -> Any:
        return scrub(event, secrets)

    sentry_sdk.init(
        dsn=cfg.dsn.get_secret_value(),
        release=f"janitor@{__version__}",
        environment=cfg.environment,
        send_default_pii=False,
        include_local_variables=False,
        trace_propagation_targets=[],
        traces_sample_rate=None,
        before_send=before_send,
        before_send_transaction=before_send,
        integrations=[
            # log lines become breadcrumbs only; events come from explicit captures
            LoggingIntegration(level=logging.INFO, event_level=None),
            AsyncioIntegration(),
        ],
        shutdown_timeout=2,
    )
    settings = config.settings
    _state.update(
        enabled=True,
        slug=cfg.monitor_slug,
        monitor=monitor_config(
            settings.sweep_interval, settings.sweep_jitter, settings.effective_sweep_timeout
        ),
    )
    log.info("Sentry reporting enabled (environment %s)", cfg.environment)
    return True


def monitor_config(interval: timedelta, jitter: timedelta, timeout: timedelta) -> dict[str, Any]:
    """The Crons monitor upserted with each check-in (integer minutes, at least 1)."""
    minutes = max(1, math.ceil(interval.total_seconds() / 60))
    return {
        "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
        "checkin_margin": max(1, math.ceil(jitter.total_seconds() / 60) + 1),
        "max_runtime": max(1, math.ceil(timeout.total_seconds() / 60)),
        "failure_issue_threshold": 2,
        "recovery_threshold": 1,
        "timezone": "UTC",
    }


def capture_alert(kind: str, message: str, tags: Mapping[str, str]) -> None:
    """Send an alert or a failed action as an error event (no-op when Sentry is off).

    Events are grouped by ``kind`` and the tags (target, policy, action, ...), not by the
    message, which carries changing details (counts, durations, session ids).
    """
    if not _state["enabled"]:
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("alert", kind)
        for key, value in tags.items():
            scope.set_tag(key, value)
        scope.fingerprint = ["janitor", kind, *(f"{k}={v}" for k, v in sorted(tags.items()))]
        sentry_sdk.capture_message(message, level="error")


def checkin(ok: bool, duration: float) -> None:
    """A Crons check-in for one sweep of a lease holder (no-op when Sentry is off)."""
    if not _state["enabled"]:
        return
    from sentry_sdk.crons import capture_checkin

    capture_checkin(
        monitor_slug=_state["slug"],
        status="ok" if ok else "error",
        duration=duration,
        monitor_config=_state["monitor"],
    )


def flush() -> None:
    """Send what is queued before exit."""
    if _state["enabled"]:
        import sentry_sdk

        sentry_sdk.flush(timeout=2)
