"""SQLAlchemy 2 typed tables. Timestamps are aware UTC on SQLite and PostgreSQL alike.

The schema is owned by the Alembic migrations in ``migrations/``; these models must match
them (``tests/integration/test_migrations.py`` checks that autogenerate finds no difference).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: An auto-incrementing 64-bit key (SQLite only auto-increments INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC; SQLite drops offsets, so they are normalized first."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive values; store UTC (without tzinfo on SQLite)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention (required for SQLite batch migrations)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class PolicyRow(Base):
    """The current version of each policy."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    version: Mapped[int]
    enabled: Mapped[bool] = mapped_column(Boolean)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PolicyVersionRow(Base):
    """Every version a policy has had, never deleted."""

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    version: Mapped[int]
    enabled: Mapped[bool] = mapped_column(Boolean)
    spec: Mapped[dict[str, Any]]
    change: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class AuditRow(Base):
    """The append-only, hash-chained audit trail (DESIGN 2.5)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_target_session", "target", "session_id"),
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_kind", "kind"),
        Index("ix_audit_events_intent_id", "intent_id"),
        Index("ix_audit_events_policy", "policy"),
        Index("ix_audit_events_session_name", "session_name"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    sweep_id: Mapped[str | None] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(63))
    session_id: Mapped[str | None] = mapped_column(String(255))
    session_name: Mapped[str | None] = mapped_column(String(255))
    session_kind: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str | None] = mapped_column(String(63))
    policy_version: Mapped[int | None]
    action: Mapped[str | None] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    outcome: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    http_status: Mapped[int | None]
    provider_request_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    fencing_token: Mapped[int | None] = mapped_column(BigInteger)
    intent_id: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class SweepRow(Base):
    """One sweep (all targets), with its summary."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    actor: Mapped[str] = mapped_column(String(128))
    dry_run: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    summary: Mapped[dict[str, Any]]


class ObservationRow(Base):
    """janitor's memory of a session between daemon sweeps."""

    __tablename__ = "observations"

    target: Mapped[str] = mapped_column(String(63), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    session_name: Mapped[str] = mapped_column(String(255))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    state: Mapped[str] = mapped_column(String(16))
    state_since: Mapped[datetime]
    streak_policy: Mapped[str | None] = mapped_column(String(63))
    streak: Mapped[int] = mapped_column(Integer, default=0)
    mark_policy: Mapped[str | None] = mapped_column(String(63))
    mark_action: Mapped[str | None] = mapped_column(String(16))
    marked_at: Mapped[datetime | None]
    warned_at: Mapped[datetime | None]
    last_key: Mapped[str | None] = mapped_column(String(255))
    provider_state: Mapped[str | None] = mapped_column(String(64))
    original: Mapped[str | None] = mapped_column(Text)
    activity: Mapped[str | None] = mapped_column(String(255))
    activity_since: Mapped[datetime | None]
    observed: Mapped[str | None] = mapped_column(String(64))


class LeaseRow(Base):
    """Who sweeps a target now: holder, expiry and a fencing token that grows on takeover."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
    fencing_token: Mapped[int] = mapped_column(BigInteger)


class PauseRow(Base):
    """The kill switch: a single row."""

    __tablename__ = "pause_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime]


class KeepRow(Base):
    """A session an admin protected from every policy until ``until`` (``janitor keep``)."""

    __tablename__ = "keeps"

    target: Mapped[str] = mapped_column(String(63), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    session_name: Mapped[str] = mapped_column(String(255))
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class SessionHistoryRow(Base):
    """The session history log: a session's observed fields, written when they change.

    ``gone`` marks a session's end (``fields`` is None then): ``missing`` from the listing
    of the sweep at ``at``, or ``removed`` by that sweep's own action (listed at ``at``,
    gone after it).
    """

    __tablename__ = "session_history"
    __table_args__ = (
        Index("ix_session_history_target_at", "target", "at"),
        Index("ix_session_history_target_session", "target", "session_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(63))
    session_id: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime]
    fields: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    gone: Mapped[str | None] = mapped_column(String(16))
