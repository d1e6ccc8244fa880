"""Record which action a grace warning announced (observations.mark_action).

A mark counts as the warning only for a policy with the same action: a notification is no
warning of a deletion. Existing marks get NULL, which still counts (as before).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 05:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mark_action", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("mark_action")
