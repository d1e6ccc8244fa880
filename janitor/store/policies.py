"""Policies in the database: versioned, audited, never deleted.

Every apply that changes a policy, every enable or disable and every rollback creates a new
version and a ``policy_change`` audit row in the same transaction; the row's ``details`` hold
the change, the version before and after, and a unified diff (the actor and time are columns
of the row). An apply identical to the current version is a no-op. ``--prune`` disables
policies missing from the file (their history stays).

Applying is two steps, so nothing read is lost: :meth:`PolicyStore.plan` reads the stored
versions and says what would change; :meth:`PolicyStore.commit` writes the plan in one
transaction, under a lock, only if every policy it names is still at the version the plan
read (else :class:`~janitor.errors.PolicyConflict`, and nothing is written). Two admins
applying at once therefore cannot lose each other's change: the second is told which policy
moved, from which version to which.
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

from janitor.errors import NotFound, PolicyConflict, PolicyError
from janitor.model import AuditEvent, AuditKind
from janitor.policy.spec import Policy, PolicySpec, compile_policy
from janitor.store.audit import AuditLog
from janitor.store.db import Database, advisory_xact_lock
from janitor.store.tables import PolicyRow, PolicyVersionRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What an apply does (or would do, with ``--plan``) to one policy.

    ``base`` is the version the change was planned against (None: the policy is new);
    ``spec`` the canonical spec it stores (None when nothing is stored).
    """

    name: str
    change: str  # created | updated | unchanged | disabled | enabled | rollback
    version: int
    diff: str = ""
    base: int | None = None
    spec: dict[str, Any] | None = None
    rolled_back_to: int | None = None

    @property
    def changes(self) -> bool:
        """True when this change writes a new version."""
        return self.change != "unchanged"


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


#: The policies' revision: the newest version's id (NULL before the first policy).
REVISION = select(func.max(PolicyVersionRow.id).label("revision"))


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
        changes = self.plan(specs, prune=prune)
        if plan:
            return changes
        return self.commit(changes, actor=actor, now=now, source=source)

    def plan(self, specs: Sequence[PolicySpec], *, prune: bool = False) -> list[Change]:
        """What applying ``specs`` would change, against the versions stored now."""
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
            tx.rollback()
        return changes

    def commit(
        self, changes: Sequence[Change], *, actor: str, now: datetime, source: str = ""
    ) -> list[Change]:
        """Write a plan atomically, if no policy in it moved since it was read.

        Raises:
            PolicyConflict: a policy of the plan is not at the version the plan read (another
                apply, enable, disable or rollback came first); nothing was written.
        """
        with self.db.transaction() as tx:
            rows = self._locked(tx, [c.name for c in changes])
            for change in changes:
                self._check_base(tx, rows.get(change.name), change)
            for change in changes:
                if change.changes and change.spec is not None:
                    self._write(
                        tx,
                        rows.get(change.name),
                        change,
                        actor=actor,
                        now=now,
                        source=source,
                    )
            return list(changes)

    def _locked(self, tx: Session, names: Sequence[str]) -> dict[str, PolicyRow]:
        """The stored rows of ``names``, read after taking the policies' write lock.

        PostgreSQL: a transaction-level advisory lock, so concurrent writers queue and each
        reads what the one before it committed. SQLite: ``BEGIN IMMEDIATE`` already has.
        """
        if self.db.dialect == "postgresql":
            advisory_xact_lock(tx, "policies")
        query = select(PolicyRow).where(PolicyRow.name.in_(list(names)))
        return {row.name: row for row in tx.scalars(query)}

    def _check_base(self, tx: Session, row: PolicyRow | None, change: Change) -> None:
        found = row.version if row is not None else None
        if found == change.base:
            return
        by = ""
        if row is not None:
            by = (
                tx.scalar(
                    select(PolicyVersionRow.actor)
                    .where(PolicyVersionRow.policy_id == row.id)
                    .order_by(PolicyVersionRow.version.desc())
                    .limit(1)
                )
                or ""
            )
        raise PolicyConflict(change.name, change.base, found, by=by)

    def _plan_one(self, row: PolicyRow | None, spec: PolicySpec) -> Change:
        wanted = spec.canonical()
        if row is None:
            return Change(
                name=spec.name,
                change="created",
                version=1,
                diff=_diff({}, wanted, spec.name),
                spec=wanted,
            )
        if row.spec == wanted:
            return Change(name=spec.name, change="unchanged", version=row.version, base=row.version)
        return Change(
            name=spec.name,
            change="updated",
            version=row.version + 1,
            diff=_diff(row.spec, wanted, spec.name),
            base=row.version,
            spec=wanted,
        )

    def _plan_prune(self, row: PolicyRow) -> Change:
        spec = {**row.spec, "enabled": False}
        return Change(
            name=row.name,
            change="disabled",
            version=row.version + 1,
            diff=_diff(row.spec, spec, row.name, after="not in the file: disabled"),
            base=row.version,
            spec=spec,
        )

    def _write(
        self,
        tx: Session,
        row: PolicyRow | None,
        change: Change,
        *,
        actor: str,
        now: datetime,
        source: str,
    ) -> None:
        name, spec = change.name, change.spec
        assert spec is not None
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
        back = f" to v{change.rolled_back_to}" if change.rolled_back_to is not None else ""
        details: dict[str, Any] = {
            "change": change.change,
            "version": change.version,
            "previous_version": change.base,
            "enabled": enabled,
            "diff": change.diff,
        }
        if source:
            details["source"] = source
        if change.rolled_back_to is not None:
            details["rolled_back_to"] = change.rolled_back_to
        self.audit.append_in(
            tx,
            [
                AuditEvent(
                    at=now,
                    kind=AuditKind.POLICY_CHANGE,
                    actor=actor,
                    policy=name,
                    policy_version=change.version,
                    reason=f"policy {name} {change.change}{back}{origin} by {actor} "
                    f"(now v{change.version}, {'enabled' if enabled else 'disabled'})",
                    details=details,
                )
            ],
        )

    def set_enabled(self, name: str, enabled: bool, *, actor: str, now: datetime) -> Change:
        """Enable or disable a policy (a new version); a no-op if it already is."""
        with self.db.transaction() as tx:
            row = self._locked(tx, [name]).get(name)
            if row is None:
                raise PolicyError(f"no policy named {name!r}")
            if row.enabled == enabled:
                return Change(name=name, change="unchanged", version=row.version, base=row.version)
            spec = dict(row.spec)
            if enabled:
                spec.pop("enabled", None)
            else:
                spec["enabled"] = False
            change = Change(
                name=name,
                change="enabled" if enabled else "disabled",
                version=row.version + 1,
                diff=_diff(row.spec, spec, name, after="enabled" if enabled else "disabled"),
                base=row.version,
                spec=spec,
            )
            self._write(tx, row, change, actor=actor, now=now, source="")
            return change

    def rollback(
        self, name: str, to: int, *, actor: str, now: datetime, plan: bool = False
    ) -> Change:
        """Store version ``to``'s spec again, as a new version (audited like any change).

        Rolling back to a version identical to the current one is a no-op (``unchanged``).

        Raises:
            PolicyError: no such policy. NotFound: it has no version ``to``.
        """
        with self.db.transaction() as tx:
            row = self._locked(tx, [name]).get(name)
            if row is None:
                raise PolicyError(f"no policy named {name!r}")
            target = self._version_row(tx, row, to)
            if row.spec == target.spec:
                return Change(name=name, change="unchanged", version=row.version, base=row.version)
            change = Change(
                name=name,
                change="rollback",
                version=row.version + 1,
                diff=_diff(row.spec, target.spec, name, before=f"v{row.version}", after=f"v{to}"),
                base=row.version,
                spec=dict(target.spec),
                rolled_back_to=to,
            )
            if plan:
                tx.rollback()
                return change
            self._write(tx, row, change, actor=actor, now=now, source="")
            return change

    def _version_row(self, tx: Session, row: PolicyRow, version: int) -> PolicyVersionRow:
        found = tx.scalar(
            select(PolicyVersionRow).where(
                PolicyVersionRow.policy_id == row.id, PolicyVersionRow.version == version
            )
        )
        if found is None:
            raise NotFound(
                f"policy {row.name} has no version {version} (its versions are 1 to "
                f"v{row.version}; see `janitor policy history {row.name}`)"
            )
        return found

    def version(self, name: str, version: int) -> StoredVersion:
        """One stored version of a policy."""
        with self.db.transaction() as tx:
            row = tx.scalar(select(PolicyRow).where(PolicyRow.name == name))
            if row is None:
                raise PolicyError(f"no policy named {name!r}")
            v = self._version_row(tx, row, version)
            return _stored(name, v.version, v.enabled, v.change, v.actor, v.created_at, v.spec)

    def diff(self, name: str, first: int, second: int) -> str:
        """A unified diff (YAML, keys sorted) from version ``first`` to version ``second``."""
        old, new = self.version(name, first), self.version(name, second)
        return _diff(old.spec, new.spec, name, before=f"v{first}", after=f"v{second}")

    def current(self) -> list[StoredVersion]:
        """The current version of every policy, by name."""
        with self.db.reading() as tx:
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
        """A number that grows with every policy change (cheap to poll: one statement)."""
        row = self.db.read_row(REVISION)
        return int(row.revision or 0) if row is not None else 0

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


def _diff(
    old: dict[str, Any],
    new: dict[str, Any],
    name: str,
    *,
    before: str = "stored",
    after: str = "file",
) -> str:
    """A unified diff of two specs as sorted YAML, labelled ``NAME (before)``/``NAME (after)``."""
    old_lines = yaml.safe_dump(old, sort_keys=True, allow_unicode=True).splitlines() if old else []
    new_lines = yaml.safe_dump(new, sort_keys=True, allow_unicode=True).splitlines()
    return "\n".join(
        difflib.unified_diff(
            old_lines, new_lines, f"{name} ({before})", f"{name} ({after})", lineterm=""
        )
    )
