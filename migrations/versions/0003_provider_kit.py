"""The provider kit's memory: provider state, a native warning's original value, activity.

* ``provider_state``: ``in_state_for`` restarts when the provider state changes within one
  normalized state (ESS WAIT → BLOCKED). Existing rows get NULL: their count goes on.
* ``original``: the value a native warning replaced (AIDP: the session's name before
  janitor's prefix), so ``withdraw`` restores it exactly.
* ``activity`` and ``activity_since``: a fingerprint of undated activity (Fabric's statement
  records) and the first sweep that saw it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_state", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("original", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("activity", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("activity_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("activity_since")
        batch_op.drop_column("activity")
        batch_op.drop_column("original")
        batch_op.drop_column("provider_state")
