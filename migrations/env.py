"""Alembic environment. janitor runs it in code (``janitor db upgrade``) with a connection.

For development, ``JANITOR_DATABASE_URL=... alembic -c migrations/alembic.ini revision
--autogenerate -m "..."`` works too: without a passed connection the URL comes from the
environment. ``render_as_batch`` is always on so one script runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from janitor.store.db import normalize_url
from janitor.store.tables import Base

target_metadata = Base.metadata


def _configure_and_run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    url = os.environ.get("JANITOR_DATABASE_URL", "sqlite:///janitor-dev.db")
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure_and_run(conn)
        conn.commit()


def run_migrations_offline() -> None:
    url = os.environ.get("JANITOR_DATABASE_URL", "sqlite:///janitor-dev.db")
    context.configure(
        url=str(normalize_url(url)),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
