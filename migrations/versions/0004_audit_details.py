"""Structured details on audit rows, and indexes for the admin's filters.

* ``audit_events.details`` (JSON): a policy change's diff and versions, a keep's expiry, a
  prune's checkpoint. Covered by the row hash; NULL in existing rows, whose canonical form
  leaves it out, so they verify as before.
* indexes on ``policy`` and ``session_name`` for ``audit list --policy`` and
  ``--session NAME``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("details", sa.JSON(none_as_null=True), nullable=True))
        batch_op.create_index("ix_audit_events_policy", ["policy"], unique=False)
        batch_op.create_index("ix_audit_events_session_name", ["session_name"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_session_name")
        batch_op.drop_index("ix_audit_events_policy")
        batch_op.drop_column("details")
