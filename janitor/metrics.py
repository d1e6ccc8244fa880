"""Prometheus metrics. One registry for the process; label values never contain session ids.

Labels are bounded: ``target`` (configured names), ``state`` (the seven normalized states),
``action``, ``outcome``, ``method``, ``status`` (an HTTP status or an error class name),
``scope`` and ``kind`` (small fixed sets: an alert's cause kind, an error response's
:class:`~janitor.http_errors.ErrorKind`). The audit chain head is exported as an info metric
whose one sample is replaced after every sweep, beside the chain's length (its highest row
id), so the length stays one time series (a shrinking length means rows were deleted from the
tail; ``audit prune`` removes the oldest rows and never lowers it).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from janitor import __version__

REGISTRY = CollectorRegistry(auto_describe=True)

BUILD = Info("janitor_build", "janitor's version", registry=REGISTRY)
BUILD.info({"version": __version__})

SWEEPS = Counter(
    "janitor_sweeps",
    "Target sweeps by result: ok, failed (listing or an action failed), skipped (another "
    "replica holds the target's lease)",
    ["target", "result"],
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "janitor_sweep_duration_seconds",
    "Duration of one target sweep",
    ["target"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
SESSIONS_SEEN = Gauge(
    "janitor_sessions_seen",
    "Sessions listed in the last sweep, by target and normalized state",
    ["target", "state"],
    registry=REGISTRY,
)
ACTIONS = Counter(
    "janitor_actions",
    "Action outcomes by target, action and outcome (one per outcome row of the audit trail)",
    ["target", "action", "outcome"],
    registry=REGISTRY,
)
PROVIDER_REQUESTS = Counter(
    "janitor_provider_requests",
    "Provider HTTP requests by target, method and status (or error class)",
    ["target", "method", "status"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "janitor_provider_errors",
    "Provider error responses by target and kind (throttled, auth, not_now, not_found, "
    "invalid_state, server, other), as the target's error model classified them",
    ["target", "kind"],
    registry=REGISTRY,
)
RATE_LIMIT_WAITS = Counter(
    "janitor_rate_limit_waits",
    "Times a request waited for the target's request budget or a Retry-After",
    ["target"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "janitor_rate_limit_wait_seconds",
    "Seconds spent waiting for the target's request budget or a Retry-After",
    ["target"],
    registry=REGISTRY,
)
REQUEST_BUDGET = Gauge(
    "janitor_request_budget_per_second",
    "Requests per second the target's request budget allows now: its fixed "
    'requests_per_second, or the adaptive rate of requests_per_second = "auto"',
    ["target"],
    registry=REGISTRY,
)
BLAST_RADIUS_BLOCKS = Counter(
    "janitor_blast_radius_blocks",
    "Policies or targets blocked by a blast-radius limit (scope: policy or target)",
    ["target", "scope"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "janitor_last_successful_sweep_timestamp_seconds",
    "Unix time of the last successful sweep of a target",
    ["target"],
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "janitor_circuit_open",
    "1 while the target's circuit breaker is open",
    ["target"],
    registry=REGISTRY,
)
LEASE_HELD = Gauge(
    "janitor_lease_held",
    "1 when this process took the target's lease in its last sweep, 0 when another replica held it",
    ["target"],
    registry=REGISTRY,
)
AUDIT_ROWS = Gauge(
    "janitor_audit_chain_rows",
    "Length of the audit chain after the last sweep: its highest row id (never lowered by "
    "`audit prune`, so a decrease means rows were deleted from the tail)",
    registry=REGISTRY,
)
AUDIT_HEAD = Info(
    "janitor_audit_chain_head",
    "Hash of the last audit row after the last sweep (compare with `janitor audit verify`)",
    registry=REGISTRY,
)
ALERTS = Counter("janitor_alerts", "Alerts raised, by cause kind", ["kind"], registry=REGISTRY)
PAUSED = Gauge("janitor_paused", "1 while the kill switch is on", registry=REGISTRY)


def record_audit_head(length: int, head: str) -> None:
    """Export the chain's length (highest row id) and head hash (called after every sweep)."""
    AUDIT_ROWS.set(length)
    AUDIT_HEAD.info({"hash": head})


#: Every kind of alert janitor raises (docs/operations.md builds alert rules on them).
ALERT_KINDS = (
    "blocked",
    "target_failed",
    "circuit_open",
    "chain_broken",
    "sweep_timeout",
    "settle_timeout",
)


def start_series(targets: Iterable[str]) -> None:
    """Create, at zero, the series alert rules are built on, so they exist from the start.

    A counter child that was never incremented does not exist: a rule on
    ``janitor_alerts_total`` or ``janitor_circuit_open`` would have no series to watch until
    the first incident.
    """
    for kind in ALERT_KINDS:
        ALERTS.labels(kind)
    for target in targets:
        CIRCUIT_OPEN.labels(target).set(0)
        for scope in ("policy", "target"):
            BLAST_RADIUS_BLOCKS.labels(target, scope)
