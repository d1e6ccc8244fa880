"""Keeps: sessions an admin protected from every policy for a while (``janitor keep``).

One row per kept session (target, session id), with its expiry, reason and actor; a new keep
of the same session replaces the old one. Keeps and their removal are audited.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keeps",
        sa.Column("target", sa.String(length=63), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("session_name", sa.String(length=255), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", "session_id", name=op.f("pk_keeps")),
    )


def downgrade() -> None:
    op.drop_table("keeps")
