"""Policies in the database: versioned, audited, never deleted.

Every apply that changes a policy, and every enable or disable, creates a new version and a
``policy_change`` audit row in the same transaction. An apply identical to the current
version is a no-op. ``--prune`` disables policies missing from the file (their history stays).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from janitor.errors import PolicyError
from janitor.model import AuditEvent, AuditKind
from janitor.policy.spec import Policy, PolicySpec, compile_policy
from janitor.store.audit import AuditLog
from janitor.store.db import Database
from janitor.store.tables import PolicyRow, PolicyVersionRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What an apply does (or would do, with ``--plan``) to one policy."""

    name: str
    change: str  # created | updated | unchanged | disabled
    version: int
    diff: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredVersion:
    """One row of ``policy history``."""

    name: str
    version: int
    enabled: bool
    change: str
    actor: str
    at: datetime
    spec: dict[str, Any]


class PolicyStore:
    """Reads and writes policies and their versions."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self.db = db
        self.audit = audit

    def apply(
        self,
        specs: Sequence[PolicySpec],
        *,
        actor: str,
        now: datetime,
        prune: bool = False,
        plan: bool = False,
        source: str = "",
    ) -> list[Change]:
        """Store the specs as new versions where they differ; optionally disable the rest."""
        with self.db.transaction() as tx:
            current = {row.name: row for row in tx.scalars(select(PolicyRow))}
            changes = [self._plan_one(current.get(spec.name), spec) for spec in specs]
            if prune:
                wanted = {spec.name for spec in specs}
                changes += [
                    self._plan_prune(row)
                    for name, row in sorted(current.items())
                    if name not in wanted and row.enabled
                ]
            if plan:
                tx.rollback()
                return changes
            by_name = {spec.name: spec for spec in specs}
            for change in changes:
                if change.change == "unchanged":
                    continue
                row = current.get(change.name)
                spec = (
                    by_name[change.name].canonical()
                    if change.name in by_name
                    else {**(row.spec if row else {}), "enabled": False}
                )
                self._write(tx, row, change.name, spec, change, actor=actor, now=now, source=source)
            return changes

    def _plan_one(self, row: PolicyRow | None, spec: PolicySpec) -> Change:
        wanted = spec.canonical()
        if row is None:
            return Change(
                name=spec.name, change="created", version=1, diff=_diff({}, wanted, spec.name)
            )
        if row.spec == wanted:
            return Change(name=spec.name, change="unchanged", version=row.version)
        return Change(
            name=spec.name,
            change="updated",
            version=row.version + 1,
            diff=_diff(row.spec, wanted, spec.name),
        )

    def _plan_prune(self, row: PolicyRow) -> Change:
        return Change(
            name=row.name,
            change="disabled",
            version=row.version + 1,
            diff=f"policy {row.name}: enabled: true -> false (not in the file)",
        )

    def _write(
        self,
        tx: Session,
        row: PolicyRow | None,
        name: str,
        spec: dict[str, Any],
        change: Change,
        *,
        actor: str,
        now: datetime,
        source: str,
    ) -> None:
        enabled = bool(spec.get("enabled", True))
        if row is None:
            row = PolicyRow(
                name=name,
                version=change.version,
                enabled=enabled,
                spec=spec,
                created_at=now,
                updated_at=now,
            )
            tx.add(row)
            tx.flush()
        else:
            row.version, row.enabled, row.spec, row.updated_at = (
                change.version,
                enabled,
                spec,
                now,
            )
        tx.add(
            PolicyVersionRow(
                policy_id=row.id,
                version=change.version,
                enabled=enabled,
                spec=spec,
                change=change.change,
                actor=actor,
                created_at=now,
            )
        )
        origin = f" from {source}" if source else ""
        self.audit.append_in(
            tx,
            [
                AuditEvent(
                    at=now,
                    kind=AuditKind.POLICY_CHANGE,
                    actor=actor,
                    policy=name,
                    policy_version=change.version,
                    reason=f"policy {name} {change.change}{origin} (now v{change.version}, "
                    f"{'enabled' if enabled else 'disabled'})",
                )
            ],
        )

    def set_enabled(self, name: str, enabled: bool, *, actor: str, now: datetime) -> Change:
        """Enable or disable a policy (a new version); a no-op if it already is."""
        with self.db.transaction() as tx:
            row = tx.scalar(select(PolicyRow).where(PolicyRow.name == name))
            if row is None:
                raise PolicyError(f"no policy named {name!r}")
            if row.enabled == enabled:
                return Change(name=name, change="unchanged", version=row.version)
            spec = dict(row.spec)
            if enabled:
                spec.pop("enabled", None)
            else:
                spec["enabled"] = False
            change = Change(
                name=name, change="enabled" if enabled else "disabled", version=row.version + 1
            )
            self._write(tx, row, name, spec, change, actor=actor, now=now, source="")
            return change

    def current(self) -> list[StoredVersion]:
        """The current version of every policy, by name."""
        with self.db.transaction() as tx:
            rows = tx.scalars(select(PolicyRow).order_by(PolicyRow.name)).all()
            return [
                _stored(row.name, row.version, row.enabled, "current", "", row.updated_at, row.spec)
                for row in rows
            ]

    def get(self, name: str) -> StoredVersion:
        """The current version of one policy; PolicyError if there is none."""
        for stored in self.current():
            if stored.name == name:
                return stored
        raise PolicyError(f"no policy named {name!r}")

    def history(self, name: str) -> list[StoredVersion]:
        """Every version of one policy, oldest first."""
        with self.db.transaction() as tx:
            row = tx.scalar(select(PolicyRow).where(PolicyRow.name == name))
            if row is None:
                raise PolicyError(f"no policy named {name!r}")
            versions = tx.scalars(
                select(PolicyVersionRow)
                .where(PolicyVersionRow.policy_id == row.id)
                .order_by(PolicyVersionRow.version)
            ).all()
            return [
                _stored(name, v.version, v.enabled, v.change, v.actor, v.created_at, v.spec)
                for v in versions
            ]

    def revision(self) -> int:
        """A number that grows with every policy change (cheap to poll)."""
        with self.db.transaction() as tx:
            return int(tx.scalar(select(func.max(PolicyVersionRow.id))) or 0)

    def load(self) -> list[Policy]:
        """Compile every stored policy; a stored spec this version cannot read is skipped."""
        compiled = []
        for stored in self.current():
            try:
                spec = PolicySpec.model_validate(stored.spec)
                compiled.append(compile_policy(spec, stored.version, where="database"))
            except (PolicyError, ValueError) as exc:
                log.error(
                    "stored policy %s v%d is invalid and is not applied: %s",
                    stored.name,
                    stored.version,
                    exc,
                )
        return compiled


def _stored(
    name: str,
    version: int,
    enabled: bool,
    change: str,
    actor: str,
    at: datetime,
    spec: dict[str, Any],
) -> StoredVersion:
    return StoredVersion(
        name=name, version=version, enabled=enabled, change=change, actor=actor, at=at, spec=spec
    )


def _diff(old: dict[str, Any], new: dict[str, Any], name: str) -> str:
    before = yaml.safe_dump(old, sort_keys=True).splitlines() if old else []
    after = yaml.safe_dump(new, sort_keys=True).splitlines()
    return "\n".join(
        difflib.unified_diff(before, after, f"{name} (stored)", f"{name} (file)", lineterm="")
    )
