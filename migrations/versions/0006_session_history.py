"""The session history log (``janitor backtest``'s input), and janitor's note of what it logged.

* ``session_history``: a session's observed fields when they change (``gone``: its end), so
  the log grows with changes, not with sweeps; superseded rows older than
  ``history_retention`` (default 30d) are removed, each session's latest row is kept.
* ``observations.observed``: the digest of the fields last logged for the session. Existing
  rows get NULL, so the first sweep after the upgrade logs every session once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("target", sa.String(length=63), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fields", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("gone", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_history")),
    )
    with op.batch_alter_table("session_history", schema=None) as batch_op:
        batch_op.create_index("ix_session_history_target_at", ["target", "at"], unique=False)
        batch_op.create_index(
            "ix_session_history_target_session", ["target", "session_id", "id"], unique=False
        )
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("observed", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("observations", schema=None) as batch_op:
        batch_op.drop_column("observed")
    op.drop_table("session_history")
